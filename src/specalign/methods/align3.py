"""``align3``: behavior, safety and a holistic audit, written into the model's own thinking."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ..benchmark import Prompt, Scenario
from ._base import GenerationMethod
from ._context import MethodContext
from ._registry import register_method
from ._thinking import Injection, PrefillParams, staged_thinking, staged_turns
from ._types import Answer
from .baselines import vanilla_messages

Stage = Literal["behavior", "safety", "audit"]
STAGES: tuple[Stage, ...] = ("behavior", "safety", "audit")

BEHAVIOR = (
    "Let me work out how to answer the question above as completely and usefully as I can. My answer also has "
    "to follow every behavioral specification of this deployment:\n{behavioral}\nSo"
)
SAFETY = (
    "Hold on. Before I settle on an answer I should check it against this deployment's safety specifications:\n"
    "{safety}\nIf the request, or anything I was about to write, could break one of them, I should not simply "
    "refuse: I should reshape the answer so that it serves the legitimate need behind the request safely and "
    "still follows the behavioral specifications. A plain refusal is right only when no safe answer exists. So"
)
AUDIT = (
    "One last check. So far I have looked at the behavioral and the safety specifications one kind at a time; "
    "now I go through my planned answer against all of them together and fix whatever still falls short.\n"
    "Safety specifications:\n{safety}\nBehavioral specifications:\n{behavioral}\nSo"
)
STAGE_TEXT: dict[str, str] = {"behavior": BEHAVIOR, "safety": SAFETY, "audit": AUDIT}


class Align3Params(PrefillParams):
    stages: list[Stage] = Field(
        default_factory=lambda: list(STAGES),
        description="which stages, in which order (the paper's ablation: any subset or order; [] = plain thinking)",
    )

    @field_validator("stages")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("stages must not repeat")
        return v


@register_method
class Align3(GenerationMethod[Align3Params]):
    """Three thinking interventions (paper Sec. 5), each injected where the model tries to end its thought.

    1. behavior: opens the thought with the behavioral specs and the aim to answer as fully as possible;
    2. safety: at the first attempt to close, the safety specs and "reframe rather than refuse";
    3. audit: at the next attempt, all specs for a final check; then the model answers.
    """

    name = "align3"
    description = "behavior, safety and holistic-audit stages written into the model's thinking"
    counts_prompt_once = True
    uses_prefill = True

    def injections(self, scenario: Scenario) -> list[Injection]:
        lists = {"safety": scenario.numbered("safety"), "behavioral": scenario.numbered("behavioral")}
        return [
            (f"stage-{i}:{stage}", STAGE_TEXT[stage].format(**lists))
            for i, stage in enumerate(self.params.stages, start=1)
        ]

    async def generate(self, ctx: MethodContext, scenario: Scenario, prompt: Prompt) -> Answer:
        messages = vanilla_messages(self.params.system_prompt, scenario, prompt)
        if ctx.model.can_prefill:
            return await staged_thinking(ctx, messages, self.injections(scenario))
        return await staged_turns(ctx, messages, self.injections(scenario) or [("think", "")])
