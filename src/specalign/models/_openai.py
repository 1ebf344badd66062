"""Any OpenAI-compatible chat server (OpenAI, vLLM, SGLang, llama.cpp server, DeepSeek, ...)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import random
import re
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from contextlib import aclosing
from typing import Any, TypeVar, get_args
from urllib.parse import parse_qsl, urlparse

from .._secrets import Scrubber, redact_url, url_secrets
from .._unicode import repair_text
from ..errors import ConfigError, ModelAccessError, ModelError, SpecalignError
from ._base import REPAIRED, ChatRequest, Completion, Delta, ModelBackend, Usage
from ._batch import BatchCapable, BatchItemError, BatchRequest, BatchState, BatchStatusName
from ._ratelimit import limiter_for, retry_after
from ._settings import (
    DEFAULT_KEY_ENV,
    PLACEHOLDER_KEY,
    CallLimits,
    ModelSettings,
    resolve_api_key,
    resolve_chat_template,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

#: parameters ``chat.completions.create`` takes by name; any other goes into ``extra_body``.
OPENAI_PARAMS = frozenset(
    {
        "temperature",
        "top_p",
        "max_tokens",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "n",
        "logit_bias",
        "response_format",
        "max_completion_tokens",
        "reasoning_effort",
    }
)
MAX_RETRY_AFTER = 120.0
MAX_BACKOFF = 8.0
RETRYABLE_STATUS = frozenset({408, 409, 429})

#: the backoff sleep; tests replace it (or set ``OpenAIBackend.backoff_scale``).
_sleep = asyncio.sleep


class _Retry(Exception):
    """A failed attempt worth another; ``delay`` is the wait the server asked for, if any."""

    def __init__(self, reason: str, delay: float | None = None, *, kind: str = "status", status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.delay = delay
        self.kind = kind
        self.status = status


#: connections per SDK client: httpx's pool scans every connection on each request, so a high
#: concurrency is spread over several clients (shards) instead of one large pool
CONNECTIONS_PER_CLIENT = 32


class _LoopState:
    """Clients (one or more shards per URL) and the call limits, bound to one event loop.

    ``calls`` holds the model's calls in flight over all its endpoints; ``semaphores[url]`` those at
    one endpoint. The model-wide limit never exceeds the sum of the endpoints' (see ``CallLimits``),
    so a call holding a model-wide slot always finds an endpoint with room.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, clients: dict[str, list[Any]], limits: CallLimits):
        self.loop = loop
        self.clients = clients
        self.urls = list(clients)
        self.calls = asyncio.Semaphore(limits.model)
        self.semaphores = {url: asyncio.Semaphore(limits.per_endpoint) for url in clients}
        self._turn = itertools.count()

    def endpoint(self, turn: int) -> str:
        """The endpoint for a call: the ``turn``-th in round-robin order, or the next one with room."""
        n = len(self.urls)
        for k in range(n):
            url = self.urls[(turn + k) % n]
            if not self.semaphores[url].locked():
                return url
        return self.urls[turn % n]

    def client(self, url: str) -> Any:
        shards = self.clients[url]
        return shards[0] if len(shards) == 1 else shards[next(self._turn) % len(shards)]


class OpenAIBackend(ModelBackend, BatchCapable):
    """Chat completions over HTTP, round-robin over ``settings.base_urls``, with bounded retries.

    Prefill (``continue_final``) is sent as vLLM/SGLang/llama-server understand it
    (``continue_final_message: true, add_generation_prompt: false``), and the answer is the
    continuation alone whether the server echoes the prefix or not (:func:`strip_prefill_echo`).
    Hosted APIs ignore those fields, so prefill is not declared: a model config's ``prefill: true``
    turns it on.

    Credentials stay in the HTTP client: every message this backend raises or logs names an
    endpoint by its redacted URL (:func:`~specalign._secrets.redact_url`) and is scrubbed of the
    API key and the URLs' userinfo and query values in every common encoding
    (:class:`~specalign._secrets.Scrubber`); ``identity()`` holds redacted URLs only.

    Batches (:class:`~specalign.models.BatchCapable`) go through OpenAI's Files and Batch APIs at the
    first base URL, when :meth:`batch_enabled`; a batched request is the same request body as an online
    call, and its answer is parsed by the same code.
    """

    kind = "openai"
    supports_json_schema = True

    def __init__(self, settings: ModelSettings):
        if not settings.base_urls:
            raise ConfigError("an openai backend needs at least one base URL", field="model")
        self.settings = settings
        self.backoff_scale = 1.0
        self._urls = [u.rstrip("/") for u in settings.base_urls]
        self._key_env = settings.api_key_env or DEFAULT_KEY_ENV
        self._api_key = resolve_api_key(self._key_env, self._urls)
        self._shown = {u: redact_url(u) for u in self._urls}
        secrets = [s for u in self._urls for s in url_secrets(u)]
        self._scrub = Scrubber([*secrets, *([self._api_key] if self._api_key != PLACEHOLDER_KEY else [])])
        self._turn = itertools.count()
        self._local = all(_is_local_host(u) for u in self._urls)
        self._template = resolve_chat_template(settings)
        self._state: _LoopState | None = None
        self._limiter = limiter_for(settings)  # requests and tokens per minute (_ratelimit.py)
        if all(urlparse(u).hostname == "api.openai.com" for u in self._urls):
            # OpenAI's own models keep their reasoning out of the content: all of it is answer
            self.__dict__["writes_inline_thought"] = False

    def identity(self) -> dict[str, Any]:
        urls = sorted(redact_url(u) for u in self.settings.base_urls)
        ident = {"kind": self.kind, "model": self.settings.model_name, "base_urls": urls}
        if self._template is not None:
            ident["chat_template_sha256"] = hashlib.sha256(self._template.encode()).hexdigest()[:16]
        return ident

    async def chat(self, request: ChatRequest) -> Completion:
        kwargs = self._create_kwargs(request)
        attempts = self.settings.max_retries + 1
        url, last, final = self._urls[0], "", _Retry("no attempt made")
        state = self._loop_state()
        try:
            for attempt in range(attempts):
                try:
                    async with state.calls:  # a model-wide slot, held for the attempt only (not the backoff)
                        url = state.endpoint(next(self._turn))
                        return await self._attempt(url, kwargs)
                except _Retry as r:
                    last, final = self._scrub(r.reason), r
                    log.debug("attempt %d at %s failed: %s", attempt + 1, self._shown[url], last)
                    if attempt + 1 < attempts:
                        await _sleep(self._delay(attempt, r.delay))
        except SpecalignError as e:  # every message leaving the backend is scrubbed, whoever built it
            e.args = tuple(self._scrub(a) if isinstance(a, str) else a for a in e.args)
            raise
        tries = f"{attempts} attempt{'s' if attempts > 1 else ''}"
        raise ModelError(
            self._scrub(
                f"chat call to {self._shown[url]} (model {self.settings.model_name!r}) failed after {tries}: {last}"
            ),
            kind=final.kind,
            status=final.status,
        )

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Delta | Completion, None]:
        """:meth:`chat` as a server-sent-event stream (``stream_options.include_usage``): deltas as they arrive.

        Retried as :meth:`chat` is until the first piece has been yielded; a failure after that is final
        (a :class:`ModelError`), since what was yielded cannot be taken back.
        """
        kwargs = self._create_kwargs(request)
        attempts = self.settings.max_retries + 1
        url, last, final = self._urls[0], "", _Retry("no attempt made")
        state = self._loop_state()
        try:
            for attempt in range(attempts):
                joiner = _StreamJoiner(self.settings.thought_start, self.settings.thought_end, kwargs)
                try:
                    async with state.calls:
                        url = state.endpoint(next(self._turn))
                        async with aclosing(self._stream_attempt(url, kwargs, joiner)) as deltas:
                            async for delta in deltas:
                                yield delta
                    completion = joiner.completion(self._joined)
                except _Retry as r:
                    if joiner.yielded:
                        raise ModelError(
                            self._scrub(f"the stream from {self._shown[url]} broke off: {r.reason}"),
                            kind=r.kind,
                            status=r.status,
                        ) from None
                    last, final = self._scrub(r.reason), r
                    log.debug("attempt %d at %s failed: %s", attempt + 1, self._shown[url], last)
                    if attempt + 1 < attempts:
                        await _sleep(self._delay(attempt, r.delay))
                    continue
                yield completion
                return
        except SpecalignError as e:
            e.args = tuple(self._scrub(a) if isinstance(a, str) else a for a in e.args)
            raise
        tries = f"{attempts} attempt{'s' if attempts > 1 else ''}"
        raise ModelError(
            self._scrub(
                f"chat call to {self._shown[url]} (model {self.settings.model_name!r}) failed after {tries}: {last}"
            ),
            kind=final.kind,
            status=final.status,
        )

    async def _stream_attempt(
        self, url: str, kwargs: dict[str, Any], joiner: _StreamJoiner
    ) -> AsyncGenerator[Delta, None]:
        state = self._loop_state()
        async with state.semaphores[url]:
            permit = await self._limiter.acquire(kwargs)
            chunks = None
            try:
                chunks = await _open_stream(state.client(url), kwargs, permit.saw)
                async for chunk in chunks:
                    for delta in joiner.add(chunk):
                        joiner.yielded = True
                        yield delta
            except Exception as err:  # noqa: BLE001  (sorted into retry / fail below)
                self._limiter.failed(permit, err)
                failure = self._stream_failure(err, url)
                if failure is err:
                    raise
                raise failure from err
            finally:
                if chunks is not None:
                    try:
                        await chunks.close()
                    except Exception:  # noqa: BLE001  (closing is best effort)
                        pass
            if not joiner.answered:
                raise _Retry("malformed response: the stream held no choices", kind="malformed")
            self._limiter.answered(permit, joiner.usage, permit.headers)

    def _stream_failure(self, err: Exception, url: str) -> Exception:
        """:meth:`_classify`, plus an ``error`` event inside the stream and a chunk of the wrong shape."""
        import openai  # noqa: PLC0415

        if isinstance(err, (openai.APIStatusError, openai.APITimeoutError, openai.APIConnectionError)):
            return self._classify(err, url)
        if isinstance(err, openai.APIError):
            return _Retry(f"error event in the stream: {_one_line(str(err.message))}", kind="status")
        if isinstance(err, (ValueError, TypeError, AttributeError)):
            return _Retry(f"malformed stream chunk ({type(err).__name__})", kind="malformed")
        return self._classify(err, url)

    async def warm(self) -> None:
        self._loop_state()

    async def aclose(self) -> None:
        state, self._state = self._state, None
        if state is None or state.loop is not asyncio.get_running_loop():
            return
        for client in (c for shards in state.clients.values() for c in shards):
            try:
                await client.close()
            except Exception:  # noqa: BLE001  (closing is best effort)
                pass

    # -- one attempt ------------------------------------------------------------------------

    async def _attempt(self, url: str, kwargs: dict[str, Any]) -> Completion:
        state = self._loop_state()
        async with state.semaphores[url]:
            permit = await self._limiter.acquire(kwargs)
            try:
                response = await _post_chat(state.client(url), kwargs, permit.saw)
            except Exception as err:  # noqa: BLE001  (sorted into retry / fail below)
                self._limiter.failed(permit, err)
                failure = self._classify(err, url)
                if failure is err:
                    raise
                raise failure from err
        completion = self._completion(response, kwargs)
        self._limiter.answered(permit, completion.usage, permit.headers)
        return completion

    def _create_kwargs(self, request: ChatRequest) -> dict[str, Any]:
        known = {k: v for k, v in request.params.items() if k in OPENAI_PARAMS}
        other = {k: v for k, v in request.params.items() if k not in OPENAI_PARAMS}
        extra = {**request.extra_body, **other}
        if request.sample_index and known.get("seed") is not None:
            known["seed"] = int(known["seed"]) + request.sample_index  # N samples, N distinct seeds
        if self._template is not None:
            extra["chat_template"] = self._template
        if request.continue_final:  # vLLM / SGLang / llama-server: continue the final assistant message
            extra.update(continue_final_message=True, add_generation_prompt=False)
        if request.json_schema is not None:
            schema = request.json_schema if self._local else portable_schema(request.json_schema)
            known.pop("response_format", None)
            # sent as is through extra_body: as a typed parameter the SDK walks the whole schema on every
            # call (about 1 ms of CPU per judge call for SpecBench's schemas); the request body is the same
            extra["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "verdicts", "schema": schema, "strict": True},
            }
        return {
            "model": self.settings.model_name,
            "messages": [{"role": m.role, "content": repair_text(m.content)[0]} for m in request.messages],
            **known,
            "extra_body": extra or None,
            "timeout": self.settings.timeout,
        }

    def _completion(self, response: Any, kwargs: dict[str, Any]) -> Completion:
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise _Retry("malformed response: no choices", kind="malformed")
        choice = choices[0]
        message = getattr(choice, "message", None)
        content = getattr(message, "content", None) or ""
        if message is None or not isinstance(content, str):
            raise _Retry("malformed response: choice without a text message", kind="malformed")
        content, repaired = repair_text(content)
        reasoning, repaired_reasoning = repair_text(_reasoning(message) or "")
        text, answer_start = self._joined(reasoning, content, kwargs)
        usage = getattr(response, "usage", None)
        details = getattr(usage, "prompt_tokens_details", None)
        return Completion(
            text=text,
            answer_start=answer_start,
            flags=[REPAIRED] if repaired or repaired_reasoning else [],
            usage=Usage(
                prompt_tokens=_int(getattr(usage, "prompt_tokens", 0)),
                completion_tokens=_int(getattr(usage, "completion_tokens", 0)),
                cached_prompt_tokens=_int(getattr(details, "cached_tokens", 0)),
            ),
            finish_reason=_text_or_none(getattr(choice, "finish_reason", None)),
        )

    def _joined(self, reasoning: str, content: str, kwargs: dict[str, Any]) -> tuple[str, int | None]:
        """The text as one string (reasoning in thought markers, then the content) and where its answer begins.

        The answer begins where the server put it: after the reasoning it returned apart, unless the
        echo of a prefill reaches past that point (the server then split at a marker inside the prefix,
        and where the thought ends is left to the method). Without separate reasoning it is unknown.
        """
        start, end = self.settings.thought_start, self.settings.thought_end
        continuing = bool((kwargs.get("extra_body") or {}).get("continue_final_message"))
        if reasoning and continuing:  # the thought is already open in the prefix: no opening marker
            text = reasoning + (f"{end}{content}" if content else "")
        elif reasoning:
            text = f"{start}{reasoning}{end}{content}"
        else:
            text = content
        answer_start = len(text) - len(content) if reasoning and (content or not continuing) else None
        if continuing:
            stripped = strip_prefill_echo(kwargs["messages"][-1]["content"], text, start)
            cut = len(text) - len(stripped)
            text = stripped
            if answer_start is not None:
                answer_start = answer_start - cut if answer_start >= cut else None
        return text, answer_start

    # -- errors -----------------------------------------------------------------------------

    def _classify(self, err: Exception, url: str) -> Exception:
        """Turn an SDK or transport error into ``_Retry``, or a final error to raise."""
        import openai  # noqa: PLC0415

        if isinstance(err, openai.APIStatusError):
            return self._status_error(err, url)
        if isinstance(err, openai.APITimeoutError):
            return _Retry(f"no answer within the {self.settings.timeout:g} s timeout", kind="timeout")
        if isinstance(err, openai.APIConnectionError):
            cause = err.__cause__ or err
            return _Retry(
                f"connection error ({type(cause).__name__}: {_one_line(str(cause)) or 'no detail'})", kind="connection"
            )
        if isinstance(err, openai.APIResponseValidationError):
            return _Retry("malformed response: body does not match the chat.completion shape", kind="malformed")
        if isinstance(err, _transport_errors()):
            return _Retry(f"broken response ({type(err).__name__}: {_one_line(str(err))})", kind="connection")
        return err

    def _status_error(self, err: Any, real_url: str) -> Exception:
        status, message, url = err.status_code, self._scrub(_server_message(err)), self._shown[real_url]
        if status in (401, 403):
            return ModelAccessError(
                f"authentication failed for {url} (HTTP {status}: {message}): "
                f"check the {self._key_env} environment variable",
                kind="auth",
                status=status,
            )
        if status == 404:
            return ModelAccessError(
                f"model {self.settings.model_name!r} not found at {url} ({message}); "
                f"list the served models with GET {url}/models",
                kind="not_found",
                status=status,
            )
        if status == 429 and "insufficient_quota" in (err.code, err.type):
            return ModelAccessError(f"quota exhausted at {url}: {message}", kind="quota", status=status)
        if status in RETRYABLE_STATUS or status >= 500:
            delay = retry_after(err.response.headers)
            if delay is not None and delay > MAX_RETRY_AFTER:
                return ModelAccessError(
                    f"{url} asks to wait {delay:.0f} s before retrying (HTTP {status}: "
                    f"{message}); treating it as an exhausted quota",
                    kind="quota",
                    status=status,
                )
            return _Retry(f"HTTP {status}: {message}", delay, status=status)
        return ModelError(f"{url} rejected the request (HTTP {status}): {message}", kind="rejected", status=status)

    def _delay(self, attempt: int, server_delay: float | None) -> float:
        if server_delay is not None:
            base = server_delay
        else:
            base = min(MAX_BACKOFF, 0.5 * 2**attempt) * (1 - 0.25 * random.random())
        return max(0.0, base * self.backoff_scale)

    # -- batches: OpenAI's Files and Batch APIs ---------------------------------------------

    def batch_enabled(self) -> bool:
        """Whether this endpoint offers batches: the config's ``batch:``, else only api.openai.com does."""
        return offers_batch(self.settings)

    async def submit_batch(self, requests: list[BatchRequest]) -> str:
        """Upload ``requests`` as a JSONL file and create a 24 h batch of it; each line's ``body`` is what
        :meth:`chat` would send. A create whose answer was lost is found again (by a token in the batch's
        metadata) rather than created twice."""
        self._require_batch()
        data = self._batch_file(requests)
        token = uuid.uuid4().hex
        upload = (f"specalign-{token[:12]}.jsonl", data, "application/jsonl")

        async def create_file(client: Any) -> str:
            return self._provider_id(await client.files.create(file=upload, purpose="batch"))

        file_id = await self._control("uploading the batch input file", create_file)

        async def create_batch(client: Any) -> str:
            batch = await client.batches.create(
                input_file_id=file_id,
                endpoint=BATCH_ENDPOINT,
                completion_window="24h",
                metadata={"created_by": "specalign", SUBMISSION_KEY: token},
            )
            return self._batch_state(batch).id

        async def find_batch(client: Any) -> str | None:
            page = await client.batches.list(limit=100)
            for batch in getattr(page, "data", None) or []:
                if (getattr(batch, "metadata", None) or {}).get(SUBMISSION_KEY) == token:
                    return self._batch_state(batch).id
            return None

        return await self._control("creating the batch", create_batch, recover=find_batch)

    async def batch_status(self, batch_id: str) -> BatchState:
        self._require_batch()
        return self._batch_state(await self._retrieve_batch(batch_id))

    async def cancel_batch(self, batch_id: str) -> None:
        """Ask for the batch to be cancelled; a batch that has already ended (or is cancelling) is left as it is."""
        self._require_batch()
        batch_id = _caller_id(batch_id)

        async def cancel(client: Any) -> BatchState:
            return self._batch_state(await client.batches.cancel(batch_id))

        try:
            await self._control(f"cancelling batch {batch_id}", cancel)
        except ModelAccessError:
            raise
        except ModelError as e:
            if e.kind != "rejected":
                raise
            state = await self.batch_status(batch_id)  # refused: fine if it has already ended
            if not (state.ended or state.status == "cancelling"):
                raise

    async def batch_results(self, batch_id: str) -> dict[str, Completion | BatchItemError]:
        """Every request of an ended batch (the lines of its input file), each with its answer or its error.

        A result line is parsed as an online answer is (:meth:`_completion`); a line that cannot be read, a
        request the result files leave out or give twice, and a request the provider never ran are each that
        request's :class:`BatchItemError`, never the whole collection's failure.
        """
        self._require_batch()
        batch = await self._retrieve_batch(batch_id)
        state = self._batch_state(batch)
        if not state.ended:
            raise ModelError(
                f"batch {state.id} is {state.status}: its results can be collected once it has ended", kind="not_ended"
            )
        requests = await self._batch_inputs(self._provider_id(batch, "input_file_id"))
        results: dict[str, Completion | BatchItemError] = {}
        unreadable = 0
        for field in ("output_file_id", "error_file_id"):
            if getattr(batch, field, None):
                raw, response = await self._download(self._provider_id(batch, field))
                unreadable += self._read_results(raw, response, requests, results)
        if state.status == "failed":
            by_line = self._errors_by_line(batch)
            for custom_id, (n, _) in requests.items():
                if custom_id not in results:
                    results[custom_id] = self._failed_batch_item(by_line.get(n), state)
        return {c: results[c] if c in results else _missing_result(state, unreadable) for c in requests}

    def _require_batch(self) -> None:
        if not self.batch_enabled():
            raise ConfigError(batch_refusal(self.settings))

    def _batch_file(self, requests: list[BatchRequest]) -> bytes:
        """The JSONL input file: one ``{custom_id, method, url, body}`` line per request."""
        if not requests:
            raise ValueError("a batch needs at least one request")
        if len(requests) > self.max_batch_requests:
            raise ValueError(f"{len(requests)} requests in one batch; the Batch API takes {self.max_batch_requests}")
        seen: set[str] = set()
        lines = []
        for r in requests:
            if r.custom_id in seen:
                raise ValueError(f"custom_id {r.custom_id!r} appears twice in one batch")
            seen.add(r.custom_id)
            body = _request_body(self._create_kwargs(r.request))
            line = {"custom_id": r.custom_id, "method": "POST", "url": BATCH_ENDPOINT, "body": body}
            lines.append(json.dumps(line, separators=(",", ":"), allow_nan=False))
        data = ("\n".join(lines) + "\n").encode()
        if len(data) > MAX_BATCH_BYTES:
            raise ValueError(f"the batch input file would be {len(data) >> 20} MiB; the Batch API takes 200 MiB")
        return data

    async def _retrieve_batch(self, batch_id: str) -> Any:
        batch_id = _caller_id(batch_id)

        async def retrieve(client: Any) -> Any:
            batch = await client.batches.retrieve(batch_id)
            self._batch_state(batch)  # the shape is checked here, so that a malformed answer is retried
            return batch

        return await self._control(f"reading batch {batch_id}", retrieve)

    async def _download(self, file_id: str) -> tuple[bytes, Any]:
        """A file's bytes and the HTTP response they came in (the SDK parses a chat answer against it)."""

        async def content(client: Any) -> tuple[bytes, Any]:
            got = await client.files.content(file_id)
            return got.content, got.response

        return await self._control(f"downloading file {file_id}", content)

    async def _batch_inputs(self, file_id: str) -> dict[str, tuple[int, dict[str, Any]]]:
        """The batch's requests, in file order: per ``custom_id``, its line number and the call's arguments as
        far as parsing its answer needs them (the messages, and the body standing in for ``extra_body``)."""
        raw, _ = await self._download(file_id)
        requests: dict[str, tuple[int, dict[str, Any]]] = {}
        for n, line in _jsonl(raw):
            custom_id, body = (line.get("custom_id"), line.get("body")) if line is not None else (None, None)
            if isinstance(custom_id, str) and isinstance(body, dict) and custom_id not in requests:
                requests[custom_id] = (n, {"messages": body.get("messages"), "extra_body": body})
        if not requests:
            raise ModelError(
                self._scrub(f"the input file {file_id} of the batch holds no readable request"), kind="malformed"
            )
        return requests

    def _read_results(
        self,
        raw: bytes,
        response: Any,
        requests: dict[str, tuple[int, dict[str, Any]]],
        results: dict[str, Completion | BatchItemError],
    ) -> int:
        """Add the results of one output or error file to ``results``; returns the lines that could not be read."""
        unreadable = 0
        for _, line in _jsonl(raw):
            custom_id = line.get("custom_id") if line is not None else None
            if line is None or not isinstance(custom_id, str):
                unreadable += 1
                continue
            if custom_id not in requests:
                continue  # not a request of this batch
            if custom_id in results:
                results[custom_id] = BatchItemError(
                    message="the batch's result files give this request two results", kind="duplicate"
                )
                continue
            try:
                results[custom_id] = self._result_item(line, response, requests[custom_id][1])
            except Exception as err:  # noqa: BLE001  (a result nothing can read is that request's error)
                results[custom_id] = BatchItemError(
                    message=f"malformed result line ({type(err).__name__})", kind="malformed", status=None
                )
        return unreadable

    def _result_item(self, line: dict[str, Any], response: Any, kwargs: dict[str, Any]) -> Completion | BatchItemError:
        """One result line: ``{custom_id, response: {status_code, body}, error}``."""
        error, answer = line.get("error"), line.get("response")
        if error:  # a failure outside HTTP: expired, cancelled, or the provider's own
            code = self._text(error.get("code")) if isinstance(error, dict) else ""
            message = self._text(error.get("message")) if isinstance(error, dict) else self._text(error)
            kind = NOT_RUN.get(code, code or "error")
            return BatchItemError(message=message or kind, kind=kind[:64], retryable=True)
        if not isinstance(answer, dict) or type(answer.get("status_code")) is not int:
            return BatchItemError(message="malformed result line: neither a response nor an error", kind="malformed")
        status, body = answer["status_code"], answer.get("body")
        if not 200 <= status < 300:
            return self._http_item_error(status, body)
        from openai.types.chat import ChatCompletion  # noqa: PLC0415

        try:
            client = self._loop_state().client(self._urls[0])
            # what the SDK does with an online answer's JSON (``construct`` or strict validation): the same object
            chat = client._process_response_data(data=body, cast_to=ChatCompletion, response=response)
            return self._completion(chat, kwargs)
        except Exception as err:  # noqa: BLE001  (sorted as an online answer's failure would be)
            failure = err if isinstance(err, _Retry) else self._classify(err, self._urls[0])
            if not isinstance(failure, _Retry):
                raise
            return BatchItemError(message=self._scrub(failure.reason), kind=failure.kind, status=status)

    def _http_item_error(self, status: int, body: Any) -> BatchItemError:
        """A request the provider answered with an HTTP error inside the batch: retryable as an online call is."""
        error = body.get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else {}
        message = self._text(error.get("message")) or "no message"
        kind = self._text(error.get("code")) or self._text(error.get("type")) or "http_error"
        retryable = (status >= 500 or status in RETRYABLE_STATUS) and kind != "insufficient_quota"
        return BatchItemError(message=f"HTTP {status}: {message}", kind=kind[:64], status=status, retryable=retryable)

    def _failed_batch_item(self, line_error: str | None, state: BatchState) -> BatchItemError:
        """A request of a batch that failed validation: not retryable when the provider named its line."""
        if line_error is not None:
            return BatchItemError(
                message=f"refused by the batch's validation: {line_error}", kind="batch_failed", retryable=False
            )
        why = "; ".join(state.errors[:3]) or "no reason given"
        return BatchItemError(message=f"the batch failed validation: {why}", kind="batch_failed", retryable=True)

    def _batch_state(self, batch: Any) -> BatchState:
        """A provider's batch object as a :class:`BatchState`; a malformed one is a retryable failure."""
        status: Any = getattr(batch, "status", None)
        if status not in BATCH_STATUSES:
            raise _Retry(f"malformed batch object (status {_one_line(repr(status), 40)})", kind="malformed")
        counts = getattr(batch, "request_counts", None)
        errors = getattr(getattr(batch, "errors", None), "data", None)
        return BatchState(
            id=self._provider_id(batch),
            status=status,
            total=_int(getattr(counts, "total", 0)),
            completed=_int(getattr(counts, "completed", 0)),
            failed=_int(getattr(counts, "failed", 0)),
            errors=[self._text(_describe_error(e)) for e in errors[:20]] if isinstance(errors, list) else [],
        )

    def _errors_by_line(self, batch: Any) -> dict[int, str]:
        """A failed batch's validation errors that name a line of the input file, by line number."""
        errors = getattr(getattr(batch, "errors", None), "data", None)
        by_line: dict[int, str] = {}
        for e in errors if isinstance(errors, list) else []:
            line = getattr(e, "line", None)
            if type(line) is int and line not in by_line:
                by_line[line] = self._text(_describe_error(e))
        return by_line

    def _provider_id(self, obj: Any, attr: str = "id") -> str:
        """``obj.<attr>``, an id of the provider's, checked: ids go into URL paths and run directories."""
        value = getattr(obj, attr, None)
        if not isinstance(value, str) or not _ID.fullmatch(value) or self._scrub(value) != value:
            raise _Retry(f"malformed {attr} in the provider's answer", kind="malformed")
        return value

    def _text(self, value: Any) -> str:
        """Provider text for a message: one line, valid, scrubbed of secrets."""
        return self._scrub(_one_line(repair_text(value)[0])) if isinstance(value, str) else ""

    async def _control(
        self,
        what: str,
        call: Callable[[Any], Awaitable[T]],
        *,
        recover: Callable[[Any], Awaitable[T | None]] | None = None,
    ) -> T:
        """One Files or Batch API call at the first base URL, retried as a chat call is.

        ``recover`` runs before each retry: when it finds what the failed attempt may have done after all
        (its answer lost on the way back), that is the result.
        """
        url = self._urls[0]
        attempts = self.settings.max_retries + 1
        last, final = "", _Retry("no attempt made")
        try:
            for attempt in range(attempts):
                client = self._loop_state().client(url)
                if attempt and recover is not None:
                    try:
                        found = await recover(client)
                    except Exception:  # noqa: BLE001  (a failed look is no answer: try again)
                        found = None
                    if found is not None:
                        return found
                try:
                    return await call(client)
                except Exception as err:  # noqa: BLE001  (sorted into retry / fail below)
                    failure = err if isinstance(err, _Retry) else self._control_failure(err, url, what)
                    if not isinstance(failure, _Retry):
                        if failure is err:
                            raise
                        raise failure from err
                    last, final = self._scrub(failure.reason), failure
                    log.debug("%s at %s: attempt %d failed: %s", what, self._shown[url], attempt + 1, last)
                if attempt + 1 < attempts:
                    await _sleep(self._delay(attempt, final.delay))
        except SpecalignError as e:
            e.args = tuple(self._scrub(a) if isinstance(a, str) else a for a in e.args)
            raise
        tries = f"{attempts} attempt{'s' if attempts > 1 else ''}"
        raise ModelError(
            self._scrub(f"{what} at {self._shown[url]} failed after {tries}: {last}"),
            kind=final.kind,
            status=final.status,
        )

    def _control_failure(self, err: Exception, url: str, what: str) -> Exception:
        """An SDK error of a Files or Batch API call, sorted as a chat call's, worded for what was done."""
        import openai  # noqa: PLC0415

        shown = self._shown[url]
        if isinstance(err, openai.APIStatusError) and err.status_code == 404:
            return ModelAccessError(
                f"{what}: {shown} answered HTTP 404 ({self._scrub(_server_message(err))}); an unknown id, or a "
                f"server without OpenAI's Files and Batch APIs",
                kind="not_found",
                status=404,
            )
        if isinstance(err, openai.APIResponseValidationError):
            return _Retry(f"malformed response to {what}", kind="malformed")
        failure = self._classify(err, url)
        if isinstance(failure, ModelError) and failure.kind == "rejected":
            return ModelError(
                f"{what}: {shown} refused it (HTTP {failure.status}): {self._scrub(_server_message(err))}",
                kind="rejected",
                status=failure.status,
            )
        return failure

    # -- clients ----------------------------------------------------------------------------

    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        if self._state is None or self._state.loop is not loop:
            from openai import AsyncOpenAI  # noqa: PLC0415

            limits = self.settings.call_limits()
            shards = -(-limits.per_endpoint // CONNECTIONS_PER_CLIENT)
            clients = {
                url: [
                    AsyncOpenAI(api_key=self._api_key, max_retries=0, timeout=self.settings.timeout, **_client_url(url))
                    for _ in range(shards)
                ]
                for url in self._urls
            }
            self._state = _LoopState(loop, clients, limits)
        return self._state


_resolve_key = resolve_api_key  # the older name


def _client_url(url: str) -> dict[str, Any]:
    """The SDK client's ``base_url``, and a query string as ``default_query`` (the SDK would append the
    route after the query: ``/v1?key=x`` + ``/chat/completions``); a fragment is never sent. Userinfo
    stays in the URL: httpx sends it as Basic auth, as before."""
    base, _, query = url.partition("#")[0].partition("?")
    if not query:
        return {"base_url": base}
    return {"base_url": base, "default_query": dict(parse_qsl(query, keep_blank_values=True))}


def _reasoning(message: Any) -> str | None:
    """The separate reasoning text some servers return (DeepSeek, vLLM reasoning parsers)."""
    extra = getattr(message, "model_extra", None) or {}
    for name in ("reasoning_content", "reasoning"):
        value = getattr(message, name, None) or extra.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def strip_prefill_echo(prefix: str, text: str, thought_start: str = "<think>") -> str:
    """The continuation alone, whichever way the server answered a prefill.

    vLLM and SGLang (``continue_final_message``) return only the continuation; llama.cpp's
    ``llama-server`` returns the whole assistant message, the prefix followed by the continuation.
    Decided per response: text that starts with the prefix is an echo of it. A reasoning parser may
    have taken the opening thought marker (and the whitespace after it) off the echoed prefix, so the
    prefix without that marker counts too.
    """
    if not prefix:
        return text
    if text.startswith(prefix):
        return text[len(prefix) :]
    if thought_start and prefix.startswith(thought_start):
        inner = prefix[len(thought_start) :]
        for echo in (inner, inner.lstrip()):
            if echo.strip() and text.startswith(echo):
                return text[len(echo) :]
    return text


def _server_message(err: Any) -> str:
    body = err.body
    if isinstance(body, dict) and body.get("message"):
        return _one_line(str(body["message"]))
    if isinstance(body, str) and body.strip():
        return _one_line(body)
    return _one_line(str(err.message))


async def _post_chat(client: Any, kwargs: dict[str, Any], on_headers: Any = None) -> Any:
    """``chat.completions.create(**kwargs)`` without the SDK's per-call walk over the typed parameters
    (about 1 ms of CPU per call): the same request body, headers, errors and parsed ``ChatCompletion``.
    ``on_headers`` gets the response's headers (the raw response, as ``with_raw_response`` asks for it)."""
    from openai._constants import RAW_RESPONSE_HEADER  # noqa: PLC0415
    from openai.types.chat import ChatCompletion  # noqa: PLC0415

    options: dict[str, Any] = {"timeout": kwargs["timeout"]}
    if on_headers is not None:
        options["headers"] = {RAW_RESPONSE_HEADER: "true"}
    response = await client.post(
        "/chat/completions", body=_request_body(kwargs), cast_to=ChatCompletion, options=options
    )
    if on_headers is None:
        return response
    on_headers(response.headers)
    return response.parse()


async def _open_stream(client: Any, kwargs: dict[str, Any], on_headers: Any) -> Any:
    """The SDK's stream of ``chat.completion.chunk`` objects for a chat call made with ``kwargs``."""
    from openai import AsyncStream  # noqa: PLC0415
    from openai.types.chat import ChatCompletionChunk  # noqa: PLC0415

    body = {**_request_body(kwargs), "stream": True, "stream_options": {"include_usage": True}}
    chunks = await client.post(
        "/chat/completions",
        body=body,
        cast_to=ChatCompletionChunk,
        options={"timeout": kwargs["timeout"]},
        stream=True,
        stream_cls=AsyncStream[ChatCompletionChunk],
    )
    on_headers(chunks.response.headers)
    return chunks


class _StreamJoiner:
    """The pieces of a streamed answer put together as :meth:`OpenAIBackend._joined` lays out a whole one.

    Each call to :meth:`add` returns the new text, never anything that a later chunk could change: the
    closing thought marker waits for the content, and a continued turn's text waits until it is clear
    whether the server echoes the prefill (:func:`strip_prefill_echo`). Reasoning that arrives after the
    content has begun (no real server does that) stops the deltas; the completion holds it all.
    """

    def __init__(self, start: str, end: str, kwargs: dict[str, Any]):
        self.start, self.end, self.kwargs = start, end, kwargs
        self.continuing = bool((kwargs.get("extra_body") or {}).get("continue_final_message"))
        self.prefix = kwargs["messages"][-1]["content"] if self.continuing else ""
        self.reasoning: list[str] = []
        self.content: list[str] = []
        self.emitted = ""
        self.cut: int | None = None if self.prefix else 0
        self.broken = False
        self.repaired = False
        self.answered = False
        self.yielded = False
        self.finish: str | None = None
        self.usage = Usage()

    def add(self, chunk: Any) -> list[Delta]:
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            details = getattr(usage, "prompt_tokens_details", None)
            self.usage = Usage(
                prompt_tokens=_int(getattr(usage, "prompt_tokens", 0)),
                completion_tokens=_int(getattr(usage, "completion_tokens", 0)),
                cached_prompt_tokens=_int(getattr(details, "cached_tokens", 0)),
            )
        choices = getattr(chunk, "choices", None) or []
        if not choices:
            return []
        self.answered = True
        choice = choices[0]
        self.finish = _text_or_none(getattr(choice, "finish_reason", None)) or self.finish
        delta = getattr(choice, "delta", None)
        content = getattr(delta, "content", None)
        reasoning = _reasoning(delta) if delta is not None else None
        for value, parts in ((reasoning, self.reasoning), (content, self.content)):
            if isinstance(value, str) and value:
                value, repaired = repair_text(value)
                self.repaired = self.repaired or repaired
                parts.append(value)
        return self._release()

    def _release(self) -> list[Delta]:
        reasoning, content = "".join(self.reasoning), "".join(self.content)
        if reasoning and self.continuing:
            raw = reasoning + (f"{self.end}{content}" if content else "")
        elif reasoning:
            raw = f"{self.start}{reasoning}" + (f"{self.end}{content}" if content else "")
        else:
            raw = content
        if self.cut is None:
            self.cut = _echo_cut(self.prefix, raw, self.start)
            if self.cut is None:
                return []
        text = raw[self.cut :]
        if self.broken or not text.startswith(self.emitted):
            self.broken = True
            return []
        new = text[len(self.emitted) :]
        if not new:
            return []
        answer_at = len(raw) - len(content) - self.cut if reasoning and content else None
        if answer_at is None or answer_at < 0:
            thought_until = len(text) if reasoning and not content else 0
        else:
            thought_until = answer_at
        k = min(len(new), max(0, thought_until - len(self.emitted)))
        self.emitted = text
        return [Delta(text=t, thought=k > 0 and i == 0) for i, t in enumerate((new[:k], new[k:])) if t]

    def completion(self, joined: Callable[[str, str, dict[str, Any]], tuple[str, int | None]]) -> Completion:
        text, answer_start = joined("".join(self.reasoning), "".join(self.content), self.kwargs)
        return Completion(
            text=text,
            answer_start=answer_start,
            flags=[REPAIRED] if self.repaired else [],
            usage=self.usage,
            finish_reason=self.finish,
        )


def _echo_cut(prefix: str, text: str, thought_start: str) -> int | None:
    """How much of ``text`` :func:`strip_prefill_echo` will cut as an echo of ``prefix``; None: not yet known."""
    if not prefix:
        return 0
    if text.startswith(prefix):
        return len(prefix)
    if prefix.startswith(text):
        return None
    if thought_start and prefix.startswith(thought_start):
        inner = prefix[len(thought_start) :]
        for echo in (inner, inner.lstrip()):
            if not echo.strip():
                continue
            if text.startswith(echo):
                return len(echo)
            if echo.startswith(text):
                return None
    return 0


def _request_body(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The JSON body of a chat call made with ``kwargs`` (from ``_create_kwargs``): online or in a batch."""
    body = {k: v for k, v in kwargs.items() if k not in ("extra_body", "timeout") and v is not None}
    body.update(kwargs.get("extra_body") or {})
    return body


def _transport_errors() -> tuple[type[BaseException], ...]:
    # RecursionError: a body nested too deeply to decode (a hostile server) is a failed call, not a crash
    errors: list[type[BaseException]] = [json.JSONDecodeError, UnicodeDecodeError, OSError, EOFError, RecursionError]
    for name in ("httpx2", "httpx"):
        try:
            errors.append(__import__(name).TransportError)
        except (ImportError, AttributeError):
            pass
    try:
        import anyio  # noqa: PLC0415

        errors += [anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError]
    except ImportError:
        pass
    return tuple(errors)


def _text_or_none(value: Any) -> str | None:
    """A server's ``finish_reason`` when it is text; anything else (a number, an object) is dropped."""
    return value if isinstance(value, str) else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: keywords hosted APIs reject in strict structured output; local servers (vLLM, llama.cpp) enforce them
_HOSTED_UNSUPPORTED = ("maxLength", "minLength")


def portable_schema(schema: Any) -> Any:
    """``schema`` without the length limits that hosted strict structured output rejects."""
    if isinstance(schema, dict):
        return {k: portable_schema(v) for k, v in schema.items() if k not in _HOSTED_UNSUPPORTED}
    if isinstance(schema, list):
        return [portable_schema(v) for v in schema]
    return schema


def _is_local_host(url: str) -> bool:
    """Loopback or private-network hosts: a server of the user's own (vLLM, llama.cpp, Ollama)."""
    import ipaddress  # noqa: PLC0415

    host = urlparse(url).hostname or ""
    if host == "localhost" or host.endswith(".local"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return "." not in host  # a bare machine name on the user's network
    return ip.is_loopback or ip.is_private


# -- batches ----------------------------------------------------------------------------------

#: the endpoint a batch is created for, and that each of its lines names
BATCH_ENDPOINT = "/v1/chat/completions"
#: the largest input file the Batch API takes
MAX_BATCH_BYTES = 200 * 1024 * 1024
#: the metadata key of a batch holding its submission's token (to find a batch whose create answer was lost)
SUBMISSION_KEY = "specalign_submission"
BATCH_STATUSES = frozenset(get_args(BatchStatusName))
#: per-request error codes of requests the provider never ran, and the kind of error they become
NOT_RUN = {"batch_expired": "expired", "batch_cancelled": "cancelled"}
#: what a provider's batch and file ids look like; they go into URL paths and run directories
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


def offers_batch(settings: ModelSettings) -> bool:
    """Whether a model's endpoint offers OpenAI's Batch API: its config's ``batch:``, else only api.openai.com."""
    if settings.batch is not None:
        return settings.batch
    host = urlparse(settings.base_urls[0]).hostname if settings.base_urls else None
    return host == "api.openai.com"


def batch_refusal(settings: ModelSettings) -> str:
    """Why a model cannot batch, and how a models config says that it can."""
    where = f"the server at {redact_url(settings.base_urls[0])}" if settings.base_urls else "its server"
    return (
        f"model {settings.key!r} does not offer a batch API (batches are on by default for api.openai.com only). "
        f"If {where} implements OpenAI's Files and Batch APIs (/v1/files, /v1/batches), add 'batch: true' to "
        f"its entry in --models-config"
    )


def _caller_id(value: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ValueError(f"not a batch id: {_one_line(repr(value), 80)}")
    return value


def _jsonl(raw: bytes) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """The lines of a JSONL file, numbered from 1, each an object or None (not UTF-8, not JSON, not an object);
    blank lines are skipped."""
    for n, chunk in enumerate(raw.split(b"\n"), 1):
        if not chunk.strip():
            continue
        try:
            value = json.loads(chunk.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            value = None
        yield n, value if isinstance(value, dict) else None


def _missing_result(state: BatchState, unreadable: int) -> BatchItemError:
    """The error of a request that the batch's result files do not answer."""
    if state.status in ("expired", "cancelled"):
        why = "the batch expired" if state.status == "expired" else "the batch was cancelled"
        return BatchItemError(message=f"not run: {why} first", kind=state.status, retryable=True)
    lost = f" ({unreadable} line{'s' if unreadable != 1 else ''} could not be read)" if unreadable else ""
    return BatchItemError(message=f"the batch's result files hold no result for this request{lost}", kind="missing")


def _describe_error(error: Any) -> str:
    """``line 3: message (code)`` for one of a failed batch's validation errors."""
    line, code, message = (getattr(error, k, None) for k in ("line", "code", "message"))
    text = message if isinstance(message, str) and message else "invalid"
    if isinstance(code, str) and code:
        text += f" ({code})"
    return f"line {line}: {text}" if type(line) is int else text
