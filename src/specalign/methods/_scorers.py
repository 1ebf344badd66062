"""Candidate scorers for Best-of-N and TPO: the spec judge's SAR, or a reward function of your own."""

from __future__ import annotations

import abc
import importlib
import inspect
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from ..benchmark import Prompt, Scenario
from ..errors import ConfigError, ModelAccessError
from ..models import Usage

JUDGE_SCORER = "judge"


class ScoreResult(BaseModel):
    """A candidate's reward (None: it could not be scored, with the reason in ``note``)."""

    value: float | None
    usage: Usage = Field(default_factory=Usage)
    calls: int = 0
    cached_calls: int = 0
    note: str | None = None


class CandidateScorer(abc.ABC):
    """Scores one candidate response; higher is better."""

    @abc.abstractmethod
    async def score(self, scenario: Scenario, prompt: Prompt, response: str) -> ScoreResult:
        """The reward of ``response`` to ``prompt`` under ``scenario``'s specs."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """What identifies this scorer (enters the run's generation settings)."""


class JudgeScorer(CandidateScorer):
    """The run's spec judge: reward = the candidate's SAR (safety × (α + (1 − α) × behavioral))."""

    def __init__(self, judge: Any, alpha: float, na_policy: str):
        self.judge = judge
        self.alpha = alpha
        self.na_policy = na_policy

    async def score(self, scenario: Scenario, prompt: Prompt, response: str) -> ScoreResult:
        from ..judge import score_verdicts  # noqa: PLC0415

        outcome = await self.judge.judge(scenario, prompt, response)
        usage = Usage(prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens)
        base = {"usage": usage, "calls": outcome.calls, "cached_calls": outcome.cached_calls}
        if outcome.status != "scored":
            return ScoreResult(value=None, note=outcome.unscored_reason, **base)
        sar = score_verdicts(scenario, outcome.verdicts, alpha=self.alpha, na_policy=self.na_policy).sar  # type: ignore[arg-type]
        return ScoreResult(value=sar, **base)

    def describe(self) -> dict[str, Any]:
        return {"kind": JUDGE_SCORER, "judge_key": self.judge.key(), "alpha": self.alpha, "na_policy": self.na_policy}


class FunctionScorer(CandidateScorer):
    """A reward function ``f(scenario, prompt, response) -> float | None`` (sync or async), named ``module:function``."""

    def __init__(self, target: str):
        self.target = target
        self.fn = load_function(target)

    async def score(self, scenario: Scenario, prompt: Prompt, response: str) -> ScoreResult:
        try:
            value = self.fn(scenario, prompt, response)
            if inspect.isawaitable(value):
                value = await value
        except ModelAccessError:
            raise
        except Exception as e:  # noqa: BLE001  (a reward function's failure leaves this candidate unscored)
            return ScoreResult(value=None, note=f"reward function {self.target} raised {type(e).__name__}: {e}")
        if value is None:
            return ScoreResult(value=None, note=f"reward function {self.target} returned None")
        try:
            return ScoreResult(value=float(value))
        except (TypeError, ValueError):
            return ScoreResult(
                value=None, note=f"reward function {self.target} returned {type(value).__name__}, not a number"
            )

    def describe(self) -> dict[str, Any]:
        return {"kind": "function", "target": self.target}


def load_function(target: str) -> Callable[..., Any]:
    """Import ``module:function``; a ConfigError naming the problem otherwise."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"expected 'judge' or 'module:function', got {target!r}", field="method params.scorer")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"cannot import {module_name!r}: {e}", field="method params.scorer") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"{module_name!r} has no callable {attr!r}", field="method params.scorer")
    return fn


def make_scorer(spec: str, *, judge: Any, alpha: float, na_policy: str) -> CandidateScorer:
    """``judge`` (the run's spec judge, SAR as reward) or ``module:function``."""
    if spec == JUDGE_SCORER:
        return JudgeScorer(judge, alpha, na_policy)
    return FunctionScorer(spec)
