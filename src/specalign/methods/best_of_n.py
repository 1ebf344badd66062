"""``best_of_n``: N answers, keep the one the scorer likes best."""

from __future__ import annotations

from pydantic import Field

from ..benchmark import Prompt, Scenario
from ._base import Answer, GenerationMethod
from ._candidates import chosen_answer, sample, sampling_params, score_all
from ._context import MethodContext
from ._registry import register_method
from .baselines import BaselineParams, vanilla_messages


class BestOfNParams(BaselineParams):
    n: int = Field(default=15, ge=1, le=256, description="samples per prompt (the paper's 15)")
    scorer: str = Field(default="judge", description="'judge' (the run's spec judge, SAR as reward) or module:function")
    temperature: float | None = Field(default=None, ge=0, description="sampling temperature; None = the model's")


@register_method
class BestOfN(GenerationMethod):
    """Sample the vanilla prompt N times (sample 0 is vanilla's own call) and return the best-scored answer."""

    name = "best_of_n"
    description = "N samples of the vanilla prompt, the best by the spec judge's SAR (or a reward function)"
    Params = BestOfNParams
    uses_scorer = True

    async def generate(self, ctx: MethodContext, scenario: Scenario, prompt: Prompt) -> Answer:
        p = self.params
        messages = vanilla_messages(p.system_prompt, scenario, prompt)
        pool = await sample(ctx, "sample", messages, p.n, round=0, params=sampling_params(p.temperature))
        await score_all(ctx, scenario, prompt, pool)
        scored = sum(c.score is not None for c in pool)
        return chosen_answer(pool, {"candidates": len(pool), "scored": scored, "unscored": len(pool) - scored})
