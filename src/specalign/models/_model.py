"""A model as the rest of specalign sees it: a backend plus settings, cache and usage counters."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from .._unicode import repair_text
from ..errors import CapabilityError, ModelError
from ._base import ChatRequest, Completion, Delta, Message, ModelBackend, Usage, deltas_of
from ._cache import CallCache, cache_key
from ._prices import CallMeter
from ._settings import DEFAULT_THOUGHT_END, DEFAULT_THOUGHT_START, TOKEN_LIMITS, ModelSettings

#: told as each backend call starts (model, request, stage); returns what to tell when it ends:
#: ``(completion, None)`` or ``(None, error)``. The gateway's traces are one.
CallObserver = Callable[
    ["Model", ChatRequest, "str | None"], Callable[["Completion | None", "BaseException | None"], None]
]

_STAGE: ContextVar[str | None] = ContextVar("specalign_call_stage", default=None)


@contextmanager
def call_stage(name: str) -> Iterator[None]:
    """Calls made inside the block are for ``name`` (a method's step role): observers are told so."""
    token = _STAGE.set(name)
    try:
        yield
    finally:
        _STAGE.reset(token)


class Model:
    """Chat with one configured model; every call is cached and its usage counted.

    ``generate`` merges the settings' sampling parameters with per-call overrides; the cache
    key covers the backend identity, every parameter, the full messages, the JSON schema,
    ``sample_index`` (so N samples of one prompt stay N distinct answers) and the settings that
    shape the stored text (:meth:`key_for`).
    """

    def __init__(self, settings: ModelSettings, backend: ModelBackend, cache: CallCache | None = None):
        self.settings = settings
        self.backend = backend
        self.cache = cache
        self.calls_made = 0
        self.cache_hits = 0
        self.usage = Usage()
        #: told of every call (its cost, a budget): the runner's; None elsewhere
        self.meter: CallMeter | None = None
        #: told of every backend call (not cache hits): the gateway's traces; None elsewhere
        self.observer: CallObserver | None = None

    @property
    def supports_json_schema(self) -> bool:
        if self.settings.structured_output is not None:
            return self.settings.structured_output
        return self.backend.supports_json_schema

    @property
    def can_prefill(self) -> bool:
        """Whether :meth:`continue_turn` works: the config's ``prefill:``, else the backend's declaration."""
        if self.settings.prefill is not None:
            return self.settings.prefill
        return self.backend.supports_prefill

    @property
    def inline_thought(self) -> bool:
        """Whether the content may hold a thought: the config's ``inline_thought:``, else the backend's declaration."""
        if self.settings.inline_thought is not None:
            return self.settings.inline_thought
        return self.backend.writes_inline_thought

    def request(
        self,
        messages: list[Message],
        *,
        params: dict[str, Any] | None = None,
        json_schema: dict[str, Any] | None = None,
        continue_final: bool = False,
        sample_index: int = 0,
    ) -> ChatRequest:
        messages = [_repaired(m) for m in messages]
        merged = merge_params(self.settings.params, params or {})
        schema = json_schema if self.supports_json_schema else None
        return ChatRequest(
            messages=tuple(messages),
            params=merged,
            extra_body=self.settings.extra_body,
            json_schema=schema,
            continue_final=continue_final,
            sample_index=sample_index,
        )

    def key_for(self, request: ChatRequest) -> str:
        """The cache key of ``request``: what is sent, who answers it, and how the answer is written down.

        The thought markers belong to the last: a backend that gets the reasoning apart from the answer
        joins them with the markers, and a method splits the text at them. They enter the key only
        when they differ from the defaults, so keys made before they were part of it still hold.
        """
        payload: dict[str, Any] = {"backend": self.backend.identity(), "request": request.model_dump(mode="json")}
        markers = (self.settings.thought_start, self.settings.thought_end)
        if markers != (DEFAULT_THOUGHT_START, DEFAULT_THOUGHT_END):
            payload["thought_markers"] = list(markers)
        return cache_key(payload)

    async def generate(
        self,
        messages: list[Message],
        *,
        params: dict[str, Any] | None = None,
        json_schema: dict[str, Any] | None = None,
        sample_index: int = 0,
    ) -> Completion:
        """One chat completion, from the cache when the identical call was made before."""
        return await self._call(
            self.request(messages, params=params, json_schema=json_schema, sample_index=sample_index)
        )

    async def continue_turn(
        self,
        messages: list[Message],
        prefix: str,
        *,
        stop: list[str] | None = None,
        params: dict[str, Any] | None = None,
        sample_index: int = 0,
    ) -> Completion:
        """Continue an assistant turn that starts with ``prefix`` (a prefill); returns the continuation only.

        ``messages`` is the conversation before the assistant turn. Raises
        :class:`~specalign.errors.CapabilityError` if the model cannot prefill.
        """
        return await self._call(
            self.continue_request(messages, prefix, stop=stop, params=params, sample_index=sample_index)
        )

    def continue_request(
        self,
        messages: list[Message],
        prefix: str,
        *,
        stop: list[str] | None = None,
        params: dict[str, Any] | None = None,
        sample_index: int = 0,
    ) -> ChatRequest:
        """The request :meth:`continue_turn` sends (a :class:`CapabilityError` if the model cannot prefill)."""
        if not self.can_prefill:
            raise CapabilityError(prefill_refusal(self.settings.key))
        merged = dict(params or {})
        if stop:
            merged["stop"] = list(stop)
        turn = [*messages, Message(role="assistant", content=prefix)]
        return self.request(turn, params=merged, continue_final=True, sample_index=sample_index)

    async def _call(self, request: ChatRequest) -> Completion:
        key, hit = self._cached(request)
        if hit is not None:
            return hit
        held, ended = self._started(request)
        try:
            completion = await self.backend.chat(request)
        except BaseException as e:
            self._failed(held, ended, e)
            raise
        return self._finished(key, held, ended, completion)

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Delta | Completion, None]:
        """:meth:`_call` as it arrives: :class:`Delta` pieces, then the :class:`Completion`.

        A cache hit comes as one piece; a streamed completion is cached, metered and counted once it is
        whole. Leaving the iteration early (a client that hung up) closes the backend's stream.
        """
        key, hit = self._cached(request)
        if hit is not None:
            for delta in deltas_of(hit):
                yield delta
            yield hit
            return
        held, ended = self._started(request)
        completion: Completion | None = None
        try:
            pieces = self.backend.stream(request)
            try:
                async for item in pieces:
                    if isinstance(item, Completion):
                        completion = item
                        break
                    yield item
            finally:
                await pieces.aclose()
            if completion is None:
                raise ModelError("the backend's stream ended without a completion", kind="malformed")
        except BaseException as e:
            self._failed(held, ended, e)
            raise
        yield self._finished(key, held, ended, completion)

    # -- the bookkeeping of one call, online or streamed ---------------------------------------------------------------
    def _cached(self, request: ChatRequest) -> tuple[str, Completion | None]:
        """The call's cache key and its cached answer (counted and metered as a hit), if any."""
        if self.cache is None:
            return "", None
        key = self.key_for(request)
        hit = self.cache.get(key)
        if hit is not None:
            self.cache_hits += 1
            if self.meter is not None:
                self.meter.cached(self, hit)
        return key, hit

    def _started(self, request: ChatRequest) -> tuple[float, Any]:
        """Reserve the call's estimated cost and tell the observer it starts: (cost held, the observer's end)."""
        held = self.meter.reserve(self, request) if self.meter is not None else 0.0
        ended = self.observer(self, request, _STAGE.get()) if self.observer is not None else None
        return held, ended

    def _failed(self, held: float, ended: Any, error: BaseException) -> None:
        if ended is not None:
            ended(None, error)
        if self.meter is not None:
            self.meter.release(held)

    def _finished(self, key: str, held: float, ended: Any, completion: Completion) -> Completion:
        """Settle, count and cache a call's answer."""
        if ended is not None:
            ended(completion, None)
        if self.meter is not None:
            self.meter.settle(held, self, completion)
        self.calls_made += 1
        self.usage = self.usage + completion.usage
        if self.cache is not None:
            self.cache.put(key, completion)
        return completion

    async def aclose(self) -> None:
        await self.backend.aclose()


def _repaired(message: Message) -> Message:
    """``message`` with lone surrogates in its text replaced (no server or tokenizer can take them)."""
    text, repaired = repair_text(message.content)
    return message.model_copy(update={"content": text}) if repaired else message


def merge_params(configured: dict[str, Any], call: dict[str, Any]) -> dict[str, Any]:
    """The settings' sampling parameters overridden by a call's, with one completion-token limit.

    ``max_tokens`` and ``max_completion_tokens`` are one limit under two names: when the settings
    name one of them, a call's limit under the other name is sent under the settings' name (the
    call's value, as for any parameter), so the server never receives both.
    """
    merged = {**configured, **call}
    named = [k for k in TOKEN_LIMITS if k in configured]
    if len(named) == 1:
        (name,) = named
        other = next(k for k in TOKEN_LIMITS if k != name)
        if other in call:
            value = merged.pop(other)
            if name not in call:
                merged[name] = value
    return merged


def prefill_refusal(model_key: str) -> str:
    return (
        f"model {model_key!r} does not declare assistant prefill (continuing a final assistant message). "
        f"If its server supports it (vLLM, SGLang, llama.cpp's llama-server do), add 'prefill: true' to its "
        f"entry in --models-config; otherwise use a method that needs no prefill"
    )
