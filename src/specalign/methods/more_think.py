"""``more_think`` (budget forcing): each time the model tries to stop thinking, make it go on."""

from __future__ import annotations

from pydantic import Field

from ..benchmark import Prompt, Scenario
from ._base import GenerationMethod
from ._context import MethodContext
from ._registry import register_method
from ._thinking import Injection, PrefillParams, staged_thinking, staged_turns
from ._types import Answer
from .baselines import vanilla_messages


class MoreThinkParams(PrefillParams):
    rethink_count: int = Field(default=3, ge=1, le=50, description="thinking cycles in all (the official default 3)")
    wait_text: str = "Wait, "


@register_method
class MoreThink(GenerationMethod[MoreThinkParams]):
    """Open the thought; at each attempt to close it, append "Wait, " instead, ``rethink_count`` cycles in all.

    As in the official code, ``rethink_count=3`` is two generations stopped at the end-of-thinking
    marker, each followed by "Wait, ", then a free generation that closes the thought and answers.
    """

    name = "more_think"
    description = "budget forcing: replace the end of thinking with 'Wait, ' for rethink_count cycles"
    counts_prompt_once = True
    uses_prefill = True

    def injections(self) -> list[Injection]:
        return [("think-1", "")] + [
            (f"think-{i}", self.params.wait_text) for i in range(2, self.params.rethink_count + 1)
        ]

    async def generate(self, ctx: MethodContext, scenario: Scenario, prompt: Prompt) -> Answer:
        messages = vanilla_messages(self.params.system_prompt, scenario, prompt)
        if ctx.model.can_prefill:
            return await staged_thinking(ctx, messages, self.injections())
        return await staged_turns(ctx, messages, self.injections())
