"""The data a generation method takes and gives: its parameters, its answer, its steps and their accounting."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..models import Usage


class MethodParams(BaseModel):
    """Hyper-parameters of a method; subclasses add fields. Unknown keys are an error."""

    model_config = ConfigDict(extra="forbid")


class Answer(BaseModel):
    """What a method decided for one prompt: the response, its thought, and what to flag."""

    response: str
    thought: str = ""
    flags: list[str] = Field(default_factory=list)
    finish_reason: str | None = None
    stats: dict[str, int] = Field(default_factory=dict)


class MethodStep(BaseModel):
    """One sub-call of a method: what it was for, what it returned, what it cost.

    ``role`` names the step (``answer``, ``sample``, ``feedback``, ``refine``, ``critique``,
    ``guidance``, ``update``, ``think``, ``stage-1:behavior``, ``final``, ``score`` ...);
    ``round`` and ``index`` place it in the method's loop (iteration, candidate).
    """

    role: str
    round: int = 0
    index: int = 0
    source: Literal["target", "scorer"] = "target"
    text: str = ""
    usage: Usage = Field(default_factory=Usage)
    cached: bool = False
    finish_reason: str | None = None
    score: float | None = None
    status: Literal["ok", "unparsed", "unscored", "skipped"] = "ok"
    note: str | None = None


class MethodOutput(Answer):
    """An :class:`Answer` plus every sub-call the method made and its token accounting.

    ``usage`` is the target model's, in the paper's convention: completion tokens summed over
    calls; prompt tokens summed too, except for single-pass thinking methods (the first call's
    prompt counts once, as the stages extend one text). ``scorer_usage`` is the judge's or
    reward function's usage for candidate scoring (Best-of-N, TPO).
    """

    usage: Usage = Field(default_factory=Usage)
    scorer_usage: Usage = Field(default_factory=Usage)
    calls: int = 0
    cached_calls: int = 0
    steps: list[MethodStep] = Field(default_factory=list)
