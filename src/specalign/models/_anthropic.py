"""Anthropic's Messages API, natively, through the official ``anthropic`` SDK, with Message Batches.

What the backend sends for a :class:`ChatRequest`:

- ``system`` messages go to the ``system`` parameter (one text block each); the other turns are
  ``messages``. Turns with no visible text are left out (the API refuses them; it merges the
  neighbours if that leaves two turns of one role in a row).
- ``max_tokens`` (or ``max_completion_tokens``) from the params, else :data:`DEFAULT_MAX_TOKENS`
  (plus ``budget_tokens`` when extended thinking is enabled; :data:`ADAPTIVE_MAX_TOKENS` with
  adaptive thinking). ``stop`` becomes ``stop_sequences``. OpenAI-only params (:data:`OPENAI_ONLY`:
  ``seed``, the penalties, ...) are not sent; any other param and ``extra_body`` go to the API as
  they are (``temperature``, ``top_p``, ``top_k``, ``thinking``, ``metadata``, ``service_tier``, ...).
- Extended thinking (a ``thinking`` param, e.g. ``{type: enabled, budget_tokens: 2048}``): the
  thinking blocks become the thought, joined before the answer with the settings' thought markers,
  and ``answer_start`` says where the answer begins. ``redacted_thinking`` blocks carry nothing
  readable: they are dropped and the completion is flagged ``thinking_redacted``. The API takes no
  ``temperature`` or ``top_k`` with thinking on, so they are not sent then.
- A prefill (``continue_final``) is the final assistant turn, which the model continues. The API
  refuses trailing whitespace there, so it is trimmed and taken off the continuation's start when the
  model writes it again. With thinking on the API refuses prefills: a :class:`CapabilityError`.
- ``json_schema``: one tool, :data:`TOOL_NAME`, whose ``input_schema`` is the schema, forced with
  ``tool_choice`` (``auto`` with thinking on: the API forbids forcing a tool then); the tool's input
  is the answer, as JSON text.
- Prompt caching: ``cache_control`` (ephemeral) on the system prompt (which caches the tool too), on
  the turn before the final one (the conversation a follow-up call shares), and on the shared head of
  the first user turn (see :class:`_SharedHeads`): up to three of the four breakpoints allowed.

Streaming (:meth:`AnthropicBackend.stream`, ``stream: true``): thinking deltas are thought pieces, text
deltas answer pieces (a prefill's trimmed whitespace and a tool's answer held back until they are
certain); the final completion is read from the streamed blocks exactly as :meth:`chat` reads a message.
Retried as a chat call until the first piece has been yielded; after that a failure is final.

Usage: ``prompt_tokens`` counts every input token: uncached (``input_tokens``), written to the cache
(``cache_creation_input_tokens``) and read from it (``cache_read_input_tokens``), so it compares with
other backends'; ``cached_prompt_tokens`` is those read from the cache.

Errors, credentials and retries as in the OpenAI backend: 429, 408, 409, 529 (overloaded) and other
5xx are retried after ``retry-after-ms`` / ``retry-after`` (or a backoff), at most
``settings.max_retries`` times, and an ``x-should-retry`` header is obeyed; 401/403/404 and billing
errors raise :class:`ModelAccessError`. The key stays in the SDK client; every message is scrubbed.
Creating a batch is not sent again after a failure that may have created it (a timeout, a lost or
unreadable answer): a second batch would run every request twice.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import random
import re
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlparse

from .._secrets import Scrubber, redact_url, url_secrets
from .._unicode import repair_text
from ..errors import CapabilityError, ConfigError, ModelAccessError, ModelError, ModelUnavailable, SpecalignError
from ._base import REPAIRED, ChatRequest, Completion, Delta, ModelBackend, Usage
from ._batch import BatchCapable, BatchItemError, BatchRequest, BatchState, BatchStatusName
from ._ratelimit import limiter_for, retry_after
from ._settings import PLACEHOLDER_KEY, ModelSettings, _check_urls, api_key_from_env

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.anthropic.com"
BASE_URL_ENV = "ANTHROPIC_BASE_URL"
KEY_ENV = "ANTHROPIC_API_KEY"
INSTALL_HINT = "pip install 'specalign[anthropic]'"
#: ``max_tokens`` when the params give none (the API requires one)
DEFAULT_MAX_TOKENS = 4096
#: ``max_tokens`` with adaptive thinking when the params give none (thinking counts against it)
ADAPTIVE_MAX_TOKENS = 16384
#: the one tool offered when a JSON schema is asked for; its input is the answer
TOOL_NAME = "answer"
TOOL_DESCRIPTION = "Give your answer: the tool's input is your whole reply."
THINKING_REDACTED = "thinking_redacted"
EPHEMERAL = {"type": "ephemeral"}
#: OpenAI's sampling params that the Messages API does not take (it refuses unknown fields)
OPENAI_ONLY = frozenset(
    {
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "n",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "response_format",
        "reasoning_effort",
        "parallel_tool_calls",
        "user",
    }
)
#: a first user turn's head shorter than this is not worth a cache breakpoint of its own
MIN_SHARED_HEAD = 1024
MAX_RETRY_AFTER = 120.0
MAX_BACKOFF = 8.0
RETRYABLE_STATUS = frozenset({408, 409, 429})
#: what Anthropic's ``stop_reason`` means in the finish reasons the rest of specalign reads
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
}
#: error types inside a batch: the HTTP status they stand for, and whether sending again may succeed
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "gateway_timeout_error": 504,
    "overloaded_error": 529,
}
RETRYABLE_ERRORS = frozenset(
    {"rate_limit_error", "api_error", "timeout_error", "gateway_timeout_error", "overloaded_error"}
)
CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
BATCH_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")

#: the backoff sleep; tests replace it
_sleep = asyncio.sleep
T = TypeVar("T")


class _Retry(Exception):
    """A failed attempt worth another; ``delay`` is the wait the server asked for, if any. ``maybe_done``:
    the server may have carried the request out (no answer, or one that could not be read)."""

    def __init__(
        self,
        reason: str,
        delay: float | None = None,
        *,
        kind: str = "status",
        status: int | None = None,
        maybe_done: bool = False,
    ):
        super().__init__(reason)
        self.reason = reason
        self.delay = delay
        self.kind = kind
        self.status = status
        self.maybe_done = maybe_done


@dataclass
class _Prepared:
    """A request as the API gets it (``body``), and what reading its answer needs."""

    body: dict[str, Any]
    thinking: bool
    prefill_tail: str


class _LoopState:
    """The SDK client and the call limit, bound to one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, client: Any, limit: int):
        self.loop = loop
        self.client = client
        self.calls = asyncio.Semaphore(limit)


class _SharedHeads:
    """Finds the part of a first user turn that other calls share, so that it can be cached alone.

    A judge's (or a method's) prompt starts with the scenario's specs and rules and ends with the
    sample's request and answer, all in one user turn; Anthropic caches only up to a block boundary.
    Turns are grouped by the system prompt and their first line; once two turns of a group share a
    head of :data:`MIN_SHARED_HEAD` characters or more ending in a blank line, the turns that start
    with it are sent as two text blocks, the head (with a breakpoint) and the rest. The text is the
    same; the first turn of a group is sent whole. Groups are few (a scenario each); the oldest are
    forgotten past ``limit``.
    """

    def __init__(self, limit: int = 256):
        self.limit = limit
        self._groups: OrderedDict[tuple[str, str], tuple[str, bool]] = OrderedDict()

    def cut(self, system: str, text: str) -> int:
        """Where ``text`` splits into its shared head and the rest; 0: it does not."""
        key = (system, text.partition("\n")[0])
        known = self._groups.get(key)
        if known is None:
            self._groups[key] = (text, False)
            while len(self._groups) > self.limit:
                self._groups.popitem(last=False)
            return 0
        self._groups.move_to_end(key)
        reference, learned = known
        if learned and text.startswith(reference) and text[len(reference) :].strip():
            return len(reference)
        head = _paragraph_head(reference, text)
        if len(head) < MIN_SHARED_HEAD or not text[len(head) :].strip():
            return 0
        self._groups[key] = (head, True)
        return len(head)


def _paragraph_head(a: str, b: str) -> str:
    """The longest common start of ``a`` and ``b`` that ends with a blank line (``\\n\\n``)."""
    n = len(os.path.commonprefix([a, b]))
    end = a.rfind("\n\n", 0, n)
    return a[: end + 2] if end >= 0 else ""


class AnthropicBackend(ModelBackend, BatchCapable):
    """Claude through the Messages API (``anthropic:MODEL[@BASE_URL]``, ``backend: anthropic``).

    One base URL: the spec's, else ``$ANTHROPIC_BASE_URL``, else https://api.anthropic.com (a trailing
    ``/v1`` is dropped: the SDK adds it). The key comes from ``$ANTHROPIC_API_KEY`` or the entry's
    ``api_key_env``; a server other than Anthropic's may need none. See the module docstring for what
    is sent and how the answer is read; batch results are read exactly as an online answer.
    """

    kind = "anthropic"
    supports_json_schema = True
    supports_prefill = True
    writes_inline_thought = False  # thinking comes in its own blocks
    max_batch_requests = 100_000

    def __init__(self, settings: ModelSettings):
        if importlib.util.find_spec("anthropic") is None:
            raise ModelUnavailable(f"the anthropic backend needs the 'anthropic' package: {INSTALL_HINT}")
        urls = settings.base_urls or [os.environ.get(BASE_URL_ENV, "").strip() or DEFAULT_BASE_URL]
        if len(urls) != 1:
            raise ConfigError(f"the anthropic backend takes one base URL, not {len(urls)}", field="model")
        _check_urls(urls, "model" if settings.base_urls else BASE_URL_ENV)
        url = urls[0].rstrip("/")
        self.settings = settings
        self.backoff_scale = 1.0
        self._url = url[:-3] if url.endswith("/v1") else url
        self._shown = redact_url(self._url)
        self._key_env = settings.api_key_env or KEY_ENV
        self._api_key = _resolve_key(self._key_env, self._url)
        secrets = url_secrets(self._url) + ([self._api_key] if self._api_key != PLACEHOLDER_KEY else [])
        self._scrub = Scrubber(secrets)
        self._heads = _SharedHeads()
        self._limiter = limiter_for(settings)
        self._state: _LoopState | None = None
        if _thinking_on({**settings.extra_body, **settings.params}.get("thinking")):
            # every call thinks, and the API refuses a prefill then: methods take their no-prefill path
            self.__dict__["supports_prefill"] = False

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.settings.model_name, "base_url": self._shown}

    async def chat(self, request: ChatRequest) -> Completion:
        prepared = self._prepare(request)
        kwargs = _create_kwargs(prepared.body, self.settings.timeout)

        async def call(client: Any) -> Completion:
            permit = await self._limiter.acquire(kwargs)  # requests and tokens per minute (_ratelimit.py)
            try:
                message = await client.messages.create(**kwargs)
            except BaseException as err:
                self._limiter.failed(permit, err)
                raise
            completion = self._completion(message, thinking=prepared.thinking, prefill_tail=prepared.prefill_tail)
            self._limiter.answered(permit, completion.usage)
            return completion

        return await self._with_retries("chat call", call)

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Delta | Completion, None]:
        """:meth:`chat` as a server-sent-event stream (``stream: true``): deltas as they arrive.

        Thinking deltas are thought pieces (the opening marker with the first, the closing one with the
        first answer piece); text deltas are answer pieces, held back while a prefill's trimmed whitespace
        may still come back, and all of it with a JSON schema (the tool's input, re-encoded, is the answer).
        The final :class:`Completion` is read from the streamed blocks exactly as :meth:`chat` reads a
        message. Retried as :meth:`chat` is until the first piece has been yielded; a failure after that is
        final (a :class:`ModelError`), since what was yielded cannot be taken back.
        """
        prepared = self._prepare(request)
        kwargs = _create_kwargs(prepared.body, self.settings.timeout)
        attempts = self.settings.max_retries + 1
        last, final = "", _Retry("no attempt made")
        state = self._loop_state()
        try:
            for attempt in range(attempts):
                joiner = _StreamReader(self.settings.thought_start, self.settings.thought_end, prepared)
                try:
                    async with state.calls:  # held for the attempt only, not the backoff
                        async with aclosing(self._stream_attempt(state.client, kwargs, prepared, joiner)) as deltas:
                            async for delta in deltas:
                                yield delta
                    completion = joiner.completion
                    if completion is None:  # the attempt ended without one: never, but never yield a None
                        raise _Retry("malformed response: the stream held no message", kind="malformed")
                except _Retry as r:
                    if joiner.yielded:
                        raise ModelError(
                            self._scrub(f"the stream from {self._shown} broke off: {r.reason}"),
                            kind=r.kind,
                            status=r.status,
                        ) from None
                    last, final = self._scrub(r.reason), r
                    log.debug("stream attempt %d at %s failed: %s", attempt + 1, self._shown, last)
                    if attempt + 1 < attempts:
                        await _sleep(self._delay(attempt, r.delay))
                    continue
                for delta in joiner.rest(completion):
                    yield delta
                yield completion
                return
        except SpecalignError as e:
            e.args = tuple(self._scrub(a) if isinstance(a, str) else a for a in e.args)
            raise
        tries = f"{attempts} attempt{'s' if attempts > 1 else ''}"
        raise ModelError(
            self._scrub(
                f"chat call to {self._shown} (model {self.settings.model_name!r}) failed after {tries}: {last}"
            ),
            kind=final.kind,
            status=final.status,
        )

    async def _stream_attempt(
        self, client: Any, kwargs: dict[str, Any], prepared: _Prepared, joiner: _StreamReader
    ) -> AsyncGenerator[Delta, None]:
        permit = await self._limiter.acquire(kwargs)
        events = None
        try:
            events = await client.messages.create(**kwargs, stream=True)
            async for event in events:
                for delta in joiner.add(event):
                    joiner.yielded = True
                    yield delta
            joiner.check_whole()
            joiner.completion = self._completion(
                joiner.message(), thinking=prepared.thinking, prefill_tail=prepared.prefill_tail
            )
        except BaseException as err:
            self._limiter.failed(permit, err)
            if not isinstance(err, Exception) or isinstance(err, (_Retry, SpecalignError)):
                raise
            failure = self._stream_failure(err)
            if failure is err:
                raise
            raise failure from err
        finally:
            if events is not None:
                try:
                    await events.close()
                except Exception:  # noqa: BLE001  (closing is best effort)
                    pass
        self._limiter.answered(permit, joiner.completion.usage)

    def _stream_failure(self, err: Exception) -> Exception:
        """:meth:`_classify`, plus an ``error`` event inside the stream (sent with the 200 status)."""
        import anthropic  # noqa: PLC0415

        if isinstance(err, anthropic.APIStatusError) and err.status_code < 300:
            etype, message = _error_fields(err)
            said = f"error event in the stream: {etype or 'error'}: {self._scrub(message)}"
            if etype in RETRYABLE_ERRORS or not etype:
                return _Retry(said, kind="status", status=ERROR_STATUS.get(etype))
            return ModelError(
                f"{self._shown} rejected the request ({said})", kind="rejected", status=ERROR_STATUS.get(etype)
            )
        if isinstance(err, (ValueError, TypeError, AttributeError, KeyError)) and not isinstance(
            err, _transport_errors()
        ):
            return _Retry(f"malformed stream event ({type(err).__name__})", kind="malformed")
        return self._classify(err, batch=False)

    async def warm(self) -> None:
        self._loop_state()

    async def aclose(self) -> None:
        state, self._state = self._state, None
        if state is None or state.loop is not asyncio.get_running_loop():
            return
        try:
            await state.client.close()
        except Exception:  # noqa: BLE001  (closing is best effort)
            pass

    # -- Message Batches --------------------------------------------------------------------

    async def submit_batch(self, requests: list[BatchRequest]) -> str:
        if not requests:
            raise ConfigError("a batch needs at least one request", field="batch")
        if len(requests) > self.max_batch_requests:
            raise ConfigError(
                f"a batch holds at most {self.max_batch_requests} requests, not {len(requests)}", field="batch"
            )
        seen: set[str] = set()
        for r in requests:
            if not CUSTOM_ID.fullmatch(r.custom_id):
                raise ConfigError(
                    f"custom_id {r.custom_id!r}: Anthropic takes 1 to 64 letters, digits, '_' or '-'", field="batch"
                )
            if r.custom_id in seen:
                raise ConfigError(f"custom_id {r.custom_id!r} is given twice", field="batch")
            seen.add(r.custom_id)
        payload = [{"custom_id": r.custom_id, "params": self._prepare(r.request).body} for r in requests]

        async def call(client: Any) -> str:
            batch = await client.messages.batches.create(requests=payload, timeout=self.settings.timeout)
            batch_id = _get(batch, "id")
            if not isinstance(batch_id, str) or not batch_id:
                raise _Retry("malformed response: a batch without an id", kind="malformed", maybe_done=True)
            return batch_id

        # never sent twice when the first may have made a batch: a duplicate would run (and bill) every request again
        return await self._with_retries("batch submission", call, batch=True, once=True)

    async def batch_status(self, batch_id: str) -> BatchState:
        _check_batch_id(batch_id)

        async def call(client: Any) -> BatchState:
            return _batch_state(await client.messages.batches.retrieve(batch_id, timeout=self.settings.timeout))

        return await self._with_retries(f"status of batch {batch_id}", call, batch=True)

    async def batch_results(self, batch_id: str) -> dict[str, Completion | BatchItemError]:
        state = await self.batch_status(batch_id)
        if not state.ended:
            raise ModelError(
                self._scrub(f"batch {batch_id} has not ended ({state.status}): no results yet"), kind="not_ended"
            )
        # from this base URL, never from a results_url host the response names: the key goes nowhere else
        path = f"/v1/messages/batches/{quote(batch_id, safe='')}/results"
        options = {"headers": {"Accept": "application/binary"}, "timeout": self.settings.timeout}

        async def call(client: Any) -> bytes:
            return await client.get(path, cast_to=bytes, options=options)

        data = await self._with_retries(f"results of batch {batch_id}", call, batch=True)
        return self._results(data)

    async def cancel_batch(self, batch_id: str) -> None:
        _check_batch_id(batch_id)

        async def call(client: Any) -> None:
            await client.messages.batches.cancel(batch_id, timeout=self.settings.timeout)

        await self._with_retries(f"cancelling batch {batch_id}", call, batch=True)

    def _results(self, data: bytes) -> dict[str, Completion | BatchItemError]:
        """Each line of a results file, by ``custom_id``: the answer, or why there is none."""
        out: dict[str, Completion | BatchItemError] = {}
        unreadable = 0
        for line in data.splitlines():
            if not line.strip():
                continue
            try:
                item = json.loads(line.decode("utf-8", "replace"))
            except ValueError:
                unreadable += 1
                continue
            custom_id = _get(item, "custom_id")
            if not isinstance(custom_id, str) or not custom_id:
                unreadable += 1
                continue
            if custom_id in out:
                log.warning("batch results name %r twice; the first is kept", repair_text(custom_id)[0])
                continue
            out[repair_text(custom_id)[0]] = self._result(_get(item, "result"))
        if unreadable:
            log.warning("%d line(s) of the batch results could not be read", unreadable)
        return out

    def _result(self, result: Any) -> Completion | BatchItemError:
        kind = _get(result, "type")
        if kind == "succeeded":
            try:
                return self._completion(_get(result, "message"), thinking=False, prefill_tail="")
            except _Retry as r:
                return BatchItemError(message=self._scrub(r.reason), kind="malformed", retryable=True)
        if kind == "errored":
            error = _get(_get(result, "error"), "error")
            etype, message = _get(error, "type"), _get(error, "message")
            etype = etype if isinstance(etype, str) and etype else "error"
            text = _one_line(repair_text(message)[0]) if isinstance(message, str) else "no message"
            return BatchItemError(
                message=self._scrub(f"{etype}: {text}"),
                kind=etype,
                status=ERROR_STATUS.get(etype),
                retryable=etype in RETRYABLE_ERRORS,
            )
        if kind == "canceled":
            return BatchItemError(message="the batch was cancelled before this request ran", kind="cancelled")
        if kind == "expired":
            return BatchItemError(message="the batch expired before this request ran", kind="expired")
        shown = _one_line(repair_text(str(kind))[0], 60)
        return BatchItemError(message=self._scrub(f"unknown result type {shown!r}"), kind="unknown")

    # -- the request ------------------------------------------------------------------------

    def _prepare(self, request: ChatRequest) -> _Prepared:
        params = {k: v for k, v in request.params.items() if v is not None}
        limit = params.pop("max_tokens", None)
        other_limit = params.pop("max_completion_tokens", None)
        limit = limit if limit is not None else other_limit
        stop = params.pop("stop", None)
        for name in OPENAI_ONLY:
            params.pop(name, None)
        body: dict[str, Any] = {**request.extra_body, **params}
        thinking = body.get("thinking")
        thinking_on = _thinking_on(thinking)
        if request.continue_final and thinking_on:
            raise CapabilityError(
                f"model {self.settings.key!r}: Anthropic's API refuses an assistant prefill while extended "
                f"thinking is on; turn 'thinking' off for this model, or use a method that needs no prefill",
                field="model",
            )
        if thinking_on:
            for name in ("temperature", "top_k"):
                body.pop(name, None)
        if stop and "stop_sequences" not in body:
            body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        body["max_tokens"] = int(limit) if limit is not None else _default_max_tokens(thinking)
        system, messages, tail = self._messages(request)
        if system:
            body["system"] = system
        body["messages"] = messages
        body["model"] = self.settings.model_name
        if request.json_schema is not None:
            body["tools"] = [{"name": TOOL_NAME, "description": TOOL_DESCRIPTION, "input_schema": request.json_schema}]
            body["tool_choice"] = {"type": "auto"} if thinking_on else {"type": "tool", "name": TOOL_NAME}
        return _Prepared(body=body, thinking=thinking_on, prefill_tail=tail)

    def _messages(self, request: ChatRequest) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
        """The system blocks, the turns, and the whitespace trimmed off a prefill's end."""
        systems = [repair_text(m.content)[0] for m in request.messages if m.role == "system"]
        systems = [s for s in systems if s.strip()]
        turns = [(m.role, repair_text(m.content)[0]) for m in request.messages if m.role != "system"]
        prefill, tail = None, ""
        if request.continue_final and turns and turns[-1][0] == "assistant":
            prefix = turns.pop()[1]
            prefill = prefix.rstrip()
            tail = prefix[len(prefill) :]
        turns = [(role, text) for role, text in turns if text.strip()]
        blocks: list[list[dict[str, Any]]] = [[{"type": "text", "text": text}] for _, text in turns]
        first_user = next((i for i, (role, _) in enumerate(turns) if role == "user"), None)
        if first_user is not None:
            text = turns[first_user][1]
            cut = self._heads.cut("\n\n".join(systems), text)
            if cut:
                head = {"type": "text", "text": text[:cut], "cache_control": dict(EPHEMERAL)}
                blocks[first_user] = [head, {"type": "text", "text": text[cut:]}]
        before_final = len(turns) - 1 if prefill else len(turns) - 2
        if before_final >= 0:
            blocks[before_final][-1]["cache_control"] = dict(EPHEMERAL)
        messages = [
            {"role": role, "content": b[0]["text"] if len(b) == 1 and "cache_control" not in b[0] else b}
            for (role, _), b in zip(turns, blocks, strict=True)
        ]
        if prefill:
            messages.append({"role": "assistant", "content": prefill})
        system: list[dict[str, Any]] = [{"type": "text", "text": s} for s in systems]
        if system:
            system[-1]["cache_control"] = dict(EPHEMERAL)
        return system, messages, tail

    # -- the answer -------------------------------------------------------------------------

    def _completion(self, message: Any, *, thinking: bool, prefill_tail: str) -> Completion:
        """A message (the SDK's object, or its JSON in a batch's results) as a :class:`Completion`.

        Thinking blocks make the thought; text blocks the answer, unless the model called
        :data:`TOOL_NAME`: then its input, as JSON, is the answer (two calls: both, one per line, which
        no JSON reader takes for one answer). Other blocks (server tools) are not ours and are ignored.
        """
        content = _get(message, "content")
        if not isinstance(content, list):
            raise _Retry("malformed response: a message without a content list", kind="malformed")
        thoughts: list[str] = []
        texts: list[str] = []
        tool_inputs: list[Any] = []
        redacted = False
        for block in content:
            kind = _get(block, "type")
            if kind == "thinking":
                value = _get(block, "thinking")
                if isinstance(value, str) and value:
                    thoughts.append(value)
            elif kind == "redacted_thinking":
                redacted = True
            elif kind == "text":
                value = _get(block, "text")
                if isinstance(value, str):
                    texts.append(value)
            elif kind == "tool_use" and _get(block, "name") == TOOL_NAME:
                tool_inputs.append(_get(block, "input"))
        if tool_inputs:
            answer = "\n".join(json.dumps(value, ensure_ascii=False) for value in tool_inputs)
        else:
            answer = "".join(texts)
        answer, repaired = repair_text(answer)
        thought, repaired_thought = repair_text("\n\n".join(thoughts))
        if prefill_tail and answer.startswith(prefill_tail):
            answer = answer[len(prefill_tail) :]
        start, end = self.settings.thought_start, self.settings.thought_end
        text = f"{start}{thought}{end}{answer}" if thought else answer
        knows_start = bool(thought) or redacted or thinking or bool(tool_inputs)
        flags = [REPAIRED] if repaired or repaired_thought else []
        if redacted:
            flags.append(THINKING_REDACTED)
        usage = _get(message, "usage")
        uncached = _int(_get(usage, "input_tokens"))
        written = _int(_get(usage, "cache_creation_input_tokens"))
        read = _int(_get(usage, "cache_read_input_tokens"))
        stop_reason = _get(message, "stop_reason")
        return Completion(
            text=text,
            answer_start=len(text) - len(answer) if knows_start else None,
            flags=flags,
            usage=Usage(
                prompt_tokens=uncached + written + read,
                completion_tokens=_int(_get(usage, "output_tokens")),
                cached_prompt_tokens=read,
            ),
            finish_reason=FINISH_REASONS.get(stop_reason, stop_reason) if isinstance(stop_reason, str) else None,
        )

    # -- calls, retries, errors -------------------------------------------------------------

    async def _with_retries(
        self, what: str, call: Callable[[Any], Awaitable[T]], *, batch: bool = False, once: bool = False
    ) -> T:
        """``call(client)`` with bounded retries; every error that leaves is scrubbed of secrets.

        ``once``: not retried after a failure that the server may have carried out (a timeout, a lost or
        unreadable answer); only after those it certainly did not (an error status, no connection).
        """
        attempts = self.settings.max_retries + 1
        last, final = "", _Retry("no attempt made")
        state = self._loop_state()
        try:
            for attempt in range(attempts):
                try:
                    async with state.calls:  # held for the attempt only, not the backoff
                        try:
                            return await call(state.client)
                        except (_Retry, SpecalignError):
                            raise
                        except Exception as err:  # noqa: BLE001  (sorted into retry / fail below)
                            failure = self._classify(err, batch=batch)
                            if failure is err:
                                raise
                            raise failure from err
                except _Retry as r:
                    last, final = self._scrub(r.reason), r
                    log.debug("%s attempt %d at %s failed: %s", what, attempt + 1, self._shown, last)
                    if once and r.maybe_done:
                        raise ModelError(
                            f"{what} to {self._shown} failed ({last}); it may have been carried out, so it is "
                            f"not sent again",
                            kind=r.kind,
                            status=r.status,
                        ) from None
                    if attempt + 1 < attempts:
                        await _sleep(self._delay(attempt, r.delay))
        except SpecalignError as e:
            e.args = tuple(self._scrub(a) if isinstance(a, str) else a for a in e.args)
            raise
        tries = f"{attempts} attempt{'s' if attempts > 1 else ''}"
        raise ModelError(
            self._scrub(f"{what} to {self._shown} (model {self.settings.model_name!r}) failed after {tries}: {last}"),
            kind=final.kind,
            status=final.status,
        )

    def _classify(self, err: Exception, *, batch: bool) -> Exception:
        """An SDK or transport error as ``_Retry``, or as the final error to raise."""
        import anthropic  # noqa: PLC0415

        if isinstance(err, anthropic.APIStatusError):
            return self._status_error(err, batch=batch)
        cause = err.__cause__ or err
        unsent = isinstance(cause, _unsent_errors())  # no connection: the request never reached the server
        if isinstance(err, anthropic.APITimeoutError):
            return _Retry(
                f"no answer within the {self.settings.timeout:g} s timeout", kind="timeout", maybe_done=not unsent
            )
        if isinstance(err, anthropic.APIConnectionError):
            detail = _one_line(str(cause)) or "no detail"
            reason = f"connection error ({type(cause).__name__}: {detail})"
            return _Retry(reason, kind="connection", maybe_done=not unsent)
        if isinstance(err, anthropic.APIResponseValidationError):
            reason = "malformed response: the body does not match the API's shape"
            return _Retry(reason, kind="malformed", maybe_done=True)
        if isinstance(err, _transport_errors()):
            reason = f"broken response ({type(err).__name__}: {_one_line(str(err))})"
            return _Retry(reason, kind="connection", maybe_done=True)
        return err

    def _status_error(self, err: Any, *, batch: bool) -> Exception:
        status, url = err.status_code, self._shown
        etype, message = _error_fields(err)
        message = self._scrub(message)
        said = f"HTTP {status}{f' {etype}' if etype else ''}: {message}"
        if status in (401, 403):
            return ModelAccessError(
                f"authentication failed for {url} ({said}): check the {self._key_env} environment variable",
                kind="auth",
                status=status,
            )
        if status == 404 and batch:
            return ModelError(f"not found at {url} ({said})", kind="not_found", status=status)
        if status == 404:
            return ModelAccessError(
                f"model {self.settings.model_name!r} not found at {url} ({said})", kind="not_found", status=status
            )
        if status == 402 or etype == "billing_error":
            return ModelAccessError(f"billing refused at {url} ({said})", kind="quota", status=status)
        headers = err.response.headers
        retry = status in RETRYABLE_STATUS or status >= 500
        should = str(headers.get("x-should-retry", "")).lower()
        if should in ("true", "false"):
            retry = should == "true"
        if not retry:
            return ModelError(f"{url} rejected the request ({said})", kind="rejected", status=status)
        delay = retry_after(headers)
        if delay is not None and delay > MAX_RETRY_AFTER:
            return ModelAccessError(
                f"{url} asks to wait {delay:.0f} s before retrying ({said}); treating it as an exhausted quota",
                kind="quota",
                status=status,
            )
        return _Retry(said, delay, status=status)

    def _delay(self, attempt: int, server_delay: float | None) -> float:
        if server_delay is not None:
            base = server_delay
        else:
            base = min(MAX_BACKOFF, 0.5 * 2**attempt) * (1 - 0.25 * random.random())
        return max(0.0, base * self.backoff_scale)

    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        if self._state is None or self._state.loop is not loop:
            from anthropic import AsyncAnthropic  # noqa: PLC0415

            client = AsyncAnthropic(
                api_key=self._api_key, max_retries=0, timeout=self.settings.timeout, **_client_url(self._url)
            )
            self._state = _LoopState(loop, client, self.settings.call_limits().model)
        return self._state


# -- helpers ---------------------------------------------------------------------------------

#: ``messages.create`` parameters passed by name; the rest of a body goes in ``extra_body``
_TYPED = ("model", "max_tokens", "messages", "system", "stop_sequences", "thinking", "tools", "tool_choice")


def _create_kwargs(body: dict[str, Any], timeout: float) -> dict[str, Any]:
    """``messages.create`` keyword arguments that send exactly ``body``."""
    kwargs = {k: body[k] for k in _TYPED if k in body}
    extra = {k: v for k, v in body.items() if k not in _TYPED}
    return {**kwargs, "extra_body": extra or None, "timeout": timeout}


class _StreamReader:
    """The events of a streamed message (``message_start``, ``content_block_start`` / ``_delta`` / ``_stop``,
    ``message_delta``, ``message_stop``) put back together as the message :meth:`AnthropicBackend.chat`
    gets, and the pieces of its text that are certain already.

    :meth:`add` returns only text that the final completion will start with: the closing thought marker
    waits for the answer, a prefill's trimmed whitespace waits until it is clear whether the model writes
    it again, and with a JSON schema the answer waits for the end (the tool's input is re-encoded, and
    any text beside it is not the answer). Thinking that arrives after the answer has begun (no real
    server does that) stops the pieces; :meth:`rest` then adds nothing and the completion holds it all.
    """

    def __init__(self, start: str, end: str, prepared: _Prepared):
        self.start, self.end = start, end
        self.hold_answer = "tools" in prepared.body
        self.tail = prepared.prefill_tail
        self.tail_open = bool(self.tail)
        self.held = ""
        self.head: dict[str, Any] | None = None
        self.blocks: dict[int, dict[str, Any]] = {}
        self.json_parts: dict[int, list[str]] = {}
        self.usage: dict[str, Any] = {}
        self.stop_reason: Any = None
        self.stopped = False
        self.thought_open = self.answer_open = self.broken = False
        self.thought_blocks: set[int] = set()
        self.emitted: list[str] = []
        self.yielded = False
        self.completion: Completion | None = None

    def add(self, event: Any) -> list[Delta]:
        kind = _get(event, "type")
        if kind == "message_start":
            message = _get(event, "message")
            self.head = {"id": _get(message, "id")}
            self.usage = _fields(_get(message, "usage"), _USAGE)
        elif kind == "content_block_start":
            block = _fields(_get(event, "content_block"), _BLOCK)
            index = _get(event, "index")
            if not isinstance(index, int) or not isinstance(block.get("type"), str):
                raise _Retry("malformed stream event: a content block without an index or type", kind="malformed")
            self.blocks[index] = block
            for key in ("text", "thinking"):
                if isinstance(block.get(key), str) and block[key]:
                    return self._piece(index, block["type"], block[key])
        elif kind == "content_block_delta":
            index, delta = _get(event, "index"), _get(event, "delta")
            target = self.blocks.get(index) if isinstance(index, int) else None
            if target is None:
                raise _Retry("malformed stream event: a delta for a block never started", kind="malformed")
            dtype = _get(delta, "type")
            if dtype == "text_delta" and target["type"] == "text":
                value = _get(delta, "text")
                if isinstance(value, str) and value:
                    target["text"] = (target.get("text") or "") + value
                    return self._piece(index, "text", value)
            elif dtype == "thinking_delta" and target["type"] == "thinking":
                value = _get(delta, "thinking")
                if isinstance(value, str) and value:
                    target["thinking"] = (target.get("thinking") or "") + value
                    return self._piece(index, "thinking", value)
            elif dtype == "input_json_delta":
                value = _get(delta, "partial_json")
                if isinstance(value, str):
                    self.json_parts.setdefault(index, []).append(value)
            elif dtype == "signature_delta":
                target["signature"] = _get(delta, "signature")
        elif kind == "content_block_stop":
            index = _get(event, "index")
            parts = self.json_parts.pop(index, None) if isinstance(index, int) else None
            if parts is not None and "".join(parts).strip():
                try:
                    self.blocks[index]["input"] = json.loads("".join(parts))
                except ValueError:
                    raise _Retry("malformed response: a tool input that is not JSON", kind="malformed") from None
        elif kind == "message_delta":
            self.stop_reason = _get(_get(event, "delta"), "stop_reason")
            self.usage.update({k: v for k, v in _fields(_get(event, "usage"), _USAGE).items() if v is not None})
        elif kind == "message_stop":
            self.stopped = True
        return []

    def _piece(self, index: int, kind: str, value: str) -> list[Delta]:
        """The new certain text for ``value`` arriving in block ``index`` of ``kind``."""
        if self.broken:
            return []
        value = repair_text(value)[0]
        out: list[Delta] = []
        if kind == "thinking":
            if self.answer_open:
                self.broken = True
                return []
            lead = "" if index in self.thought_blocks else "\n\n" if self.thought_open else self.start
            self.thought_blocks.add(index)
            self.thought_open = True
            out.append(Delta(text=lead + value, thought=True))
        elif kind == "text" and not self.hold_answer:
            if self.tail_open:
                self.held += value
                if len(self.held) < len(self.tail) and self.tail.startswith(self.held):
                    return []
                self.tail_open = False
                value = self.held[len(self.tail) :] if self.held.startswith(self.tail) else self.held
                if not value:
                    return []
            if self.thought_open and not self.answer_open:
                out.append(Delta(text=self.end, thought=True))
            self.answer_open = True
            out.append(Delta(text=value))
        self.emitted += [d.text for d in out]
        return out

    def check_whole(self) -> None:
        if self.head is None:
            raise _Retry("malformed response: the stream held no message_start", kind="malformed")
        if not self.stopped:
            raise _Retry("the stream ended before message_stop", kind="connection")

    def message(self) -> dict[str, Any]:
        """The message the events described, as :meth:`AnthropicBackend._completion` reads one."""
        content = [self.blocks[i] for i in sorted(self.blocks)]
        return {**(self.head or {}), "content": content, "usage": self.usage, "stop_reason": self.stop_reason}

    def rest(self, completion: Completion) -> list[Delta]:
        """What the final text adds to the pieces given: the held-back end of the thought, then of the answer."""
        sent = "".join(self.emitted)
        text = completion.text
        if self.broken or not text.startswith(sent):
            if not self.broken:
                log.debug("streamed pieces are not the start of the final text; the rest is not streamed")
            return []
        at = completion.answer_start
        thought_end = len(sent) if at is None else max(len(sent), min(at, len(text)))
        pieces = [Delta(text=text[len(sent) : thought_end], thought=True), Delta(text=text[thought_end:])]
        return [d for d in pieces if d.text]


_USAGE = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
_BLOCK = ("type", "id", "name", "input", "text", "thinking", "signature", "data")


def _fields(obj: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The named fields of an SDK object (or a dict), None where absent."""
    return {name: _get(obj, name) for name in names}


def _check_batch_id(batch_id: str) -> None:
    """Anthropic's batch ids are ``msgbatch_`` and letters: anything else never reaches a URL path."""
    if not isinstance(batch_id, str) or not BATCH_ID.fullmatch(batch_id):
        shown = repr(batch_id)[:80]
        raise ConfigError(f"{shown} is not a Message Batch id (letters, digits, '_' and '-')", field="batch")


def _thinking_on(thinking: Any) -> bool:
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def _default_max_tokens(thinking: Any) -> int:
    if not _thinking_on(thinking):
        return DEFAULT_MAX_TOKENS
    if thinking.get("type") == "adaptive":
        return ADAPTIVE_MAX_TOKENS
    budget = thinking.get("budget_tokens")
    return DEFAULT_MAX_TOKENS + (budget if isinstance(budget, int) and budget > 0 else 0)


def _resolve_key(env: str, url: str) -> str:
    """The key in ``$env``; a placeholder for a server that is not Anthropic's (a proxy, a test server)."""
    key = api_key_from_env(env)
    if key:
        return key
    if (urlparse(url).hostname or "").endswith("anthropic.com"):
        raise ConfigError(
            f"set the {env} environment variable to call {redact_url(url)} (or name another variable with api_key_env)",
            field="model",
        )
    return PLACEHOLDER_KEY


def _client_url(url: str) -> dict[str, Any]:
    """The SDK client's ``base_url``, with a query string as ``default_query`` (else the SDK would put the
    route after it); a fragment is never sent."""
    base, _, query = url.partition("#")[0].partition("?")
    if not query:
        return {"base_url": base}
    return {"base_url": base, "default_query": dict(parse_qsl(query, keep_blank_values=True))}


def _batch_state(batch: Any) -> BatchState:
    """A Message Batch as a :class:`BatchState`: ``canceling`` is ``cancelling``; an ended batch is
    ``cancelled`` once a cancel was asked, ``expired`` when requests expired, else ``completed``."""
    batch_id, status = _get(batch, "id"), _get(batch, "processing_status")
    counts = _get(batch, "request_counts")
    n = {k: _int(_get(counts, k)) for k in ("processing", "succeeded", "errored", "canceled", "expired")}
    name: BatchStatusName
    if status == "in_progress":
        name = "in_progress"
    elif status == "canceling":
        name = "cancelling"
    elif status == "ended":
        name = "cancelled" if _get(batch, "cancel_initiated_at") else "expired" if n["expired"] else "completed"
    else:
        raise _Retry(f"malformed response: processing_status {str(status)[:40]!r}", kind="malformed")
    if not isinstance(batch_id, str) or not batch_id:
        raise _Retry("malformed response: a batch without an id", kind="malformed")
    return BatchState(id=batch_id, status=name, total=sum(n.values()), completed=n["succeeded"], failed=n["errored"])


def _get(obj: Any, name: str) -> Any:
    """A field of the SDK's objects or of their JSON (batch results), None when absent."""
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _error_fields(err: Any) -> tuple[str, str]:
    """The error's ``type`` and one-line message from Anthropic's ``{"type": "error", "error": {...}}``."""
    body = err.body
    inner = body.get("error") if isinstance(body, dict) else None
    if isinstance(inner, dict):
        etype, message = inner.get("type"), inner.get("message")
        return (
            etype if isinstance(etype, str) else "",
            _one_line(repair_text(message)[0]) if isinstance(message, str) else "",
        )
    if isinstance(body, str) and body.strip():
        return "", _one_line(repair_text(body)[0])
    return "", _one_line(repair_text(str(err.message))[0])


def _transport_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [json.JSONDecodeError, UnicodeDecodeError, OSError, EOFError]
    for name in ("httpx2", "httpx"):
        try:
            errors.append(__import__(name).TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _unsent_errors() -> tuple[type[BaseException], ...]:
    """Transport errors raised before a request was sent (no connection made)."""
    errors: list[type[BaseException]] = [ConnectionRefusedError]
    for name in ("httpx2", "httpx"):
        module = __import__(name) if importlib.util.find_spec(name) else None
        errors += [getattr(module, n) for n in ("ConnectError", "ConnectTimeout") if hasattr(module, n)]
    return tuple(errors)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
