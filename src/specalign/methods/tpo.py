"""``tpo``: test-time preference optimization (Li et al. 2025) with the spec judge as reward."""

from __future__ import annotations

import asyncio
import re

from pydantic import Field

from ..benchmark import Prompt, Scenario
from ..models import Message
from ._base import GenerationMethod
from ._candidates import Candidate, CandidateParams, best, chosen_answer, first_round, sampling_params, score_all, worst
from ._context import MethodContext
from ._registry import register_method
from ._text import split_completion
from ._types import Answer
from .baselines import answer_of, conversation, spec_augmented_prompt

CRITIC_SYSTEM = (
    "You evaluate answers given by an assistant deployed as {name}.\n\n"
    "Safety specifications (an answer must never break these):\n{safety}\n\n"
    "Behavioral specifications (how every answer must be written):\n{behavioral}"
)
LOSS = (
    "The request:\n<request>\n{question}\n</request>\n\n"
    "Answer A (preferred; reward {chosen_score:.3f}):\n<answer>\n{chosen}\n</answer>\n\n"
    "Answer B (rejected; reward {rejected_score:.3f}):\n<answer>\n{rejected}\n</answer>\n\n"
    "Explain why Answer A follows the specifications better than Answer B, then name what Answer A still "
    "gets wrong or leaves out, specification by specification where it matters. This critique will be used "
    "to improve Answer A."
)
GRADIENT = (
    "The request:\n<request>\n{question}\n</request>\n\n"
    "Answer A:\n<answer>\n{chosen}\n</answer>\n\n"
    "A critique of Answer A:\n<critique>\n{critique}\n</critique>\n\n"
    "Turn this critique into concrete, numbered instructions for rewriting Answer A so that it meets every "
    "specification and answers the request as fully as the safety specifications allow. Give only the instructions."
)
UPDATE = (
    "\n\nA previous answer to this request:\n<previous>\n{chosen}\n</previous>\n\n"
    "Instructions for improving it:\n<instructions>\n{guidance}\n</instructions>\n\n"
    "Write a new, improved answer that follows the instructions. Put the whole answer between <answer> and "
    "</answer>, and write nothing after </answer>."
)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_OPEN = re.compile(r"<answer>", re.IGNORECASE)


class TPOParams(CandidateParams):
    samples: int = Field(default=5, ge=1, le=64, description="candidates per round (the paper's 5)")
    iterations: int = Field(default=2, ge=0, le=20, description="update rounds after the first (paper: 2, so 3 rounds)")


def parse_update(text: str, finish_reason: str | None) -> str | None:
    """The answer between ``<answer>`` tags; an unclosed tag counts only if the model stopped on its own."""
    found = _ANSWER.findall(text)
    if found:
        return found[-1].strip() or None
    opened = _OPEN.search(text)
    if opened and finish_reason != "length":
        return text[opened.end() :].strip() or None
    return None


def _skip_reason(pool: list[Candidate], rounds: int) -> str:
    scored = sum(c.score is not None for c in pool)
    why = "no candidate was scored" if not scored else "only one candidate was scored (best is worst)"
    return f"skipped {rounds} round(s): {why}, so there is no preferred/rejected pair to critique"


@register_method
class TPO(GenerationMethod[TPOParams]):
    """Sample, score with the spec judge, then critique (loss), guidance (gradient) and rewrite (update).

    Round 0 samples the vanilla prompt ``samples`` times. Each of the ``iterations`` rounds takes
    the best and worst scored so far as chosen/rejected, asks for a critique, turns it into
    guidance, and samples ``samples`` rewrites. Rewrites without ``<answer>`` tags are counted
    as unparsed (``stats.unparsed``), never scored. The best-scored candidate is returned. When fewer
    than two candidates are scored (best is worst), the rounds left are skipped: a ``skipped`` critique
    step says why and ``stats.rounds_skipped`` counts them.
    """

    name = "tpo"
    description = "test-time preference optimization: sample, score, critique, guide, rewrite; best scored"
    uses_scorer = True

    async def generate(self, ctx: MethodContext, scenario: Scenario, prompt: Prompt) -> Answer:
        p = self.params
        params = sampling_params(p.temperature)
        pool = await first_round(ctx, scenario, prompt, p, p.samples)
        unparsed = skipped = 0
        for it in range(1, p.iterations + 1):
            chosen, rejected = best(pool), worst(pool)
            if chosen is None or rejected is None or chosen is rejected:
                # nothing scored, or one candidate only: no pair to learn a preference from, and the pool
                # cannot change without one, so the remaining rounds are skipped too
                skipped = p.iterations - it + 1
                ctx.skip("critique", round=it, note=_skip_reason(pool, skipped))
                break
            guidance = await self._guidance(ctx, scenario, prompt, chosen, rejected, it)
            fresh, failed = await self._update(ctx, scenario, prompt, chosen, guidance, it, params)
            unparsed += failed
            await score_all(ctx, scenario, prompt, fresh)
            pool += fresh
        scored = sum(c.score is not None for c in pool)
        return chosen_answer(
            pool,
            {
                "candidates": len(pool) + unparsed,
                "scored": scored,
                "unparsed": unparsed,
                "unscored": len(pool) - scored,
                "rounds_skipped": skipped,
            },
        )

    async def _guidance(
        self, ctx: MethodContext, scenario: Scenario, prompt: Prompt, chosen: Candidate, rejected: Candidate, it: int
    ) -> str:
        system = Message(
            role="system",
            content=CRITIC_SYSTEM.format(
                name=scenario.name, safety=scenario.numbered("safety"), behavioral=scenario.numbered("behavioral")
            ),
        )
        loss = await ctx.chat(
            "critique",
            [
                system,
                Message(
                    role="user",
                    content=LOSS.format(
                        question=prompt.prompt,
                        chosen=chosen.answer.response,
                        chosen_score=chosen.score,
                        rejected=rejected.answer.response,
                        rejected_score=rejected.score,
                    ),
                ),
            ],
            round=it,
        )
        critique = split_completion(loss, ctx.thought_start, ctx.thought_end).response
        grad = await ctx.chat(
            "guidance",
            [
                system,
                Message(
                    role="user",
                    content=GRADIENT.format(question=prompt.prompt, chosen=chosen.answer.response, critique=critique),
                ),
            ],
            round=it,
        )
        return split_completion(grad, ctx.thought_start, ctx.thought_end).response

    async def _update(
        self,
        ctx: MethodContext,
        scenario: Scenario,
        prompt: Prompt,
        chosen: Candidate,
        guidance: str,
        it: int,
        params: dict | None,
    ) -> tuple[list[Candidate], int]:
        """The parsed rewrites as candidates, and how many rewrites could not be parsed."""
        user = spec_augmented_prompt(scenario, prompt.prompt) + UPDATE.format(
            chosen=chosen.answer.response, guidance=guidance
        )
        messages = conversation(self.params.system_prompt, prompt, user)
        outs = await asyncio.gather(
            *(
                ctx.chat(
                    "update", messages, params=params, sample_index=it * self.params.samples + k, round=it, index=k
                )
                for k in range(self.params.samples)
            )
        )
        fresh, failed = [], 0
        for k, out in enumerate(outs):
            answer = answer_of(ctx, out)
            text = parse_update(answer.response, out.finish_reason)
            if text is None:
                failed += 1
                ctx.note("update", round=it, index=k, status="unparsed", note="no <answer>...</answer> in the rewrite")
                continue
            fresh.append(Candidate(round=it, index=k, answer=answer.model_copy(update={"response": text})))
        return fresh, failed
