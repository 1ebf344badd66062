"""Candidates for multi-pass methods (Best-of-N, TPO): sample, score, pick."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, Field

from ..benchmark import Prompt, Scenario
from ..models import Message
from ._context import MethodContext
from ._types import Answer
from .baselines import BaselineParams, answer_of


class CandidateParams(BaselineParams):
    """Parameters shared by methods that sample and score candidates."""

    scorer: str = Field(default="judge", description="'judge' (the run's spec judge, SAR as reward) or module:function")
    temperature: float | None = Field(default=None, ge=0, description="sampling temperature; None = the model's")


class Candidate(BaseModel):
    """One candidate answer; ``score`` None: unscored (or unparsed, then never scored)."""

    round: int
    index: int
    answer: Answer
    score: float | None = None


def sampling_params(temperature: float | None) -> dict[str, Any] | None:
    return None if temperature is None else {"temperature": temperature}


async def sample(
    ctx: MethodContext,
    role: str,
    messages: list[Message],
    n: int,
    *,
    round: int,  # noqa: A002
    first_index: int = 0,
    params: dict[str, Any] | None = None,
) -> list[Candidate]:
    """``n`` samples of one conversation, concurrently; sample index ``first_index + k`` seeds the k-th."""
    outs = await asyncio.gather(
        *(ctx.chat(role, messages, params=params, sample_index=first_index + k, round=round, index=k) for k in range(n))
    )
    return [Candidate(round=round, index=k, answer=answer_of(ctx, out)) for k, out in enumerate(outs)]


async def first_round(
    ctx: MethodContext, scenario: Scenario, prompt: Prompt, params: CandidateParams, n: int
) -> list[Candidate]:
    """``n`` scored samples of the vanilla prompt (sample 0 is vanilla's own call)."""
    from .baselines import vanilla_messages  # noqa: PLC0415

    messages = vanilla_messages(params.system_prompt, scenario, prompt)
    pool = await sample(ctx, "sample", messages, n, round=0, params=sampling_params(params.temperature))
    await score_all(ctx, scenario, prompt, pool)
    return pool


async def score_all(ctx: MethodContext, scenario: Scenario, prompt: Prompt, candidates: list[Candidate]) -> None:
    """Score every candidate concurrently (in place)."""
    scores = await asyncio.gather(
        *(ctx.score(scenario, prompt, c.answer.response, round=c.round, index=c.index) for c in candidates)
    )
    for c, s in zip(candidates, scores, strict=False):
        c.score = s


def best(candidates: list[Candidate]) -> Candidate | None:
    """The highest-scored candidate; ties go to the earliest (round, then index)."""
    scored = [c for c in candidates if c.score is not None]
    return max(scored, key=lambda c: (c.score, -c.round, -c.index)) if scored else None


def worst(candidates: list[Candidate]) -> Candidate | None:
    """The lowest-scored candidate; ties go to the latest."""
    scored = [c for c in candidates if c.score is not None]
    return min(scored, key=lambda c: (c.score, -c.round, -c.index)) if scored else None


def chosen_answer(pool: list[Candidate], stats: dict[str, int]) -> Answer:
    """The best candidate as the method's answer (the first, flagged, if none could be scored)."""
    top = best(pool)
    flags: list[str] = []
    if top is None:
        top, flags = pool[0], ["no_candidate_scored"]
    stats = {**stats, "chosen_round": top.round, "chosen_index": top.index}
    return top.answer.model_copy(update={"flags": [*top.answer.flags, *flags], "stats": stats})
