"""What a generation method is: it turns one prompt into a thought and a response."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from ..benchmark import Prompt, Scenario
from ..errors import CapabilityError
from ..models import Model, Usage
from ._context import MethodContext, MethodStep

if TYPE_CHECKING:
    from ._scorers import CandidateScorer


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


class GenerationMethod(abc.ABC):
    """Base class of generation methods. Register subclasses with :func:`register_method`.

    A method implements :meth:`generate` with the calls of a :class:`MethodContext` (which
    records each one); :meth:`run` wraps it and does the accounting.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Params: ClassVar[type[MethodParams]] = MethodParams
    #: the first call's prompt tokens count once (single-pass methods whose calls extend one text)
    counts_prompt_once: ClassVar[bool] = False
    #: the method scores candidates (Best-of-N, TPO) and needs a scorer
    uses_scorer: ClassVar[bool] = False
    #: the method writes into the model's thinking (prefill) unless its ``no_prefill`` param says otherwise
    uses_prefill: ClassVar[bool] = False

    def __init__(self, params: MethodParams | dict[str, Any] | None = None):
        if isinstance(params, MethodParams):
            self.params = params
        else:
            self.params = self.Params.model_validate(params or {})

    def needs_prefill(self) -> bool:
        """Whether this method, with these parameters, continues assistant turns."""
        return self.uses_prefill and getattr(self.params, "no_prefill", "refuse") == "refuse"

    def check(self, model: Model) -> None:
        """Raise :class:`CapabilityError` before a run if ``model`` cannot serve this method."""
        if self.needs_prefill() and not model.can_prefill:
            from ..models._model import prefill_refusal  # noqa: PLC0415

            hint = ", or --method-param no_prefill=multi_turn" if "no_prefill" in self.Params.model_fields else ""
            raise CapabilityError(
                f"method {self.name!r} writes into the model's thinking: {prefill_refusal(model.settings.key)}{hint}",
                field="method",
            )

    @abc.abstractmethod
    async def generate(self, ctx: MethodContext, scenario: Scenario, prompt: Prompt) -> Answer:
        """Produce the thought and response for ``prompt`` under ``scenario``'s specs."""

    async def run(
        self, model: Model, scenario: Scenario, prompt: Prompt, *, scorer: CandidateScorer | None = None
    ) -> MethodOutput:
        """Run :meth:`generate` for one prompt and account for every call it made."""
        self.check(model)
        ctx = MethodContext(model, scorer)
        answer = await self.generate(ctx, scenario, prompt)
        return ctx.output(answer, counts_prompt_once=self.counts_prompt_once)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params.model_dump(mode="json")}
