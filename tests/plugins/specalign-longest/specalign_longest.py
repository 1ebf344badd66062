"""A method: N samples of the prompt with its specs, keep the longest answer."""

from pydantic import Field

from specalign.benchmark import Prompt, Scenario
from specalign.methods import (
    Answer,
    GenerationMethod,
    MethodContext,
    MethodParams,
    register_method,
    spec_augmented_prompt,
)
from specalign.models import Message


class LongestOfNParams(MethodParams):
    n: int = Field(default=2, ge=1, le=16, description="samples per prompt")


@register_method
class LongestOfN(GenerationMethod[LongestOfNParams]):
    name = "longest_of_n"
    description = "n samples of the prompt with its specs, the longest answer kept"

    async def generate(self, ctx: MethodContext, scenario: Scenario, prompt: Prompt) -> Answer:
        messages = [Message(role="user", content=spec_augmented_prompt(scenario, prompt.prompt))]
        outs = [await ctx.chat("sample", messages, sample_index=k, index=k) for k in range(self.params.n)]
        longest = max(outs, key=lambda out: len(out.text))  # the first of the longest
        return Answer(response=longest.text, finish_reason=longest.finish_reason, stats={"samples": len(outs)})
