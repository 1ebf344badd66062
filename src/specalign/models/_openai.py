"""Any OpenAI-compatible chat server (OpenAI, vLLM, SGLang, llama.cpp server, DeepSeek, ...)."""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import itertools
import json
import logging
import random
import time
from typing import Any
from urllib.parse import parse_qsl, urlparse

from .._secrets import Scrubber, redact_url, url_secrets
from .._unicode import repair_text
from ..errors import ConfigError, ModelAccessError, ModelError, SpecalignError
from ._base import REPAIRED, ChatRequest, Completion, ModelBackend, Usage
from ._settings import (
    DEFAULT_KEY_ENV,
    PLACEHOLDER_KEY,
    CallLimits,
    ModelSettings,
    resolve_api_key,
    resolve_chat_template,
)

log = logging.getLogger(__name__)

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


class OpenAIBackend(ModelBackend):
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
            try:
                response = await _post_chat(state.client(url), kwargs)
            except Exception as err:  # noqa: BLE001  (sorted into retry / fail below)
                failure = self._classify(err, url)
                if failure is err:
                    raise
                raise failure from err
        return self._completion(response, kwargs)

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
            finish_reason=getattr(choice, "finish_reason", None),
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
            delay = _retry_after(err.response.headers)
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


async def _post_chat(client: Any, kwargs: dict[str, Any]) -> Any:
    """``chat.completions.create(**kwargs)`` without the SDK's per-call walk over the typed parameters
    (about 1 ms of CPU per call): the same request body, headers, errors and parsed ``ChatCompletion``."""
    from openai.types.chat import ChatCompletion  # noqa: PLC0415

    body = {k: v for k, v in kwargs.items() if k not in ("extra_body", "timeout") and v is not None}
    body.update(kwargs.get("extra_body") or {})
    return await client.post(
        "/chat/completions", body=body, cast_to=ChatCompletion, options={"timeout": kwargs["timeout"]}
    )


def _retry_after(headers: Any) -> float | None:
    """Seconds the server asked to wait (``retry-after-ms`` or ``retry-after``), if it did."""
    try:
        return max(0.0, float(headers["retry-after-ms"]) / 1000)
    except (KeyError, TypeError, ValueError):
        pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        return None if parsed is None else max(0.0, email.utils.mktime_tz(parsed) - time.time())


def _transport_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [json.JSONDecodeError, UnicodeDecodeError, OSError, EOFError]
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
