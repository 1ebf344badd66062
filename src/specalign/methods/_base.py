"""What a generation method is: it turns one prompt into a thought and a response."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from ..benchmark import Prompt, Scenario
from ..models import Model, Usage


class MethodParams(BaseModel):
    """Hyper-parameters of a method; subclasses add fields. Unknown keys are an error."""

    model_config = ConfigDict(extra="forbid")


class MethodOutput(BaseModel):
    """A method's result for one prompt."""

    response: str
    thought: str = ""
    usage: Usage = Field(default_factory=Usage)
    calls: int = 0
    cached_calls: int = 0
    flags: list[str] = Field(default_factory=list)
    finish_reason: str | None = None


class GenerationMethod(abc.ABC):
    """Base class of generation methods. Register subclasses with :func:`register_method`."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Params: ClassVar[type[MethodParams]] = MethodParams

    def __init__(self, params: MethodParams | dict[str, Any] | None = None):
        if isinstance(params, MethodParams):
            self.params = params
        else:
            self.params = self.Params.model_validate(params or {})

    @abc.abstractmethod
    async def generate(self, model: Model, scenario: Scenario, prompt: Prompt, sample_index: int = 0) -> MethodOutput:
        """Produce the thought and response for ``prompt`` under ``scenario``'s specs."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params.model_dump(mode="json")}
