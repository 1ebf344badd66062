"""The one small interface every model backend implements."""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant"]


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(frozen=True)

    role: Role
    content: str


class Usage(BaseModel):
    """Token usage of one call, or a sum of calls."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


class Completion(BaseModel):
    """What one chat call returned."""

    text: str
    usage: Usage = Field(default_factory=Usage)
    finish_reason: str | None = None
    cached: bool = False


class ChatRequest(BaseModel):
    """Everything that determines a model's answer, apart from the backend's own identity.

    ``params`` are sampling parameters (temperature, top_p, max_tokens, stop, seed, ...) merged
    from the model settings and the caller; ``extra_body`` goes to the server untouched.
    ``json_schema`` asks for structured output when the backend supports it.
    """

    model_config = ConfigDict(frozen=True)

    messages: tuple[Message, ...]
    params: dict[str, Any] = Field(default_factory=dict)
    extra_body: dict[str, Any] = Field(default_factory=dict)
    json_schema: dict[str, Any] | None = None


class ModelBackend(abc.ABC):
    """A chat model. Implementations: ``openai`` (any OpenAI-compatible server) and ``llamacpp``.

    A backend raises :class:`specalign.errors.ModelAccessError` for errors that retrying
    cannot fix (401/403/404, exhausted quota) and :class:`specalign.errors.ModelError`
    once its bounded retries are spent. It never caches; :class:`specalign.models.Model` does.
    """

    kind: ClassVar[str]
    supports_json_schema: ClassVar[bool] = False

    @abc.abstractmethod
    def identity(self) -> dict[str, Any]:
        """What identifies this backend in cache keys (kind, base URL(s), model); never secrets."""

    @abc.abstractmethod
    async def chat(self, request: ChatRequest) -> Completion:
        """Run one chat completion."""

    async def aclose(self) -> None:  # noqa: B027  (optional hook)
        """Release connections or memory."""
