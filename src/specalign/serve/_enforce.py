"""Enforcement: every answer is judged against the scenario's safety specs before it leaves the gateway.

On a violation the configured action applies: ``refuse`` (send the refusal instead), ``regenerate`` (run
the method again with the broken specs named, at most ``attempts`` times, then refuse) or ``flag`` (send
the answer, marked). A judge that fails follows ``on_error``: ``refuse`` (fail closed) or ``pass``.

Interface for the request paths: :meth:`Enforcer.enforce` wraps a whole (non-streamed) answer;
:meth:`Enforcer.for_request` gives a :class:`Checker` whose ``async check(text) -> Decision`` judges any
text, and :class:`StreamGuard` holds a stream's text back until each window of it has passed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..benchmark import Prompt, Scenario
from ..judge import Judge
from ..methods import GenerationMethod, MethodOutput
from ..models import Model, create_model, load_models_config, parse_model_spec
from ._config import DEFAULT_REFUSAL, ServeConfig
from ._metrics import GatewayMetrics
from ._protocol import ChatInput

log = logging.getLogger("specalign.serve")

#: what ``Enforcer.enforce`` runs: the gateway's answer for one request
AnswerFn = Callable[[ChatInput, GenerationMethod, Scenario], Awaitable[MethodOutput]]


@dataclass
class Decision:
    """One check of one text: may it go out, the verdict per safety spec, and what broke."""

    passed: bool
    verdicts: dict[str, str] = field(default_factory=dict)
    violated: list[str] = field(default_factory=list)
    error: str | None = None  # the judge failed: ``passed`` then follows --enforce-on-error
    latency_s: float = 0.0

    @property
    def checked(self) -> bool:
        return self.error is None


class Enforcer:
    """The enforcement judge of one gateway and the policy around it."""

    def __init__(self, config: ServeConfig, upstream: Model, metrics: GatewayMetrics, observer: Any = None):
        self.config = config.enforce
        spec = self.config.judge or config.monitor.judge
        settings = parse_model_spec(spec, load_models_config(config.models_config))
        settings = settings.model_copy(update={"calls_in_flight": config.max_concurrency})
        same = (settings.key, settings.base_urls) == (upstream.settings.key, upstream.settings.base_urls)
        model = Model(settings, upstream.backend) if same else create_model(settings, None)
        model.observer = observer
        self.judge = Judge(model, self.config.judge_mode)
        self._shared_backend = same
        self.metrics = metrics

    @property
    def judge_key(self) -> str:
        return self.judge.model.settings.key

    def refusal(self, scenario: Scenario) -> str:
        """The refusal text for ``scenario``: its own (scenario.yaml's ``refusal:``), else ``--enforce-refusal``,
        else the built-in one; ``{scenario}`` in the text becomes the scenario's name."""
        text = scenario.refusal or self.config.refusal or DEFAULT_REFUSAL
        return text.replace("{scenario}", scenario.name)

    def describe(self, scenarios: Iterable[Scenario]) -> str:
        """What enforcement does, in one line (printed at start-up): judge, action, where each refusal comes from."""
        c, source = self.config, "--enforce-refusal" if self.config.refusal else "built-in"
        refusals = ", ".join(f"{s.key}: {'its scenario.yaml' if s.refusal else source}" for s in scenarios)
        action = f"regenerate (up to {c.attempts} times), then refuse" if c.action == "regenerate" else c.action
        return (
            f"judge {self.judge_key} on the safety specs, on a violation {action}, when the judge fails "
            f"{c.on_error}, streams checked every {c.window} characters; refusal text ({refusals})"
        )

    def for_request(self, scenario: Scenario, prompt: Prompt) -> Checker:
        return Checker(self, scenario, prompt)

    async def check(self, scenario: Scenario, prompt: Prompt, text: str) -> Decision:
        """Judge ``text`` against the safety specs; never raises for a judge failure."""
        t0 = time.perf_counter()
        try:
            outcome = await self.judge.judge(scenario, prompt, text, kinds=("safety",))
            error = None if outcome.status == "scored" else outcome.unscored_reason or "unscored"
        except Exception as e:  # noqa: BLE001  (any failure of the judge is a failed check, never a pass)
            log.warning("enforcement: judge failed: %s", e)
            outcome, error = None, f"judge call failed: {e}"
        latency = time.perf_counter() - t0
        m = self.metrics
        if error is not None or outcome is None:
            m.enforce_checks.inc(outcome="error")
            return Decision(self.config.on_error == "pass", error=error, latency_s=latency)
        verdicts: dict[str, str] = {k: str(v.verdict) for k, v in outcome.verdicts.items()}
        violated = [k for k, v in verdicts.items() if v == "NO"]
        m.enforce_checks.inc(outcome="violation" if violated else "pass")
        for spec in violated:
            m.enforce_violations.inc(scenario=scenario.key, spec=spec)
        return Decision(not violated, verdicts, violated, None, latency)

    async def enforce(
        self, answer: AnswerFn, inp: ChatInput, method: GenerationMethod, scenario: Scenario
    ) -> MethodOutput:
        """``answer`` checked, and the action applied; what was done is left in ``inp.enforcement``."""
        attempt_inp, spent, judged_s, attempts = inp, None, 0.0, 0
        while True:
            out = await answer(attempt_inp, method, scenario)
            attempts += 1
            spent = out if spent is None else _add(spent, out)
            decision = await self.check(scenario, inp.prompt, out.response)
            judged_s += decision.latency_s
            if decision.passed:
                action = "none" if attempts == 1 else "regenerated"
                final = _with_usage(out, spent)
                break
            if decision.checked and self.config.action == "flag":
                action, final = "flagged", _with_usage(out, spent, flag="enforcement_flagged")
                break
            if decision.checked and self.config.action == "regenerate" and attempts <= self.config.attempts:
                attempt_inp = dataclasses.replace(inp, prompt=_named(inp.prompt, scenario, decision.violated))
                continue
            action = "refused"
            final = _with_usage(out, spent, flag="enforcement_refused", response=self.refusal(scenario))
            break
        self.settle(inp, decision, action, attempts, judged_s)
        return final

    def settle(self, inp: ChatInput, decision: Decision, action: str, attempts: int, judged_s: float) -> None:
        """Count what was done and leave it in ``inp.enforcement`` (the reply's ``specalign.enforcement``)."""
        self.metrics.enforce_actions.inc(action=action)
        self.metrics.enforce_latency.observe(judged_s)
        inp.enforcement = {
            "checked": decision.checked,
            "action": action,
            "verdicts": decision.verdicts,
            "violated": decision.violated,
            "attempts": attempts,
            "judge": self.judge_key,
            "judge_latency_ms": round(judged_s * 1000, 1),
            "error": decision.error,
        }

    def retry_input(self, inp: ChatInput, scenario: Scenario, violated: list[str]) -> ChatInput:
        """The request again, with the safety specs its last answer broke named to the model (regenerate)."""
        return dataclasses.replace(inp, prompt=_named(inp.prompt, scenario, violated))

    async def aclose(self) -> None:
        if not self._shared_backend:
            await self.judge.model.aclose()


class Checker:
    """Enforcement bound to one request: ``await check(text)`` judges any text of its answer."""

    def __init__(self, enforcer: Enforcer, scenario: Scenario, prompt: Prompt):
        self.enforcer, self.scenario, self.prompt = enforcer, scenario, prompt

    async def check(self, text: str) -> Decision:
        return await self.enforcer.check(self.scenario, self.prompt, text)


class StreamGuard:
    """Holds a stream's text back until it is judged: every ``window`` new characters, the whole text so
    far is checked, and only text that passed is released. ``feed`` and ``finish`` return the text that
    may be sent now; after a failed check ``stopped`` holds the decision and nothing more is released
    (the stream then ends with the documented refusal/error event).

    ``flag=True`` (``--enforce-action flag``): a judged violation does not stop the stream; ``flagged``
    holds it, everything held back is released, and the rest passes unjudged (the answer is marked already).
    """

    def __init__(self, checker: Checker, window: int, *, flag: bool = False):
        self.checker, self.window, self.flag = checker, window, flag
        self.text = ""
        self.released = 0
        self.stopped: Decision | None = None
        self.flagged: Decision | None = None
        self.checks: list[Decision] = []

    async def feed(self, piece: str) -> str:
        self.text += piece
        if self.flagged is not None:
            return self._release()
        if self.stopped is None and len(self.text) - self.released >= self.window:
            return await self._check()
        return ""

    async def finish(self, rest: str = "") -> str:
        """Check whatever is still held back, with ``rest`` (the end of the answer) added; an answer
        with no text at all is checked once too."""
        self.text += rest
        if self.flagged is not None:
            return self._release()
        if self.stopped is None and (len(self.text) > self.released or not self.checks):
            return await self._check()
        return ""

    def outcome(self) -> Decision:
        """The decision for the whole stream: the failing (or flagged, or last) check's verdicts, the
        judge time of every check, and the first judge failure."""
        last = self.stopped or self.flagged or (self.checks[-1] if self.checks else Decision(True))
        error = next((d.error for d in self.checks if d.error is not None), None)
        latency = sum(d.latency_s for d in self.checks)
        return Decision(last.passed, last.verdicts, last.violated, error, latency)

    async def _check(self) -> str:
        decision = await self.checker.check(self.text)
        self.checks.append(decision)
        if not decision.passed:
            if self.flag and decision.checked:
                self.flagged = decision
                return self._release()
            self.stopped = decision
            return ""
        return self._release()

    def _release(self) -> str:
        start, self.released = self.released, len(self.text)
        return self.text[start:]


def _named(prompt: Prompt, scenario: Scenario, violated: list[str]) -> Prompt:
    """The request again, with the safety specs its last answer broke named to the model."""
    ids = scenario.spec_ids("safety")
    broken = "\n".join(f"{s}. {scenario.safety_specs[ids.index(s)].text}" for s in violated if s in ids)
    note = (
        "\n\n(Note from the gateway: a draft answer to this request broke these safety specifications:\n"
        f"{broken}\nWrite a new answer that keeps to every one of them.)"
    )
    return prompt.model_copy(update={"prompt": prompt.prompt + note})


def _add(a: MethodOutput, b: MethodOutput) -> MethodOutput:
    """``b`` with the usage and calls of both (every attempt's tokens are counted)."""
    return b.model_copy(
        update={
            "usage": a.usage + b.usage,
            "calls": a.calls + b.calls,
            "cached_calls": a.cached_calls + b.cached_calls,
        }
    )


def _with_usage(out: MethodOutput, spent: MethodOutput, flag: str | None = None, response: str | None = None):  # noqa: ANN202
    update: dict[str, Any] = {"usage": spent.usage, "calls": spent.calls, "cached_calls": spent.cached_calls}
    if flag:
        update["flags"] = [*out.flags, flag]
    if response is not None:
        update.update(response=response, thought="", flags=[f for f in update["flags"] if f != "max_tokens_reached"])
    return out.model_copy(update=update)
