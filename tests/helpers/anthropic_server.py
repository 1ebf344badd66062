"""A small, real Anthropic Messages API server for tests (stdlib only), faithful to the protocol.

    with AnthropicServer(lambda body: "hello") as server:
        server.script(Turn.error(529, "Overloaded", type="overloaded_error"), Turn("answer"))
        ...  # call server.base_url ("http://127.0.0.1:PORT"; the SDK adds /v1)

Routes: ``POST /v1/messages`` and the Message Batches API (``POST /v1/messages/batches``,
``GET /v1/messages/batches/{id}``, ``POST .../{id}/cancel``, ``GET .../{id}/results``).

It checks requests as the API does: the ``anthropic-version`` header, the key (``x-api-key``, or
``Authorization: Bearer`` as the SDK sends an api key in its 2.x releases), the body's fields (unknown
top-level fields are refused), roles, empty turns, trailing whitespace in a final assistant turn,
thinking budgets and what thinking forbids (a prefill, a forced tool, ``temperature`` / ``top_k``),
``tool_choice``, and at most four ``cache_control`` breakpoints. Errors have Anthropic's shape
``{"type": "error", "error": {"type", "message"}, "request_id"}``.

Answers are ``message`` objects with content blocks (``thinking``, ``redacted_thinking``, ``text``, or
``tool_use`` when a tool is forced: the reply's ``tool_input``, else its text read as JSON), a
``stop_reason``, and ``usage`` with the cache fields: a prefix up to a ``cache_control`` breakpoint is
written to the cache the first time and read from it afterwards (tokens are whitespace-separated words).

Batches process their requests (with the same checks and responder) once they have been polled
``batch_polls`` times, or at a cancel; ``outcomes[custom_id]`` makes one ``expired``, ``canceled`` or
errored (a :class:`Turn` error), or ``run`` it even when the batch is cancelled; ``create_faults``
answer batch creations (an error, a broken body) before any batch is made.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import traceback
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_MODEL = "claude-test"
KNOWN_FIELDS = {
    "model",
    "messages",
    "max_tokens",
    "system",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "thinking",
    "tools",
    "tool_choice",
    "service_tier",
    "container",
    "cache_control",
    "output_config",
    "inference_geo",
}
CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NO_INPUT = object()


@dataclass
class Turn:
    """What to answer one messages request with.

    ``text`` is the visible answer (``None``: ask the responder). ``thinking`` adds thinking blocks
    before it, ``redacted`` that many ``redacted_thinking`` blocks; ``tool_input`` is the input of the
    ``tool_use`` block sent when the request forces a tool (default: ``text`` read as JSON).
    ``blocks`` replaces the whole content list; ``body`` the whole response (a dict is JSON-encoded,
    str/bytes are sent raw); ``status`` other than 200 sends ``body`` as an error.

    Streamed (``stream: true``), the message goes out as server-sent events, text, thinking and tool
    input in pieces of ``piece`` characters; ``stream_error`` (an error body) is sent as an ``error``
    event after ``stream_fault_after`` deltas, and ``stream_cut`` drops the connection there instead.
    """

    text: str | None = None
    thinking: str | list[str] | None = None
    redacted: int = 0
    tool_input: Any = _NO_INPUT
    stop_reason: str | None = None
    blocks: list[dict[str, Any]] | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | str | bytes | None = None
    piece: int = 3
    stream_error: dict[str, Any] | None = None
    stream_cut: bool = False
    stream_fault_after: int = 0

    @classmethod
    def error(
        cls,
        status: int,
        message: str = "scripted error",
        *,
        type: str = "api_error",
        headers: dict[str, str] | None = None,
    ) -> Turn:
        """An error in Anthropic's shape."""
        return cls(status=status, body=error_body(type, message), headers=dict(headers or {}))


Responder = Callable[[dict[str, Any]], "str | Turn"]


@dataclass
class RecordedRequest:
    """One request as received; ``headers`` keys are lower-cased."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any


class ApiError(Exception):
    def __init__(self, status: int, type_: str, message: str):
        super().__init__(message)
        self.status, self.type, self.message = status, type_, message


def error_body(type_: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "message": message}, "request_id": f"req_{uuid.uuid4().hex[:20]}"}


def words(text: str) -> int:
    return len(text.split())


def flat_text(content: Any) -> str:
    """A message's or the system's text: the string, or its text blocks joined."""
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text")


def openai_view(body: dict[str, Any]) -> dict[str, Any]:
    """The request as an OpenAI chat body (system first, text flattened; ``response_format`` when a
    tool carries a schema), for responders written against that shape (tests/helpers/specbench_world.py)."""
    messages = [{"role": "system", "content": flat_text(body["system"])}] if body.get("system") else []
    messages += [{"role": m["role"], "content": flat_text(m["content"])} for m in body["messages"]]
    view: dict[str, Any] = {"model": body["model"], "messages": messages}
    if body.get("tools"):
        view["response_format"] = {"type": "json_schema", "json_schema": {"schema": body["tools"][0]["input_schema"]}}
    return view


def echo_responder(body: dict[str, Any]) -> str:
    users = [flat_text(m["content"]) for m in body["messages"] if m["role"] == "user"]
    return f"echo: {users[-1] if users else ''}"


class AnthropicServer:
    """The Messages API on 127.0.0.1 (random port), in a background thread."""

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        models: tuple[str, ...] = (DEFAULT_MODEL,),
        api_key: str | None = None,
        min_cache_tokens: int = 1,
        batch_polls: int = 1,
        results_url_base: str | None = None,
    ):
        self.responder = responder or echo_responder
        self.models = tuple(models)
        self.api_key = api_key
        self.min_cache_tokens = min_cache_tokens
        self.batch_polls = batch_polls
        self.results_url_base = results_url_base  # None: this server's own URL
        self.outcomes: dict[str, str | Turn] = {}
        self.create_faults: deque[Turn] = deque()  # answers to batch creations, before any batch is made
        self.requests: list[RecordedRequest] = []
        self.crashes: list[str] = []  # tracebacks of this server's own failures (a test bug)
        self.batches: dict[str, dict[str, Any]] = {}
        self._cache: set[str] = set()
        self._queue: deque[Turn] = deque()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> AnthropicServer:
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.api = self
        self._httpd = httpd
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> AnthropicServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        assert not self.crashes, self.crashes[0]

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # -- scripting and inspection ---------------------------------------------------------

    def script(self, *replies: Turn | str) -> None:
        """Queue replies to messages requests, answered in order before the responder takes over."""
        with self._lock:
            self._queue.extend(r if isinstance(r, Turn) else Turn(r) for r in replies)

    def on(self, path_end: str, method: str = "POST") -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path.split("?")[0].endswith(path_end)]

    @property
    def message_requests(self) -> list[RecordedRequest]:
        return self.on("/v1/messages")

    # -- the Messages API -----------------------------------------------------------------

    def answer(self, body: Any, reply: Turn | None = None) -> tuple[int, dict[str, Any] | str | bytes, dict[str, str]]:
        """(status, body, headers) for one messages request (online, or inside a batch)."""
        return self.answer_turn(body, reply)[:3]

    def answer_turn(
        self, body: Any, reply: Turn | None = None
    ) -> tuple[int, dict[str, Any] | str | bytes, dict[str, str], Turn | None]:
        """:meth:`answer`, and the :class:`Turn` it answered with (None: the request was refused)."""
        try:
            check_request(body, self.models)
        except ApiError as e:
            return e.status, error_body(e.type, e.message), {}, None
        if reply is None:
            with self._lock:
                reply = self._queue.popleft() if self._queue else None
        if reply is None:
            answered = self.responder(body)
            reply = answered if isinstance(answered, Turn) else Turn(str(answered))
        if reply.status != 200 or reply.body is not None:
            return reply.status, reply.body if reply.body is not None else {}, reply.headers, reply
        text = reply.text if reply.text is not None else _responder_text(self.responder, body)
        return 200, self._message(body, text, reply), reply.headers, reply

    def _message(self, body: dict[str, Any], text: str, reply: Turn) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        thoughts = [reply.thinking] if isinstance(reply.thinking, str) else list(reply.thinking or [])
        content += [{"type": "thinking", "thinking": t, "signature": "sig-" + uuid.uuid4().hex[:8]} for t in thoughts]
        content += [{"type": "redacted_thinking", "data": "opaque-" + uuid.uuid4().hex} for _ in range(reply.redacted)]
        choice = body.get("tool_choice") or {}
        stop_reason, stop_sequence = reply.stop_reason or "end_turn", None
        if reply.blocks is not None:
            content = reply.blocks
        elif choice.get("type") == "tool":
            tool_input = json.loads(text) if reply.tool_input is _NO_INPUT else reply.tool_input
            content.append(
                {
                    "type": "tool_use",
                    "id": "toolu_" + uuid.uuid4().hex[:20],
                    "name": choice["name"],
                    "input": tool_input,
                }
            )
            stop_reason = reply.stop_reason or "tool_use"
        else:
            limit = body["max_tokens"]
            for stop in body.get("stop_sequences") or []:
                if stop in text:
                    text, stop_reason, stop_sequence = text[: text.index(stop)], "stop_sequence", stop
            if words(text) > limit:
                text, stop_reason = " ".join(text.split()[:limit]), "max_tokens"
            if text:
                content.append({"type": "text", "text": text})
        written, read, total = self._cache_use(body)
        out_tokens = sum(
            words(json.dumps(b.get("input")) if b["type"] == "tool_use" else b.get("text", "")) for b in content
        )
        out_tokens += sum(words(t) for t in thoughts)
        return {
            "id": "msg_" + uuid.uuid4().hex[:24],
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": {
                "input_tokens": total - written - read,
                "cache_creation_input_tokens": written,
                "cache_read_input_tokens": read,
                "cache_creation": {"ephemeral_5m_input_tokens": written, "ephemeral_1h_input_tokens": 0},
                "output_tokens": out_tokens,
                "service_tier": "standard",
            },
        }

    def _cache_use(self, body: dict[str, Any]) -> tuple[int, int, int]:
        """(tokens written to the cache, read from it, all input tokens) for a request's prefix breakpoints."""
        segments: list[tuple[str, int, bool]] = []  # (what, tokens, breakpoint)
        for tool in body.get("tools") or []:
            segments.append((json.dumps(tool, sort_keys=True), words(json.dumps(tool)), "cache_control" in tool))
        system = body.get("system")
        for block in [{"type": "text", "text": system}] if isinstance(system, str) else system or []:
            segments.append((block["text"], words(block["text"]), "cache_control" in block))
        for m in body["messages"]:
            blocks = [{"type": "text", "text": m["content"]}] if isinstance(m["content"], str) else m["content"]
            for block in blocks:
                text = block.get("text", "")
                segments.append((m["role"] + ":" + text, words(text), "cache_control" in block))
        total = sum(n for _, n, _ in segments)
        keys, tokens, run, digest = [], [], 0, hashlib.sha256()
        for what, n, mark in segments:
            digest.update(what.encode("utf-8", "replace") + b"\x00")
            run += n
            if mark:
                keys.append(digest.copy().hexdigest())
                tokens.append(run)
        with self._lock:
            hit = max((i for i, k in enumerate(keys) if k in self._cache), default=-1)
            read = tokens[hit] if hit >= 0 else 0
            written_to = read
            for i in range(hit + 1, len(keys)):
                if tokens[i] >= self.min_cache_tokens:
                    self._cache.add(keys[i])
                    written_to = tokens[i]
        return written_to - read, read, total

    # -- Message Batches ------------------------------------------------------------------

    def create_batch(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("requests"), list) or not body["requests"]:
            raise ApiError(400, "invalid_request_error", "requests: Field required")
        seen: set[str] = set()
        for i, r in enumerate(body["requests"]):
            cid = r.get("custom_id") if isinstance(r, dict) else None
            if not isinstance(cid, str) or not CUSTOM_ID.fullmatch(cid):
                raise ApiError(400, "invalid_request_error", f"requests.{i}.custom_id: String should match pattern")
            if cid in seen:
                raise ApiError(400, "invalid_request_error", f"requests: custom_id {cid} is not unique")
            if not isinstance(r.get("params"), dict):
                raise ApiError(400, "invalid_request_error", f"requests.{i}.params: Field required")
            seen.add(cid)
        now = datetime.now(timezone.utc)
        batch_id = "msgbatch_" + uuid.uuid4().hex[:24]
        with self._lock:
            self.batches[batch_id] = {
                "requests": body["requests"],
                "created_at": now,
                "polls": 0,
                "status": "in_progress",
                "cancel_initiated_at": None,
                "ended_at": None,
                "results": None,
            }
        return self._batch_json(batch_id)

    def poll_batch(self, batch_id: str) -> dict[str, Any]:
        batch = self._batch(batch_id)
        batch["polls"] += 1
        if batch["status"] == "canceling" or (batch["status"] == "in_progress" and batch["polls"] > self.batch_polls):
            self._end(batch)
        return self._batch_json(batch_id)

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        batch = self._batch(batch_id)
        if batch["status"] == "in_progress":
            batch["status"] = "canceling"
            batch["cancel_initiated_at"] = datetime.now(timezone.utc)
        return self._batch_json(batch_id)

    def batch_results(self, batch_id: str) -> bytes:
        batch = self._batch(batch_id)
        if batch["status"] != "ended":
            raise ApiError(400, "invalid_request_error", f"Message Batch {batch_id} has not ended yet")
        lines = [json.dumps({"custom_id": cid, "result": result}) for cid, result in reversed(batch["results"])]
        return ("\n".join(lines) + "\n").encode()

    def _batch(self, batch_id: str) -> dict[str, Any]:
        batch = self.batches.get(batch_id)
        if batch is None:
            raise ApiError(404, "not_found_error", f"Message Batch {batch_id} not found")
        return batch

    def _end(self, batch: dict[str, Any]) -> None:
        results = []
        for r in batch["requests"]:
            cid, outcome = r["custom_id"], self.outcomes.get(r["custom_id"])
            if outcome in ("expired", "canceled"):
                result: dict[str, Any] = {"type": outcome}
            elif batch["status"] == "canceling" and outcome != "run":
                result = {"type": "canceled"}
            else:
                status, body, _ = self.answer(r["params"], outcome if isinstance(outcome, Turn) else None)
                ok = status == 200 and isinstance(body, dict)
                result = {"type": "succeeded", "message": body} if ok else {"type": "errored", "error": body}
            results.append((cid, result))
        batch.update(status="ended", ended_at=datetime.now(timezone.utc), results=results)

    def _batch_json(self, batch_id: str) -> dict[str, Any]:
        batch = self.batches[batch_id]
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if batch["results"] is None:
            counts["processing"] = len(batch["requests"])
        else:
            for _, result in batch["results"]:
                counts[result["type"]] += 1
        iso = lambda t: t.isoformat().replace("+00:00", "Z") if t else None  # noqa: E731
        ended = batch["status"] == "ended"
        base = self.results_url_base or self.base_url
        return {
            "id": batch_id,
            "type": "message_batch",
            "processing_status": batch["status"],
            "request_counts": counts,
            "created_at": iso(batch["created_at"]),
            "expires_at": iso(batch["created_at"] + timedelta(hours=24)),
            "ended_at": iso(batch["ended_at"]),
            "cancel_initiated_at": iso(batch["cancel_initiated_at"]),
            "archived_at": None,
            "results_url": f"{base}/v1/messages/batches/{batch_id}/results" if ended else None,
        }


def stream_events(message: dict[str, Any], reply: Turn) -> list[tuple[str, dict[str, Any] | None]]:
    """A message as the API streams it: ``(event, data)`` pairs; ``(..., None)`` marks where a scripted
    fault goes (an ``error`` event, or the connection dropped)."""
    n = max(1, reply.piece)

    def cuts(text: str) -> list[str]:
        return [text[i : i + n] for i in range(0, len(text), n)]

    usage = dict(message["usage"])
    head = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 1},
    }
    events: list[tuple[str, dict[str, Any] | None]] = [("message_start", {"type": "message_start", "message": head})]
    events.append(("ping", {"type": "ping"}))
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "text":
            start, deltas = (
                {"type": "text", "text": ""},
                [{"type": "text_delta", "text": t} for t in cuts(block["text"])],
            )
        elif kind == "thinking":
            start = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": t} for t in cuts(block["thinking"])]
            deltas.append({"type": "signature_delta", "signature": block.get("signature", "")})
        elif kind == "tool_use":
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            raw = json.dumps(block["input"], separators=(",", ":"))
            deltas = [{"type": "input_json_delta", "partial_json": t} for t in ["", *cuts(raw)]]
        else:  # redacted_thinking and others: whole in the start event
            start, deltas = block, []
        events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}))
        events += [("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    stop = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    events.append(
        ("message_delta", {"type": "message_delta", "delta": stop, "usage": {"output_tokens": usage["output_tokens"]}})
    )
    events.append(("message_stop", {"type": "message_stop"}))
    if reply.stream_error is not None or reply.stream_cut:
        seen, at = 0, len(events)
        for i, (name, _) in enumerate(events):
            if name == "content_block_delta":
                if seen == reply.stream_fault_after:
                    at = i
                    break
                seen += 1
        events = events[:at] + [("error", None)]
    return events


def _responder_text(responder: Responder, body: dict[str, Any]) -> str:
    answer = responder(body)
    if isinstance(answer, Turn):
        return answer.text if answer.text is not None else echo_responder(body)
    return str(answer)


def check_request(body: Any, models: tuple[str, ...]) -> None:
    """Refuse what the Messages API refuses (the checks this backend could get wrong)."""

    def bad(message: str) -> ApiError:
        return ApiError(400, "invalid_request_error", message)

    if not isinstance(body, dict):
        raise bad("request body must be a JSON object")
    for key in body:
        if key not in KNOWN_FIELDS:
            raise bad(f"{key}: Extra inputs are not permitted")
    for key in ("model", "max_tokens", "messages"):
        if key not in body:
            raise bad(f"{key}: Field required")
    if body["model"] not in models:
        raise ApiError(404, "not_found_error", f"model: {body['model']}")
    if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
        raise bad("max_tokens: Input should be a valid integer greater than 0")
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise bad("messages: at least one message is required")
    if messages[0].get("role") != "user":
        raise bad('messages: first message must use the "user" role')
    breakpoints = 0
    system = body.get("system")
    if system is not None:
        if isinstance(system, list):
            for block in system:
                if block.get("type") != "text" or not isinstance(block.get("text"), str):
                    raise bad("system: Input should be a valid list of text blocks")
                breakpoints += "cache_control" in block
        elif not isinstance(system, str):
            raise bad("system: Input should be a valid string or list")
    for i, m in enumerate(messages):
        final = i == len(messages) - 1
        if m.get("role") not in ("user", "assistant"):
            raise bad(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        content = m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list) or not blocks:
            raise bad(
                f"messages.{i}: all messages must have non-empty content except for the optional final assistant message"
            )
        for block in blocks:
            if block.get("type") == "text":
                text = block.get("text")
                if not isinstance(text, str) or not text.strip():
                    if not (final and m["role"] == "assistant" and text == ""):
                        raise bad(f"messages.{i}: text content blocks must contain non-whitespace text")
            cc = block.get("cache_control")
            if cc is not None:
                if cc.get("type") != "ephemeral":
                    raise bad(f"messages.{i}.content.cache_control.type: Input should be 'ephemeral'")
                breakpoints += 1
        if final and m["role"] == "assistant" and flat_text(content) != flat_text(content).rstrip():
            raise bad("messages: final assistant content cannot end with trailing whitespace")
    tools = body.get("tools") or []
    for t in tools:
        if not isinstance(t.get("name"), str) or not isinstance(t.get("input_schema"), dict):
            raise bad("tools.0: name and input_schema are required")
        if t["input_schema"].get("type") != "object":
            raise bad("tools.0.input_schema.type: Input should be 'object'")
        breakpoints += "cache_control" in t
    choice = body.get("tool_choice")
    if choice is not None:
        if choice.get("type") not in ("auto", "any", "tool", "none"):
            raise bad("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
        if choice["type"] == "tool" and choice.get("name") not in [t["name"] for t in tools]:
            raise bad(f"tool_choice: tool {choice.get('name')!r} is not among the tools")
    if breakpoints > 4:
        raise bad(f"A maximum of 4 blocks with cache_control may be provided. Found {breakpoints}.")
    stops = body.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)):
        raise bad("stop_sequences: Input should be a valid list of strings")
    thinking = body.get("thinking")
    if thinking is not None:
        kind = thinking.get("type")
        if kind not in ("enabled", "disabled", "adaptive"):
            raise bad("thinking.type: Input should be 'enabled', 'disabled' or 'adaptive'")
        if kind == "enabled":
            budget = thinking.get("budget_tokens")
            if not isinstance(budget, int) or budget < 1024:
                raise bad("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
            if budget >= body["max_tokens"]:
                raise bad("`max_tokens` must be greater than `thinking.budget_tokens`")
        if kind in ("enabled", "adaptive"):
            if "temperature" in body and body["temperature"] != 1:
                raise bad("`temperature` may only be set to 1 when thinking is enabled")
            if "top_k" in body:
                raise bad("`top_k` cannot be set when thinking is enabled")
            if choice is not None and choice.get("type") in ("tool", "any"):
                raise bad("Thinking may not be enabled when tool_choice forces tool use.")
            if messages[-1]["role"] == "assistant":
                raise bad(
                    "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `text`. When "
                    "`thinking` is enabled, a final `assistant` message must start with a thinking block"
                )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    api: AnthropicServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


_BATCH = re.compile(r"^/v1/messages/batches/([^/]+)(/cancel|/results)?$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:  # noqa: N802
        self._route("GET", None)

    def do_POST(self) -> None:  # noqa: N802
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        self._route("POST", body)

    def _route(self, method: str, body: Any) -> None:
        api = self.server.api
        headers = {k.lower(): v for k, v in self.headers.items()}
        with api._lock:
            api.requests.append(RecordedRequest(method, self.path, headers, body))
        path = self.path.split("?", 1)[0]
        try:
            self._check_headers(headers, method)
            m = _BATCH.match(path)
            if method == "POST" and path == "/v1/messages":
                if headers.get("content-type", "").split(";")[0] != "application/json":
                    raise ApiError(400, "invalid_request_error", "Content-Type must be application/json")
                status, payload, extra, reply = api.answer_turn(body)
                streamed = isinstance(body, dict) and body.get("stream") is True
                if streamed and status == 200 and reply is not None and isinstance(payload, dict):
                    self._send_stream(stream_events(payload, reply), reply, extra)
                else:
                    self._send(status, payload, extra)
            elif method == "POST" and path == "/v1/messages/batches":
                fault = api.create_faults.popleft() if api.create_faults else None
                if fault is not None:
                    self._send(fault.status, fault.body if fault.body is not None else {}, fault.headers)
                else:
                    self._send(200, api.create_batch(body))
            elif method == "GET" and m and not m.group(2):
                self._send(200, api.poll_batch(m.group(1)))
            elif method == "POST" and m and m.group(2) == "/cancel":
                self._send(200, api.cancel_batch(m.group(1)))
            elif method == "GET" and m and m.group(2) == "/results":
                self._send(200, api.batch_results(m.group(1)), {"Content-Type": "application/x-jsonl"})
            else:
                raise ApiError(404, "not_found_error", f"Not found: {method} {path}")
        except ApiError as e:
            self._send(e.status, error_body(e.type, e.message))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:  # a bug of this server: a 500 for the client, the traceback for the test
            api.crashes.append(traceback.format_exc())
            self._send(500, error_body("api_error", "test server crashed"))

    def _check_headers(self, headers: dict[str, str], method: str) -> None:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", headers.get("anthropic-version", "")):
            raise ApiError(400, "invalid_request_error", "anthropic-version: header is required")
        sent = headers.get("x-api-key")
        bearer = headers.get("authorization", "")
        if sent is None and bearer.startswith("Bearer "):
            sent = bearer[len("Bearer ") :]
        if not sent:
            raise ApiError(401, "authentication_error", "x-api-key header is required")
        key = self.server.api.api_key
        if key is not None and sent != key:
            raise ApiError(401, "authentication_error", "invalid x-api-key")

    def _send_stream(
        self, events: list[tuple[str, dict[str, Any] | None]], reply: Turn, headers: dict[str, str]
    ) -> None:
        """Server-sent events in HTTP/1.1 chunks, one event a chunk, as the API sends them."""
        self.send_response(200)
        headers = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache", **headers}
        headers.setdefault("request-id", f"req_{uuid.uuid4().hex[:20]}")
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for name, data in events:
            if data is None and reply.stream_error is not None:
                name, data = "error", reply.stream_error
            elif data is None:  # dropped mid-stream: no closing chunk
                self.wfile.flush()
                self.close_connection = True
                return
            chunk = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _send(self, status: int, payload: dict[str, Any] | str | bytes, headers: dict[str, str] | None = None) -> None:
        data = (
            payload
            if isinstance(payload, bytes)
            else payload.encode()
            if isinstance(payload, str)
            else json.dumps(payload).encode()
        )
        self.send_response(status)
        headers = dict(headers or {})
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
        headers.setdefault("request-id", f"req_{uuid.uuid4().hex[:20]}")
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
