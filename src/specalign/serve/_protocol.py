"""The OpenAI chat-completions wire format: reading requests, writing answers, chunks and errors."""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..benchmark import Prompt, Turn

#: sampling parameters passed to the upstream model (each call of the method)
SAMPLING_PARAMS = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "seed",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
        "max_tokens",
        "max_completion_tokens",
    }
)
#: accepted and ignored (bookkeeping fields of the OpenAI API), or checked for a value the gateway supports
TOLERATED = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "service_tier",
        "n",
        "logprobs",
        "top_logprobs",
        "tools",
        "tool_choice",
        "functions",
        "function_call",
        "parallel_tool_calls",
        "response_format",
        "specalign",
    }
)
#: what a client may put under ``extra_body={"specalign": {...}}``
EXTENSION_KEYS = frozenset({"method", "scenario", "include_thought"})
#: the deepest nesting of arrays and objects a request body may have
MAX_JSON_DEPTH = 64
NUMBER_PARAMS = ("temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty")
INTEGER_PARAMS = ("seed", "top_k")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class GatewayError(Exception):
    """A request the gateway answers with an error: HTTP status and an OpenAI-shaped body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # noqa: A002
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


@dataclass
class ChatInput:
    """One chat request, read and checked: the prompt (with its conversation) and what to do with it."""

    model: str
    prompt: Prompt
    params: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    include_usage: bool = False
    include_thought: bool = False
    method: str | None = None
    scenario: str | None = None
    #: what enforcement did (``specalign.enforcement`` in the reply); None when it is off
    enforcement: dict[str, Any] | None = None


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def parse_chat_request(raw: bytes, *, max_tokens_limit: int) -> ChatInput:
    """Read a ``POST /v1/chat/completions`` body, or raise a 400 naming the field at fault."""
    body = load_json(raw)
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    unknown = sorted(k for k in body if k not in TOLERATED and k not in SAMPLING_PARAMS)
    if unknown:
        raise bad_request(
            f"unsupported parameter {clip(unknown[0], 60)!r}", param=clip(unknown[0], 60), code="unsupported_parameter"
        )
    _check_unsupported(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required (a string; see GET /v1/models)", param="model")
    system, history, last = _read_messages(body.get("messages"))
    ext = _extension(body.get("specalign"))
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be true or false", param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object", param="stream_options")
    request_id = new_completion_id()
    prompt = Prompt(
        id=request_id,
        label="unlabeled",
        prompt=last,
        original_prompt=last,
        source="live",
        system=system,
        history=history or None,
    )
    return ChatInput(
        model=model,
        prompt=prompt,
        params=_sampling(body, max_tokens_limit),
        stream=stream,
        include_usage=bool(options.get("include_usage")),
        include_thought=bool(ext.get("include_thought")),
        method=ext.get("method"),
        scenario=ext.get("scenario"),
    )


def load_json(raw: bytes) -> Any:
    """The JSON value of a request body, or a 400: UTF-8 only, nested at most :data:`MAX_JSON_DEPTH`
    levels, finite numbers only (no ``NaN``, ``Infinity``, ``1e999``), no lone UTF-16 surrogates."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise bad_request(f"the body is not valid UTF-8 (byte {e.start})", code="invalid_json") from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise bad_request(
            f"the body nests arrays or objects deeper than {MAX_JSON_DEPTH} levels", code="invalid_json"
        ) from None
    except ValueError as e:
        raise bad_request(f"the body is not valid JSON: {clip(str(e))}", code="invalid_json") from None
    _check_json(value, strings=_SURROGATE_ESCAPE.search(raw) is not None)
    return value


_Path = tuple[Any, ...]  # (parent path, key): built as the walk goes, written out only for an error


def _check_json(value: Any, *, strings: bool) -> None:
    """Depth, finite numbers, and (``strings``: the body escapes surrogates) well-formed strings."""
    stack: list[tuple[Any, _Path, int]] = [(value, (), 0)]
    while stack:
        v, path, depth = stack.pop()
        if isinstance(v, float):
            if not math.isfinite(v):
                raise _bad_value(
                    path,
                    "must be a finite number (NaN, Infinity and out-of-range numbers such as 1e999 are refused)",
                    "invalid_number",
                )
        elif isinstance(v, str):
            if strings and _lone_surrogate(v):
                raise _bad_value(
                    path, "holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape)", "invalid_string"
                )
        elif isinstance(v, (dict, list)):
            if depth >= MAX_JSON_DEPTH:
                raise _bad_value(
                    _top(path), f"nests arrays or objects deeper than {MAX_JSON_DEPTH} levels", "invalid_json"
                )
            items = v.items() if isinstance(v, dict) else enumerate(v)
            for k, x in items:
                if strings and isinstance(k, str) and _lone_surrogate(k):
                    raise _bad_value(path, "has a key with a lone UTF-16 surrogate", "invalid_string")
                stack.append((x, (path, k), depth + 1))


def _top(path: _Path) -> _Path:
    """The path of the top-level field ``path`` is in."""
    while path and path[0]:
        path = path[0]
    return path


def _bad_value(path: _Path, what: str, code: str) -> GatewayError:
    where = _where(path)
    return bad_request(f"'{where}' {what}" if where else f"the body {what}", param=where, code=code)


def _lone_surrogate(s: str) -> bool:
    if s.isascii():
        return False
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _where(path: _Path) -> str | None:
    keys: list[Any] = []
    while path:
        path, key = path
        keys.append(key)
    out = ""
    for key in reversed(keys):
        out += f"[{key}]" if isinstance(key, int) else (f".{clip(key, 60)}" if out else clip(key, 60))
    return out or None


def clip(text: str, limit: int = 200) -> str:
    """``text``, cut to ``limit`` characters (client text quoted in error messages stays short)."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _check_unsupported(body: dict[str, Any]) -> None:
    if body.get("n") not in (None, 1):
        raise bad_request("the gateway returns one choice: 'n' must be 1", param="n")
    if body.get("logprobs"):
        raise bad_request("the gateway does not return logprobs", param="logprobs")
    for name in ("tools", "functions"):
        if body.get(name):
            raise bad_request("the gateway does not support tool calling", param=name)
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
        raise bad_request(
            'the gateway answers in text only: \'response_format\' must be {"type": "text"}', param="response_format"
        )


def _read_messages(messages: Any) -> tuple[str | None, list[Turn], str]:
    """System text (every system/developer message joined), the earlier turns, and the last user turn."""
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty list", param="messages")
    systems: list[str] = []
    turns: list[Turn] = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad_request("each message must be an object", param=where)
        role = m.get("role")
        if m.get("tool_calls") or role in ("tool", "function"):
            raise bad_request("the gateway does not support tool calling", param=where)
        text = _content_text(m.get("content"), f"{where}.content", allow_none=role == "assistant")
        if role in ("system", "developer"):
            systems.append(text)
        elif role in ("user", "assistant"):
            turns.append(Turn(role=role, content=text))
        else:
            raise bad_request(
                f"unknown role {clip(repr(role), 60)} (system, developer, user or assistant)", param=f"{where}.role"
            )
    if not turns or turns[-1].role != "user":
        raise bad_request("the last message must come from the user", param="messages")
    if not turns[-1].content.strip():
        raise bad_request("the last user message is empty", param=f"messages[{len(messages) - 1}].content")
    return ("\n\n".join(systems) or None), turns[:-1], turns[-1].content


def _content_text(content: Any, where: str, *, allow_none: bool) -> str:
    if isinstance(content, str):
        return content
    if content is None and allow_none:
        return ""
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad_request("only text content parts are supported", param=f"{where}[{j}]")
            parts.append(part["text"])
        return "".join(parts)
    raise bad_request("must be a string or a list of text parts", param=where)


def _extension(ext: Any) -> dict[str, Any]:
    if ext is None:
        return {}
    if not isinstance(ext, dict):
        raise bad_request("'specalign' must be an object", param="specalign")
    unknown = sorted(set(ext) - EXTENSION_KEYS)
    if unknown:
        raise bad_request(
            f"unknown key {clip(unknown[0], 60)!r} (have: {', '.join(sorted(EXTENSION_KEYS))})",
            param=f"specalign.{clip(unknown[0], 60)}",
        )
    for key in ("method", "scenario"):
        if ext.get(key) is not None and not isinstance(ext[key], str):
            raise bad_request("must be a string", param=f"specalign.{key}")
    return ext


def _sampling(body: dict[str, Any], limit: int) -> dict[str, Any]:
    params = {k: v for k, v in body.items() if k in SAMPLING_PARAMS and v is not None}
    if "max_completion_tokens" in params:  # the newer name; upstream servers all know max_tokens
        params.setdefault("max_tokens", params["max_completion_tokens"])
        del params["max_completion_tokens"]
    n = params.get("max_tokens")
    if n is not None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise bad_request("'max_tokens' must be a positive integer", param="max_tokens")
        if n > limit:
            raise bad_request(
                f"'max_tokens' is {n}; this gateway allows at most {limit}",
                param="max_tokens",
                code="max_tokens_too_large",
            )
    for name in NUMBER_PARAMS:
        v = params.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise bad_request(f"'{name}' must be a number", param=name)
    for name in INTEGER_PARAMS:
        v = params.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise bad_request(f"'{name}' must be an integer", param=name)
    stop = params.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise bad_request("'stop' must be a string or a list of strings", param="stop")
    return params


# -- answers ------------------------------------------------------------------------------------


@dataclass
class Reply:
    """What the gateway answers one request with, before it is written as JSON or chunks."""

    id: str
    model: str
    content: str
    thought: str | None
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    extension: dict[str, Any]
    created: int = field(default_factory=lambda: int(time.time()))

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def completion(self) -> dict[str, Any]:
        """The ``chat.completion`` object."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.thought is not None:
            message["reasoning_content"] = self.thought
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason, "logprobs": None}],
            "usage": self.usage(),
            "specalign": self.extension,
        }

    def chunks(self, *, include_usage: bool, piece_chars: int = 48) -> list[dict[str, Any]]:
        """The ``chat.completion.chunk`` objects of a streamed answer: role, thought, text, finish, usage."""
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        if self.thought:
            deltas += [{"reasoning_content": p} for p in split_pieces(self.thought, piece_chars)]
        deltas += [{"content": p} for p in split_pieces(self.content, piece_chars)]
        out = [self._chunk(d, None) for d in deltas]
        last = self._chunk({}, self.finish_reason)
        last["specalign"] = self.extension
        out.append(last)
        if include_usage:
            out.append({**self._chunk({}, None), "choices": [], "usage": self.usage()})
        return out

    def _chunk(self, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }


@dataclass
class ChunkWriter:
    """The ``chat.completion.chunk`` events of one answer streamed as it arrives.

    The role comes first, then content deltas as the method's final call produces them; once the
    method is done, the rest of the answer, the thought (when asked for), the chunk with the finish
    reason and the ``specalign`` extension, the usage chunk (``stream_options.include_usage``) and
    ``[DONE]``. A failure after the first event ends the stream with :meth:`error`.
    """

    id: str
    model: str
    created: int = field(default_factory=lambda: int(time.time()))

    def role(self) -> bytes:
        return sse(self._chunk({"role": "assistant", "content": ""}, None))

    def content(self, text: str) -> bytes:
        return sse(self._chunk({"content": text}, None))

    def rest(self, reply: Reply, *, include_usage: bool, piece_chars: int = 48) -> list[bytes]:
        """The events after the live content: ``reply.content`` is what is left of the answer to send."""
        out = [self.content(p) for p in split_pieces(reply.content, piece_chars)]
        if reply.thought:
            out += [sse(self._chunk({"reasoning_content": p}, None)) for p in split_pieces(reply.thought, piece_chars)]
        last = self._chunk({}, reply.finish_reason)
        last["specalign"] = reply.extension
        out.append(sse(last))
        if include_usage:
            out.append(sse({**self._chunk({}, None), "choices": [], "usage": reply.usage()}))
        out.append(sse("[DONE]"))
        return out

    def error(self, err: GatewayError) -> list[bytes]:
        """The end of a stream that failed after its first event: OpenAI's error event, then ``[DONE]``."""
        return [sse(err.body()), sse("[DONE]")]

    def _chunk(self, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }


def split_pieces(text: str, size: int) -> list[str]:
    """``text`` in pieces of about ``size`` characters, cut after whitespace where possible."""
    pieces, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            cut = text.rfind(" ", start + 1, end + 1)
            end = cut + 1 if cut > start else end
        pieces.append(text[start:end])
        start = end
    return pieces


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n".encode()
