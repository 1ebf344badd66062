"""The one small interface every model backend implements."""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator
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
    cached_prompt_tokens: int = Field(
        default=0, description="prompt tokens served from a KV/prefix cache, not evaluated"
    )

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cached_prompt_tokens=self.cached_prompt_tokens + other.cached_prompt_tokens,
        )


class Completion(BaseModel):
    """What one chat call returned.

    ``answer_start``: where the answer begins in ``text`` when the backend knows it (the server
    returned the reasoning apart from the content); None: unknown, the text is split at its markers.
    ``flags``: what the backend did to the text (``invalid_text_repaired``: lone surrogates replaced).
    """

    text: str
    usage: Usage = Field(default_factory=Usage)
    finish_reason: str | None = None
    cached: bool = False
    answer_start: int | None = None
    flags: list[str] = Field(default_factory=list)


REPAIRED = "invalid_text_repaired"


class Delta(BaseModel):
    """A piece of a streamed completion's text, as it arrives.

    The deltas of one call, joined, are the start of the final :attr:`Completion.text` (a backend
    holds back what it cannot place yet). ``thought``: the server returned this piece as reasoning,
    apart from the content; the first piece that is not marks :attr:`Completion.answer_start`.
    """

    model_config = ConfigDict(frozen=True)

    text: str
    thought: bool = False


def deltas_of(completion: Completion) -> list[Delta]:
    """A finished completion as deltas (one for the thought the server returned apart, one for the rest)."""
    text, at = completion.text, completion.answer_start
    if at is not None and 0 < at <= len(text):
        return [Delta(text=text[:at], thought=True), *([Delta(text=text[at:])] if at < len(text) else [])]
    return [Delta(text=text)] if text else []


class ChatRequest(BaseModel):
    """Everything that determines a model's answer, apart from the backend's own identity.

    ``params`` are sampling parameters (temperature, top_p, max_tokens, stop, seed, ...) merged
    from the model settings and the caller; ``extra_body`` goes to the server untouched.
    ``json_schema`` asks for structured output when the backend supports it.
    ``continue_final``: the last message is an assistant turn to *continue* (a prefill): the
    backend renders it unclosed and returns only the continuation. ``sample_index`` tells
    repeated samples of one request apart (backends offset the seed by it).
    """

    model_config = ConfigDict(frozen=True)

    messages: tuple[Message, ...]
    params: dict[str, Any] = Field(default_factory=dict)
    extra_body: dict[str, Any] = Field(default_factory=dict)
    json_schema: dict[str, Any] | None = None
    continue_final: bool = False
    sample_index: int = 0


class ModelBackend(abc.ABC):
    """A chat model. Implementations: ``openai`` (any OpenAI-compatible server) and ``llamacpp``.

    A backend raises :class:`specalign.errors.ModelAccessError` for errors that retrying
    cannot fix (401/403/404, exhausted quota) and :class:`specalign.errors.ModelError`
    once its bounded retries are spent. It never caches; :class:`specalign.models.Model` does.
    """

    kind: ClassVar[str]
    supports_json_schema: ClassVar[bool] = False
    #: whether ``chat`` honours ``continue_final`` (a model config's ``prefill:`` overrides it)
    supports_prefill: ClassVar[bool] = False
    #: whether the model may write its thought into the content (a model config's ``inline_thought:`` overrides it)
    writes_inline_thought: ClassVar[bool] = True

    @abc.abstractmethod
    def identity(self) -> dict[str, Any]:
        """What identifies this backend in cache keys (kind, base URL(s), model); never secrets."""

    @abc.abstractmethod
    async def chat(self, request: ChatRequest) -> Completion:
        """Run one chat completion."""

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Delta | Completion, None]:
        """Run one chat completion, yielding :class:`Delta` pieces as they arrive, then the :class:`Completion`.

        This default makes the whole call and yields it as one piece; backends that can stream override it.
        """
        completion = await self.chat(request)
        for delta in deltas_of(completion):
            yield delta
        yield completion

    async def warm(self) -> None:  # noqa: B027  (optional hook)
        """Get ready for the first call (load weights, open clients); the gateway calls it at start-up."""

    async def aclose(self) -> None:  # noqa: B027  (optional hook)
        """Release connections or memory."""
