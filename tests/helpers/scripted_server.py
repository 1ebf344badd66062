"""A small, real OpenAI-compatible HTTP server for tests (stdlib only).

    with ScriptedServer(lambda body: "hello") as server:
        server.script(Reply.error(429, headers={"Retry-After": "0"}), Reply("answer"))
        ...  # call server.base_url ("http://127.0.0.1:PORT/v1")
        assert server.chat_count == 2

Scripted replies are consumed in order, then the ``responder`` answers. Every request is
recorded (path, lower-cased headers, parsed JSON body); ``max_in_flight`` is the most concurrent requests seen.

A request with ``"stream": true`` is answered as OpenAI streams: server-sent ``chat.completion.chunk``
events (the role, ``reasoning_content`` deltas, ``content`` deltas, the finish reason), a usage chunk when
``stream_options.include_usage`` asks for one, then ``data: [DONE]``. ``Reply.chunks`` sets the deltas
exactly; ``Reply.pause_after`` holds the stream after that many deltas until ``Reply.gate`` is set (and
notices a client that hangs up meanwhile: ``streams_abandoned``); ``Reply.fail_after`` breaks it there.
"""

from __future__ import annotations

import json
import re
import select
import socket
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_MODEL = "scripted-model"
#: seconds a paused stream waits for its gate before it goes on (a failing test fails instead of hanging)
GATE_LIMIT = 30.0


@dataclass
class Reply:
    """What to answer one request with.

    ``text`` is the assistant content (``None``: ask the responder). ``body`` replaces the whole
    response body (a dict is JSON-encoded; str/bytes are sent raw, e.g. truncated JSON).
    ``reset`` sends half a response and then aborts the connection (TCP RST).
    """

    text: str | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | str | bytes | None = None
    delay: float = 0.0
    reset: bool = False
    reasoning_content: str | None = None
    finish_reason: str | None = None
    usage: bool = True
    #: streamed deltas as sent (``{"content": ...}`` / ``{"reasoning_content": ...}``); None: the text word by word
    chunks: list[dict[str, Any]] | None = None
    #: after this many deltas, wait until ``gate`` is set before sending the rest
    pause_after: int | None = None
    gate: threading.Event | None = None
    #: after this many deltas, break the stream: ``"reset"`` (TCP RST) or ``"error"`` (an error event)
    fail_after: int | None = None
    fail: str = "reset"
    #: seconds between deltas (the benchmark's token rate); 0: as fast as possible
    interval: float = 0.0

    @classmethod
    def error(
        cls,
        status: int,
        message: str = "scripted error",
        *,
        type: str = "server_error",
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """An error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""
        body = {"error": {"message": message, "type": type, "param": None, "code": code}}
        return cls(status=status, body=body, headers=dict(headers or {}))


Responder = Callable[[dict[str, Any]], "str | Reply"]


@dataclass
class RecordedRequest:
    """One request as received; ``headers`` keys are lower-cased."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any


def echo_responder(body: dict[str, Any]) -> str:
    """Default answer: a deterministic function of the last user message."""
    users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
    last = users[-1] if users else ""
    return f"echo: {last}" if isinstance(last, str) else "echo: <non-text content>"


def count_tokens(text: str) -> int:
    """Approximate, deterministic token count: whitespace-separated words."""
    return len(text.split())


class ScriptedServer:
    """An OpenAI-compatible server on 127.0.0.1 (random port) running in a background thread."""

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        models: tuple[str, ...] = (DEFAULT_MODEL,),
        api_key: str | None = None,
        latency: float = 0.0,
        max_concurrency: int | None = None,
        keep_requests: bool = True,
    ):
        self.responder = responder or echo_responder
        self.models = tuple(models)
        self.api_key = api_key
        self.latency = latency  # every chat answer takes at least this long, holding a concurrency slot
        self._slots = threading.BoundedSemaphore(max_concurrency) if max_concurrency else None
        self.keep_requests = keep_requests  # False: count requests without keeping their bodies
        self.requests: list[RecordedRequest] = []
        self.received = 0
        self.max_in_flight = 0
        self._in_flight = 0
        self.streams_started = 0
        self.streams_paused = 0
        self.streams_abandoned = 0
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> ScriptedServer:
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.scripted = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            for sock in list(self._sockets):
                _quiet(sock.shutdown, socket.SHUT_RDWR)
        self._httpd = None

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- scripting and inspection ---------------------------------------------------------

    def script(self, *replies: Reply | str) -> None:
        """Queue replies answered in order before the responder takes over."""
        with self._lock:
            self._queue.extend(r if isinstance(r, Reply) else Reply(r) for r in replies)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def request_count(self) -> int:
        """Every request received (kept or not)."""
        with self._lock:
            return self.received

    @property
    def chat_count(self) -> int:
        return len(self.chat_requests)

    @property
    def open_connections(self) -> int:
        """Client connections open now: a client that has finished and closed leaves none."""
        with self._lock:
            return len(self._sockets)

    # -- used by the handler ---------------------------------------------------------------

    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self.received += 1
            if self.keep_requests:
                self.requests.append(req)

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            scripted = self._queue.popleft() if self._queue else None
        reply = scripted if scripted is not None else self.responder(body)
        return reply if isinstance(reply, Reply) else Reply(str(reply))

    def _text_for(self, body: dict[str, Any]) -> str:
        answer = self.responder(body)
        if isinstance(answer, Reply):
            return answer.text if answer.text is not None else echo_responder(body)
        return str(answer)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    scripted: ScriptedServer

    def handle_error(self, request: Any, client_address: Any) -> None:  # quiet: resets are on purpose
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def setup(self) -> None:
        super().setup()
        # as real servers do: without it, a response's small writes meet the client's delayed ACK (~40 ms)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.scripted._lock:
            self.server.scripted._sockets.add(self.connection)

    def finish(self) -> None:
        with self.server.scripted._lock:
            self.server.scripted._sockets.discard(self.connection)
        _quiet(super().finish)

    # -- routes ---------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802
        srv = self.server.scripted
        srv._record(RecordedRequest("GET", self.path, _headers(self), None))
        path = _route(self.path)
        if path == "/health":
            self._json(200, {"status": "ok"})
        elif path == "/models":
            if self._authorized():
                now = int(time.time())
                data = [{"id": m, "object": "model", "created": now, "owned_by": "scripted"} for m in srv.models]
                self._json(200, {"object": "list", "data": data})
        else:
            self._json(404, _error(f"no route for GET {self.path}", "invalid_request_error", None))

    def do_POST(self) -> None:  # noqa: N802
        srv = self.server.scripted
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        srv._record(RecordedRequest("POST", self.path, _headers(self), body))
        if _route(self.path) != "/chat/completions":
            self._json(404, _error(f"no route for POST {self.path}", "invalid_request_error", None))
            return
        if srv._slots is not None:
            srv._slots.acquire()
        srv._enter()
        try:
            self._chat(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            srv._leave()
            if srv._slots is not None:
                srv._slots.release()

    def _chat(self, body: Any) -> None:
        srv = self.server.scripted
        if not self._authorized():
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self._json(400, _error("'messages' is a required property", "invalid_request_error", None))
            return
        if body.get("model") not in srv.models:
            msg = f"The model `{body.get('model')}` does not exist or you do not have access to it."
            self._json(404, _error(msg, "invalid_request_error", "model_not_found"))
            return
        t0 = time.perf_counter()
        reply = srv._next_reply(body)
        if reply.delay and srv._stopping.wait(reply.delay):
            return
        wait = srv.latency - (time.perf_counter() - t0)
        if wait > 0 and srv._stopping.wait(wait):
            return
        if reply.reset:
            self._reset()
        elif body.get("stream") and reply.body is None and reply.status == 200:
            text = reply.text if reply.text is not None else srv._text_for(body)
            self._stream(body, text, reply)
        elif reply.body is not None or reply.status != 200:
            self._send(reply.status, _encode(reply.body if reply.body is not None else {}), reply.headers)
        else:
            text = reply.text if reply.text is not None else srv._text_for(body)
            self._send(200, _encode(_completion(body, text, reply)), reply.headers)

    def _stream(self, body: dict[str, Any], text: str, reply: Reply) -> None:
        """Answer as server-sent events, one delta at a time (see the module docstring)."""
        srv = self.server.scripted
        whole = _completion(body, text, reply)
        if reply.chunks is not None:
            deltas = list(reply.chunks)
        else:
            deltas = [{"reasoning_content": w} for w in _words(reply.reasoning_content or "")]
            deltas += [{"content": w} for w in _words(whole["choices"][0]["message"]["content"])]
        base = {
            "id": whole["id"],
            "object": "chat.completion.chunk",
            "created": whole["created"],
            "model": body["model"],
        }

        def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return b"data: " + json.dumps({**base, "choices": [choice]}).encode() + b"\n\n"

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")  # the body ends when the connection does
        self.end_headers()
        self.close_connection = True
        with srv._lock:
            srv.streams_started += 1
        self._write(event({"role": "assistant", "content": ""}))
        for i, delta in enumerate(deltas):
            if reply.fail_after == i:
                self._break(reply.fail)
                return
            if reply.pause_after == i and reply.gate is not None and not self._wait_gate(reply.gate):
                return
            if reply.interval and srv._stopping.wait(reply.interval):
                return
            self._write(event(delta))
        if reply.fail_after is not None and reply.fail_after >= len(deltas):
            self._break(reply.fail)
            return
        self._write(event({}, whole["choices"][0]["finish_reason"]))
        if (body.get("stream_options") or {}).get("include_usage") and "usage" in whole:
            self._write(b"data: " + json.dumps({**base, "choices": [], "usage": whole["usage"]}).encode() + b"\n\n")
        self._write(b"data: [DONE]\n\n")

    def _write(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()

    def _wait_gate(self, gate: threading.Event) -> bool:
        """Wait for ``gate``; False (counted in ``streams_abandoned``) if the client hangs up or the server stops.

        After ``GATE_LIMIT`` seconds the stream goes on ungated, so a test whose client never sees what it waits
        for fails on its own ``gate.is_set()`` check instead of hanging."""
        srv = self.server.scripted
        with srv._lock:
            srv.streams_paused += 1
        deadline = time.monotonic() + GATE_LIMIT
        while not gate.wait(0.02) and time.monotonic() < deadline:
            if srv._stopping.is_set() or self._client_gone():
                with srv._lock:
                    srv.streams_abandoned += 1
                return False
        return True

    def _client_gone(self) -> bool:
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _break(self, how: str) -> None:
        if how == "error":
            err = _error("scripted failure in the middle of the stream", "server_error", "scripted")
            self._write(b"data: " + json.dumps(err).encode() + b"\n\n")
            return
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    # -- helpers --------------------------------------------------------------------------

    def _authorized(self) -> bool:
        key = self.server.scripted.api_key
        if key is None or self.headers.get("Authorization") == f"Bearer {key}":
            return True
        self._json(401, _error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"))
        return False

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, _encode(obj), {})

    def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        if not any(k.lower() == "content-type" for k in headers):
            self.send_header("Content-Type", "application/json")
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _reset(self) -> None:
        """Send half a response, then abort the connection with a TCP RST."""
        self.wfile.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{"id": "ch')
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()


def _headers(handler: BaseHTTPRequestHandler) -> dict[str, str]:
    return {k.lower(): v for k, v in handler.headers.items()}


def _words(text: str) -> list[str]:
    """``text`` as stream deltas: each word with the whitespace after it (the first one's before it too)."""
    return re.findall(r"\s*\S+\s*", text) or ([text] if text else [])


def _route(path: str) -> str:
    path = path.split("?", 1)[0].rstrip("/")
    return path[3:] if path.startswith("/v1/") else path


def _error(message: str, type_: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def _encode(obj: dict[str, Any] | str | bytes) -> bytes:
    if isinstance(obj, bytes):
        return obj
    if isinstance(obj, str):
        return obj.encode()
    return json.dumps(obj).encode()


def _completion(body: dict[str, Any], text: str, reply: Reply) -> dict[str, Any]:
    """A ``chat.completion`` object as OpenAI returns it, honouring ``max_tokens``."""
    finish = reply.finish_reason or "stop"
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    words = text.split()
    if isinstance(limit, int) and len(words) > limit:
        text, finish = " ".join(words[:limit]), reply.finish_reason or "length"
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if reply.reasoning_content is not None:
        message["reasoning_content"] = reply.reasoning_content
    prompt = sum(count_tokens(m.get("content") or "") for m in body["messages"] if isinstance(m.get("content"), str))
    completion = count_tokens(text) + count_tokens(reply.reasoning_content or "")
    out: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "system_fingerprint": "scripted",
    }
    if reply.usage:
        out["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return out


def _quiet(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except OSError:
        pass
