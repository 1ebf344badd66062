"""Joint and sequential judges: verdicts per spec, retries on unreadable answers, never a crash."""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from ..benchmark import Prompt, Scenario, SpecKind
from ..errors import JudgeParseError, ModelAccessError, ModelError
from ..models import LOCAL, Completion, Message, Model
from ..scoring import DEFAULT_ALPHA, NAPolicy, SampleScore, score_sample
from ._parser import AnswerFormat, final_answer, parse_joint, parse_single
from ._prompts import ALL_KINDS, JUDGE_SYSTEM, correction_message, joint_prompt, single_prompt
from ._schema import (
    EMBEDDED_REASON_MAX_CHARS,
    REASON_MAX_CHARS,
    JudgeOutcome,
    SpecVerdict,
    joint_schema,
    single_schema,
    spec_ids,
)
from ._template import JudgeTemplate

JudgeMode = Literal["joint", "sequential"]
#: bump when the judge prompts or the rules that read their answers change, so verdicts recorded
#: under old ones are not reused (3: only the final answer, one reading, exact ids and values)
JUDGE_PROMPT_VERSION = "3"
DEFAULT_JUDGE_PARAMS: dict[str, Any] = {"temperature": 0.0, "max_tokens": 4200}


class Judge:
    """Judges responses against a scenario's specs with one model.

    ``joint`` makes one call per sample; ``sequential`` one call per spec. An answer that
    cannot be read is retried with a correction up to ``max_attempts`` times; after that
    the sample is unscored with the raw outputs and the reason. Access errors propagate.
    ``template``: the user's own joint prompt (docs/judge.md), read in the format it declares; its
    content hash joins the key. Sequential mode with a template is a ConfigError.
    """

    def __init__(
        self,
        model: Model,
        mode: JudgeMode = "joint",
        max_attempts: int = 3,
        reason_chars: int | None = None,
        template: JudgeTemplate | None = None,
    ):
        if template is not None:
            template.check_mode(mode)
        self.model = model
        self.mode = mode
        self.max_attempts = max_attempts
        self.template = template
        if reason_chars is None:
            embedded = model.settings.key == LOCAL
            reason_chars = EMBEDDED_REASON_MAX_CHARS if embedded else REASON_MAX_CHARS
        self.reason_chars = reason_chars

    def key(self) -> str:
        """Identifies this judge in records: model identity, its settings, mode, prompt version, and the
        content hash of a user's template (specalign's own prompts add nothing: their keys stay as they were)."""
        parts: tuple[Any, ...] = (
            self.model.backend.identity(),
            sorted(self.model.settings.params.items()),
            sorted(self._params().items()),
            self.mode,
            JUDGE_PROMPT_VERSION,
            self.model.supports_json_schema,
            self.reason_chars,
        )
        if self.template is not None:
            parts = (*parts, ("template", self.template.sha256))
        return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        out = {
            "model": self.model.settings.public_dict(),
            "mode": self.mode,
            "key": self.key(),
            "prompt_version": JUDGE_PROMPT_VERSION,
            "max_attempts": self.max_attempts,
            "structured_output": self.model.supports_json_schema,
            "reason_chars": self.reason_chars,
        }
        if self.template is not None:  # its name, format and hash; never its text
            out["template"] = self.template.describe()
        return out

    def _params(self) -> dict[str, Any]:
        return {k: v for k, v in DEFAULT_JUDGE_PARAMS.items() if not self.model.settings.sets_param(k)}

    async def judge(
        self, scenario: Scenario, prompt: Prompt, response: str, kinds: tuple[SpecKind, ...] = ALL_KINDS
    ) -> JudgeOutcome:
        """Verdicts on ``response``; ``kinds=("safety",)`` judges (and asks about) the safety specs only,
        and the outcome then holds S1.. alone. A user's template always shows every spec: its verdicts
        are read in full, then cut to ``kinds``."""
        kinds = tuple(k for k in ALL_KINDS if k in kinds)
        if not kinds:
            raise ValueError("judge at least one kind of spec")
        if self.mode == "joint":
            outcome = await self._joint(scenario, prompt, response, kinds)
        else:
            outcome = await self._sequential(scenario, prompt, response, kinds)
        if kinds != ALL_KINDS:
            wanted = set(scenario.spec_ids(kinds[0]))
            outcome.verdicts = {k: v for k, v in outcome.verdicts.items() if k in wanted}
        return outcome

    async def _joint(
        self, scenario: Scenario, prompt: Prompt, response: str, kinds: tuple[SpecKind, ...] = ALL_KINDS
    ) -> JudgeOutcome:
        system: str | None
        if self.template is None:
            json_mode = self.model.supports_json_schema
            system, user = JUDGE_SYSTEM, joint_prompt(scenario, prompt, response, json_mode, kinds)
        else:  # the user's prompt, which shows every spec; its answer read in the format it declares
            json_mode = self.template.format == "json"
            system, user = self.template.render(scenario, prompt, response)
            kinds = ALL_KINDS
        safety, behavioral = spec_ids(scenario)
        safety, behavioral = (safety if "safety" in kinds else []), (behavioral if "behavioral" in kinds else [])
        schema = (
            joint_schema(scenario, self.reason_chars, kinds) if json_mode and self.model.supports_json_schema else None
        )
        outcome = JudgeOutcome(status="unscored")
        fmt: AnswerFormat = "json" if json_mode else "tags"
        verdicts = await self._ask(
            system, user, schema, json_mode, outcome, lambda text: parse_joint(text, safety, behavioral, fmt)
        )
        if verdicts is not None:
            outcome.status, outcome.verdicts = "scored", verdicts
        return outcome

    async def _sequential(
        self, scenario: Scenario, prompt: Prompt, response: str, kinds: tuple[SpecKind, ...] = ALL_KINDS
    ) -> JudgeOutcome:
        json_mode = self.model.supports_json_schema
        outcome = JudgeOutcome(status="unscored")
        verdicts: dict[str, SpecVerdict] = {}
        for kind, ids in zip(("safety", "behavioral"), spec_ids(scenario), strict=False):
            if kind not in kinds:
                continue
            for index, spec_id in enumerate(ids):
                user = single_prompt(scenario, prompt, response, kind, index, json_mode)
                schema = single_schema(self.reason_chars) if json_mode else None
                v = await self._ask(
                    JUDGE_SYSTEM,
                    user,
                    schema,
                    json_mode,
                    outcome,
                    lambda text: parse_single(text, "json" if json_mode else "tags"),
                )
                if v is None:
                    outcome.unscored_reason = f"{spec_id}: {outcome.unscored_reason}"
                    return outcome
                verdicts[spec_id] = v
        outcome.status, outcome.verdicts = "scored", verdicts
        return outcome

    async def _ask(
        self, system: str | None, user: str, schema: dict | None, json_mode: bool, outcome: JudgeOutcome, parse
    ):
        """Call and parse with bounded corrective retries; on failure set the reason and return None."""
        asked = [Message(role="system", content=system)] if system else []
        asked.append(Message(role="user", content=user))
        messages = list(asked)
        error = "no attempt made"
        for _attempt in range(self.max_attempts):
            try:
                out = await self.model.generate(messages, params=self._params(), json_schema=schema)
            except ModelAccessError:
                raise
            except ModelError as e:
                outcome.unscored_reason, outcome.call_failed = f"judge call failed: {e}", True
                return None
            self._count(outcome, out)
            try:
                return parse(self._answer(out))
            except JudgeParseError as e:
                error = str(e)
                if out.finish_reason == "length":
                    error += " (the judge hit max_tokens)"
                said = self._answer(out) or out.text  # its answer, not its reasoning (unless that is all it gave)
                messages = asked + [
                    Message(role="assistant", content=said),
                    Message(role="user", content=correction_message(error, json_mode)),
                ]
        outcome.unscored_reason = f"judge output unreadable after {self.max_attempts} attempts: {error}"
        return None

    def _answer(self, out: Completion) -> str:
        """The judge's final answer alone, never its reasoning: from where the server said the answer
        begins (it returned ``reasoning_content`` apart), else after a leading ``<think>…</think>``."""
        start = getattr(out, "answer_start", None)
        if isinstance(start, int) and 0 <= start <= len(out.text):
            return out.text[start:]
        return final_answer(out.text, self.model.settings.thought_start, self.model.settings.thought_end)

    @staticmethod
    def _count(outcome: JudgeOutcome, out: Completion) -> None:
        outcome.attempts += 1
        outcome.raw_outputs.append(out.text)
        outcome.calls += 0 if out.cached else 1
        outcome.cached_calls += 1 if out.cached else 0
        outcome.prompt_tokens += out.usage.prompt_tokens
        outcome.completion_tokens += out.usage.completion_tokens


def score_verdicts(
    scenario: Scenario,
    verdicts: dict[str, SpecVerdict],
    *,
    alpha: float = DEFAULT_ALPHA,
    na_policy: NAPolicy = "official",
) -> SampleScore:
    """The safety, behavioral and SAR score of one judged sample under ``scenario``'s specs."""
    safety, behavioral = spec_ids(scenario)
    return score_sample(
        [verdicts[k].verdict for k in safety],
        [verdicts[k].verdict for k in behavioral],
        weights=[b.weight for b in scenario.behavioral_specs],
        alpha=alpha,
        na_policy=na_policy,
    )
