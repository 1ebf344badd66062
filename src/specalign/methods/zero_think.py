"""``zero_think``: an empty thinking block, then the answer (reasoning suppressed)."""

from __future__ import annotations

from ..benchmark import Prompt, Scenario
from ._base import GenerationMethod
from ._context import MethodContext
from ._registry import register_method
from ._text import split_completion
from ._thinking import PrefillParams
from ._types import Answer
from .baselines import answer_of, vanilla_messages


@register_method
class ZeroThink(GenerationMethod[PrefillParams]):
    """Prefill ``<think>`` and ``</think>`` with nothing between, so the model answers at once.

    Without prefill (``no_prefill=multi_turn``) the equivalent is the vanilla call: an API
    that cannot prefill cannot suppress a model's hidden reasoning either; flagged ``multi_turn``.
    """

    name = "zero_think"
    description = "an empty thinking block, then the answer"
    counts_prompt_once = True
    uses_prefill = True

    async def generate(self, ctx: MethodContext, scenario: Scenario, prompt: Prompt) -> Answer:
        messages = vanilla_messages(self.params.system_prompt, scenario, prompt)
        if not ctx.model.can_prefill:
            answer = answer_of(ctx, await ctx.chat("answer", messages, final=True))
            answer.flags.append("multi_turn")
            return answer
        prefix = f"{ctx.thought_start}\n\n{ctx.thought_end}\n\n"
        out = await ctx.continue_turn("answer", messages, prefix, final=True, closed=True)
        split = split_completion(out, ctx.thought_start, ctx.thought_end, closed=True)  # the prefill closed it
        return Answer(
            response=split.response, thought=split.thought, flags=split.flags(), finish_reason=out.finish_reason
        )
