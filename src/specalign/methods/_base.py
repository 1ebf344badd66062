"""What a generation method is: it turns one prompt into a thought and a response."""

from __future__ import annotations

import abc
import typing
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

from ..benchmark import Prompt, Scenario
from ..errors import CapabilityError
from ..models import Model, prefill_refusal
from ._context import MethodContext
from ._stream import AnswerSink
from ._types import Answer, MethodOutput, MethodParams

if TYPE_CHECKING:
    from ._scorers import CandidateScorer

P = TypeVar("P", bound=MethodParams)


class GenerationMethod(abc.ABC, Generic[P]):
    """Base class of generation methods, generic over the method's parameters model.

    ``class BestOfN(GenerationMethod[BestOfNParams])`` declares the parameters once: ``Params``
    (the model that validates ``-p KEY=VALUE``) is derived from the type argument, and
    ``self.params`` is a ``BestOfNParams``. Register subclasses with :func:`register_method`.

    A method implements :meth:`generate` with the calls of a :class:`MethodContext` (which
    records each one); :meth:`run` wraps it and does the accounting.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: the parameters model, derived from the class's type argument (``GenerationMethod[XParams]``)
    Params: ClassVar[type[MethodParams]] = MethodParams
    params: P
    #: the first call's prompt tokens count once (single-pass methods whose calls extend one text)
    counts_prompt_once: ClassVar[bool] = False
    #: the method scores candidates (Best-of-N, TPO) and needs a scorer
    uses_scorer: ClassVar[bool] = False
    #: the method writes into the model's thinking (prefill) unless its ``no_prefill`` param says otherwise
    uses_prefill: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = _params_argument(cls)
        if declared is None:
            return  # a subclass of a concrete method, or an old-style ``Params = ...``: inherited or as written
        own = cls.__dict__.get("Params")
        if own is not None and own is not declared:
            raise TypeError(
                f"{cls.__name__} declares its parameters twice, as GenerationMethod[{declared.__name__}] and "
                f"Params = {own.__name__}; keep the type argument"
            )
        cls.Params = declared

    def __init__(self, params: P | dict[str, Any] | None = None):
        if isinstance(params, MethodParams):
            self.params = params
        else:
            self.params = cast(P, self.Params.model_validate(params or {}))

    def needs_prefill(self) -> bool:
        """Whether this method, with these parameters, continues assistant turns."""
        return self.uses_prefill and getattr(self.params, "no_prefill", "refuse") == "refuse"

    def check(self, model: Model) -> None:
        """Raise :class:`CapabilityError` before a run if ``model`` cannot serve this method."""
        if self.needs_prefill() and not model.can_prefill:
            hint = ", or --method-param no_prefill=multi_turn" if "no_prefill" in self.Params.model_fields else ""
            raise CapabilityError(
                f"method {self.name!r} writes into the model's thinking: {prefill_refusal(model.settings.key)}{hint}",
                field="method",
            )

    @abc.abstractmethod
    async def generate(self, ctx: MethodContext, scenario: Scenario, prompt: Prompt) -> Answer:
        """Produce the thought and response for ``prompt`` under ``scenario``'s specs."""

    async def run(
        self,
        model: Model,
        scenario: Scenario,
        prompt: Prompt,
        *,
        scorer: CandidateScorer | None = None,
        sink: AnswerSink | None = None,
    ) -> MethodOutput:
        """Run :meth:`generate` for one prompt and account for every call it made.

        ``sink``: the answer of the calls the method marks ``final`` streams there as it arrives (only
        text the split keeps as answer; see :mod:`._stream`). The caller sends the rest of
        ``response`` once this returns.
        """
        self.check(model)
        ctx = MethodContext(model, scorer, sink)
        answer = await self.generate(ctx, scenario, prompt)
        return ctx.output(answer, counts_prompt_once=self.counts_prompt_once)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params.model_dump(mode="json")}


def _params_argument(cls: type) -> type[MethodParams] | None:
    """``XParams`` when ``cls`` is declared as ``class M(GenerationMethod[XParams])``, else None."""
    for base in cls.__dict__.get("__orig_bases__", ()):
        origin = typing.get_origin(base)
        if isinstance(origin, type) and issubclass(origin, GenerationMethod):
            args = typing.get_args(base)
            if args and isinstance(args[0], type) and issubclass(args[0], MethodParams):
                return args[0]
    return None
