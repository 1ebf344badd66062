"""A model as the rest of specalign sees it: a backend plus settings, cache and usage counters."""

from __future__ import annotations

from typing import Any

from ._base import ChatRequest, Completion, Message, ModelBackend, Usage
from ._cache import CallCache, cache_key
from ._settings import ModelSettings


class Model:
    """Chat with one configured model; every call is cached and its usage counted.

    ``generate`` merges the settings' sampling parameters with per-call overrides; the cache
    key covers the backend identity, every parameter, the full messages, the JSON schema and
    ``sample_index`` (so N samples of one prompt stay N distinct answers).
    """

    def __init__(self, settings: ModelSettings, backend: ModelBackend, cache: CallCache | None = None):
        self.settings = settings
        self.backend = backend
        self.cache = cache
        self.calls_made = 0
        self.cache_hits = 0
        self.usage = Usage()

    @property
    def supports_json_schema(self) -> bool:
        if self.settings.structured_output is not None:
            return self.settings.structured_output
        return self.backend.supports_json_schema

    def request(self, messages: list[Message], *, params: dict[str, Any] | None = None,
                json_schema: dict[str, Any] | None = None) -> ChatRequest:
        merged = {**self.settings.params, **(params or {})}
        schema = json_schema if self.supports_json_schema else None
        return ChatRequest(messages=tuple(messages), params=merged, extra_body=self.settings.extra_body,
                           json_schema=schema)

    def key_for(self, request: ChatRequest, sample_index: int = 0) -> str:
        return cache_key({
            "backend": self.backend.identity(),
            "request": request.model_dump(mode="json"),
            "sample_index": sample_index,
        })

    async def generate(self, messages: list[Message], *, params: dict[str, Any] | None = None,
                       json_schema: dict[str, Any] | None = None, sample_index: int = 0) -> Completion:
        """One chat completion, from the cache when the identical call was made before."""
        request = self.request(messages, params=params, json_schema=json_schema)
        key = self.key_for(request, sample_index)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self.cache_hits += 1
                return hit
        completion = await self.backend.chat(request)
        self.calls_made += 1
        self.usage = self.usage + completion.usage
        if self.cache is not None:
            self.cache.put(key, completion)
        return completion

    async def aclose(self) -> None:
        await self.backend.aclose()
