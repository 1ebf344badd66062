"""``best_of_n``: N answers, keep the one the scorer likes best."""

from __future__ import annotations

from pydantic import Field

from ..benchmark import Prompt, Scenario
from ._base import GenerationMethod
from ._candidates import CandidateParams, chosen_answer, first_round
from ._context import MethodContext
from ._registry import register_method
from ._types import Answer


class BestOfNParams(CandidateParams):
    n: int = Field(default=15, ge=1, le=256, description="samples per prompt (the paper's 15)")


@register_method
class BestOfN(GenerationMethod[BestOfNParams]):
    """Sample the vanilla prompt N times (sample 0 is vanilla's own call) and return the best-scored answer."""

    name = "best_of_n"
    description = "N samples of the vanilla prompt, the best by the spec judge's SAR (or a reward function)"
    uses_scorer = True

    async def generate(self, ctx: MethodContext, scenario: Scenario, prompt: Prompt) -> Answer:
        pool = await first_round(ctx, scenario, prompt, self.params, self.params.n)
        scored = sum(c.score is not None for c in pool)
        return chosen_answer(pool, {"candidates": len(pool), "scored": scored, "unscored": len(pool) - scored})
