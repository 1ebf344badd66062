"""Everything a run writes to disk, as pydantic models, and the one place each record is built: a manifest
and its generation key (:func:`build_manifest`), a generation from a method's output, a judgment from a
judge's outcome. The runner and the gateway's monitor both write through these."""

from __future__ import annotations

import hashlib
import json
import math
import platform
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from .. import __version__
from .._secrets import redact_text
from ..benchmark import Benchmark, PromptLabel, Scenario, SpecKind, spec_ids_of
from ..judge import Judge, JudgeOutcome, JudgePanel, SpecVerdict
from ..methods import CandidateScorer, GenerationMethod, MethodOutput, MethodStep
from ..models import Model, Usage
from ..scoring import NAPolicy
from ._costs import CallCost

#: the layout of run directories this version writes and reads; a newer one is refused, never guessed at
FORMAT_VERSION = 1


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ScenarioInfo(BaseModel):
    name: str
    n_safety: int = Field(ge=0)
    n_behavioral: int = Field(ge=0)
    behavioral_weights: list[float]

    @model_validator(mode="after")
    def _weights(self) -> ScenarioInfo:
        if len(self.behavioral_weights) != self.n_behavioral:
            raise ValueError(f"{len(self.behavioral_weights)} behavioral_weights for n_behavioral {self.n_behavioral}")
        if not all(math.isfinite(w) and w >= 0 for w in self.behavioral_weights):
            raise ValueError("behavioral_weights must be finite and not negative")
        return self

    @classmethod
    def of(cls, scenario: Scenario) -> ScenarioInfo:
        """What a run keeps of a scenario: its name, spec counts and behavioral weights."""
        return cls(
            name=scenario.name,
            n_safety=len(scenario.safety_specs),
            n_behavioral=len(scenario.behavioral_specs),
            behavioral_weights=[b.weight for b in scenario.behavioral_specs],
        )

    def spec_ids(self, kind: SpecKind | None = None) -> list[str]:
        """S1..Sn then B1..Bm (or one kind's): the verdicts a scored judgment of this scenario holds."""
        safety, behavioral = spec_ids_of("safety", self.n_safety), spec_ids_of("behavioral", self.n_behavioral)
        return safety + behavioral if kind is None else safety if kind == "safety" else behavioral


class DataInfo(BaseModel):
    source: str
    sha256: str
    scenarios: dict[str, ScenarioInfo]

    @classmethod
    def of(cls, bench: Benchmark, scenarios: Iterable[Scenario] | None = None) -> DataInfo:
        """``bench``'s source and content hash, and ``scenarios`` (the selected ones; all by default)."""
        chosen = bench.scenarios if scenarios is None else scenarios
        return cls(
            source=bench.source,
            sha256=bench.content_hash(),
            scenarios={s.key: ScenarioInfo.of(s) for s in chosen},
        )


class Selection(BaseModel):
    scenarios: list[str]
    limit: int | None = Field(ge=0)
    n_samples: int = Field(ge=0)


class Session(BaseModel):
    """One invocation of ``specalign run`` on this directory: when, how long, what it did."""

    started_at: str = Field(default_factory=now)
    wall_s: float = 0.0
    model_calls: int = 0
    samples_done: int = 0
    samples_resumed: int = 0


class Manifest(BaseModel):
    """What a run directory holds and how it was made. No secrets: API keys appear only as env names."""

    format_version: int = FORMAT_VERSION
    specalign_version: str
    created_at: str = Field(default_factory=now)
    updated_at: str = Field(default_factory=now)
    generation_key: str
    data: DataInfo
    selection: Selection
    model: dict[str, Any]
    model_identity: dict[str, Any]
    method: dict[str, Any]
    judge: dict[str, Any]
    past_judges: list[dict[str, Any]] = Field(default_factory=list)
    alpha: float = Field(ge=0, le=1, allow_inf_nan=False)
    na_policy: NAPolicy
    environment: dict[str, str] = Field(default_factory=dict)
    sessions: list[Session] = Field(default_factory=list, description="each invocation of the run, oldest first")
    prices: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="each model's price as the latest session used it (USD per million tokens and its source), "
        "or why it has none",
    )

    @field_validator("model", "model_identity", "judge", "past_judges", mode="after")
    @classmethod
    def _no_credentials(cls, value: Any) -> Any:
        """URL credentials redacted, also in manifests written before specalign redacted them."""
        return _redacted(value)

    def touch(self) -> None:
        """Mark the manifest as updated now (before it is written again)."""
        self.updated_at = now()

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        """What readers index into: the judge's key, model and mode, the method's name, selected scenarios."""
        for field, d, keys in (
            ("judge", self.judge, {"key": str, "model": dict, "mode": str}),
            ("method", self.method, {"name": str}),
        ):
            for key, kind in keys.items():
                if not isinstance(d.get(key), kind):
                    raise ValueError(f"{field}.{key} must be a {kind.__name__}")
        if not isinstance(self.method.get("params", {}), dict):
            raise ValueError("method.params must be a dict")
        if not all(isinstance(p.get("key"), str) for p in self.past_judges):
            raise ValueError("past_judges: every judge needs a key")
        missing = [k for k in self.selection.scenarios if k not in self.data.scenarios]
        if missing:
            raise ValueError(f"selection.scenarios: {missing[0]!r} is not in data.scenarios")
        return self


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value) if "://" in value else value
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


def environment() -> dict[str, str]:
    """The Python, platform and key package versions a manifest records."""
    env = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("pydantic", "openai", "llama_cpp_python"):
        try:
            from importlib.metadata import version  # noqa: PLC0415

            env[pkg] = version(pkg.replace("_", "-"))
        except Exception:  # noqa: BLE001
            pass
    return env


def generation_key(data_sha256: str, target: Model, method: GenerationMethod, *more: Any) -> str:
    """What determines a run directory's generations, hashed: the data, the target model's identity and
    sampling settings, the method and its parameters, and ``more`` (a candidate scorer's description for
    Best-of-N and TPO, ``"live"`` for the gateway's samples). Other generations mean another directory."""
    parts = [
        data_sha256,
        target.backend.identity(),
        target.settings.params,
        target.settings.extra_body,
        method.describe(),
        *more,
    ]
    if target.settings.inline_thought is not None:  # it decides where the answer begins (keys before it hold)
        parts.append({"inline_thought": target.settings.inline_thought})
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_manifest(
    *,
    bench: Benchmark,
    scenarios: Sequence[Scenario],
    limit: int | None,
    n_samples: int,
    target: Model,
    method: GenerationMethod,
    judge: Judge | JudgePanel,
    alpha: float,
    na_policy: NAPolicy,
    scorer: CandidateScorer | None = None,
    live: bool = False,
) -> Manifest:
    """A new run directory's manifest: ``scenarios`` of ``bench`` (``limit`` prompts each, ``n_samples``
    in all) answered by ``target`` with ``method`` and judged by ``judge``. ``scorer``: the candidate scorer
    of Best-of-N and TPO; ``live``: samples of the gateway's traffic. Both are part of the generation key."""
    more: list[Any] = [scorer.describe()] if scorer is not None else []
    if live:
        more.append("live")
    data = DataInfo.of(bench, scenarios)
    return Manifest(
        specalign_version=__version__,
        generation_key=generation_key(data.sha256, target, method, *more),
        data=data,
        selection=Selection(scenarios=list(data.scenarios), limit=limit, n_samples=n_samples),
        model=target.settings.public_dict(),
        model_identity=target.backend.identity(),
        method=method.describe(),
        judge=judge.describe(),
        alpha=alpha,
        na_policy=na_policy,
        environment=environment(),
    )


def sample_id_of(scenario: str, prompt_id: str) -> str:
    """A sample's id in a run directory: ``scenario/prompt_id``."""
    return f"{scenario}/{prompt_id}"


def record_problem(record: GenerationRecord | JudgmentRecord, manifest: Manifest) -> str | None:
    """Why a record that parsed cannot be used with this manifest (None: it can)."""
    info = manifest.data.scenarios.get(record.scenario)
    if info is None:
        return f"scenario {record.scenario!r} is not in manifest.json"
    if record.sample_id != sample_id_of(record.scenario, record.prompt_id):
        return f"sample_id {record.sample_id!r} is not scenario/prompt_id"
    if isinstance(record, JudgmentRecord) and record.status == "scored":
        expected = info.spec_ids()
        missing = [k for k in expected if k not in record.verdicts]
        if missing:
            return f"scored without a verdict for {', '.join(missing[:5])}"
        extra = sorted(set(record.verdicts) - set(expected))
        if extra:
            return f"verdicts for specs the scenario does not have: {', '.join(extra[:5])}"
    return None


class GenerationRecord(BaseModel):
    """One sample's generation: the thought and response, or the error that stopped it."""

    sample_id: str
    scenario: str
    prompt_id: str
    label: PromptLabel
    status: Literal["ok", "error"]
    prompt_sent: str
    thought: str = ""
    response: str = ""
    flags: list[str] = Field(default_factory=list)
    error: str | None = None
    usage: Usage = Field(default_factory=Usage)
    scorer_usage: Usage = Field(default_factory=Usage)
    calls: int = 0
    cached_calls: int = 0
    cost: CallCost | None = Field(None, description="the target model's calls in USD (None: not recorded)")
    scorer_cost: CallCost | None = Field(None, description="candidate scoring's calls in USD (Best-of-N, TPO)")
    steps: list[MethodStep] = Field(default_factory=list, description="every sub-call of the method, in order")
    stats: dict[str, int] = Field(default_factory=dict)
    elapsed_s: float = 0.0
    created_at: str = Field(default_factory=now)

    @classmethod
    def from_output(
        cls,
        output: MethodOutput,
        *,
        scenario: str,
        prompt_id: str,
        label: PromptLabel,
        prompt_sent: str,
        elapsed_s: float,
    ) -> GenerationRecord:
        """The record of a generation that produced ``output``."""
        return cls(
            sample_id=sample_id_of(scenario, prompt_id),
            scenario=scenario,
            prompt_id=prompt_id,
            label=label,
            status="ok",
            prompt_sent=prompt_sent,
            thought=output.thought,
            response=output.response,
            flags=output.flags,
            usage=output.usage,
            scorer_usage=output.scorer_usage,
            calls=output.calls,
            cached_calls=output.cached_calls,
            steps=output.steps,
            stats=output.stats,
            elapsed_s=elapsed_s,
        )

    @classmethod
    def failed(
        cls, error: str, *, scenario: str, prompt_id: str, label: PromptLabel, prompt_sent: str, elapsed_s: float
    ) -> GenerationRecord:
        """The record of a generation that failed with ``error`` (retried on the next run)."""
        return cls(
            sample_id=sample_id_of(scenario, prompt_id),
            scenario=scenario,
            prompt_id=prompt_id,
            label=label,
            status="error",
            prompt_sent=prompt_sent,
            error=error,
            elapsed_s=elapsed_s,
        )


class JudgmentRecord(BaseModel):
    """One sample's judgment by one judge: scored with a verdict per spec, or unscored with the reason."""

    sample_id: str
    scenario: str
    prompt_id: str
    label: PromptLabel
    judge_key: str
    status: Literal["scored", "unscored"]
    verdicts: dict[str, SpecVerdict] = Field(default_factory=dict)
    unscored_reason: str | None = None
    call_failed: bool = Field(False, description="the judge could not be reached: judged again on the next run")
    raw_outputs: list[str] = Field(default_factory=list)
    attempts: int = 0
    usage: Usage = Field(default_factory=Usage)
    calls: int = 0
    cached_calls: int = 0
    cost: CallCost | None = Field(
        None, description="the judge's calls in USD, a panel's members' summed (None: not recorded)"
    )
    elapsed_s: float = 0.0
    created_at: str = Field(default_factory=now)

    @classmethod
    def from_outcome(
        cls, generation: GenerationRecord, judge_key: str, outcome: JudgeOutcome, *, elapsed_s: float
    ) -> JudgmentRecord:
        """The judgment of ``generation`` by the judge ``judge_key``, from what that judge returned."""
        return cls(
            **_sample_fields(generation),
            judge_key=judge_key,
            status=outcome.status,
            verdicts=outcome.verdicts,
            unscored_reason=outcome.unscored_reason,
            call_failed=outcome.call_failed,
            raw_outputs=outcome.raw_outputs,
            attempts=outcome.attempts,
            usage=Usage(prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens),
            calls=outcome.calls,
            cached_calls=outcome.cached_calls,
            elapsed_s=elapsed_s,
        )

    @classmethod
    def not_judged(
        cls,
        generation: GenerationRecord,
        judge_key: str,
        reason: str,
        *,
        elapsed_s: float = 0.0,
        call_failed: bool = False,
    ) -> JudgmentRecord:
        """``generation`` left unscored without a judge's outcome (the call failed, the gateway stopped)."""
        return cls(
            **_sample_fields(generation),
            judge_key=judge_key,
            status="unscored",
            unscored_reason=reason,
            call_failed=call_failed,
            elapsed_s=elapsed_s,
        )


def _sample_fields(g: GenerationRecord) -> dict[str, Any]:
    return {"sample_id": g.sample_id, "scenario": g.scenario, "prompt_id": g.prompt_id, "label": g.label}
