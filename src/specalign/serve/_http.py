"""The connection layer: uvicorn's httptools protocol with the limits a hostile client meets before any route.

uvicorn bounds neither the size of a request's headers nor the time a client takes to send them or
its body. :func:`guarded_protocol` adds, per connection: a cap on the request line and headers
(431), a deadline for them (408), a deadline for the body once the headers are in (408), a cap on
open connections (503), JSON error bodies for unparseable HTTP (400), and, at shutdown, a 503 for
requests whose body is still arriving (so SIGTERM never waits on a slow client). Each refusal is
answered in OpenAI's error shape with ``connection: close`` and counted.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

import httptools
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: the key a refused request's ASGI scope gets, so the app does not count it a second time
ABORTED = "specalign.aborted"


class _HeadersTooLarge(Exception):
    """Raised in the parser's callback: stops parsing the request."""


@dataclass(frozen=True)
class ConnectionLimits:
    """What one client connection may take: header bytes, seconds for headers and body, connections."""

    max_header_bytes: int = 65_536
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 1024
    max_body_wire_bytes: int = 2_000_000  # a body as sent (chunk framing and trailers included)

    def describe(self) -> str:
        return (
            f"headers <= {self.max_header_bytes} bytes in {self.header_timeout_s:g} s, body in "
            f"{self.body_timeout_s:g} s, <= {self.max_connections} connections"
        )


def error_response(status: int, message: str, code: str, extra: dict[str, str] | None = None) -> bytes:
    """A complete HTTP/1.1 response in OpenAI's error shape that closes the connection."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()
    head = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *(f"{k}: {v}" for k, v in (extra or {}).items()),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


def stop_cleanly(app: ASGIApp) -> ASGIApp:
    """``app``, whose requests cancelled at the end of a graceful shutdown (``--shutdown-timeout``) get a 503
    in OpenAI's shape instead of uvicorn's plain-text 500 and a logged traceback."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await app(scope, receive, tracked)
        except asyncio.CancelledError:
            if started:
                raise
            body = json.dumps(
                {
                    "error": {
                        "message": "the gateway stopped before the answer was ready (its "
                        "shutdown timeout passed); retry",
                        "type": "server_error",
                        "param": None,
                        "code": "shutting_down",
                    }
                }
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})

    return guarded


def guarded_protocol(limits: ConnectionLimits, count: Callable[[str], None]) -> type[asyncio.Protocol]:
    """uvicorn's ``http`` protocol class with ``limits``; ``count(reason)`` is called for each refusal."""

    class GuardedProtocol(HttpToolsProtocol):
        _head_timer: asyncio.TimerHandle | None = None
        _body_timer: asyncio.TimerHandle | None = None
        _in_head = True  # between requests, or reading a request line and headers
        _head_bytes = 0
        _message_bytes = 0  # the request being read, as sent: head, body, chunk framing, trailers

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                self._refuse(
                    503,
                    f"the gateway has {limits.max_connections} connections open, its limit; retry shortly",
                    "too_many_connections",
                    "connections",
                    {"retry-after": "1"},
                )
                return
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_timers()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self.transport.is_closing():
                return
            self._unset_keepalive_if_required()
            self._message_bytes += len(data)
            if self._in_head:
                self._head_bytes += len(data)
                if self._head_timer is None:
                    self._arm_head_timer()
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade:  # no upgrades here: served as plain HTTP, then the connection closes
                if self.cycle is not None:  # (the parser reads nothing more on it)
                    self.cycle.keep_alive = False
            except httptools.HttpParserError as e:
                if isinstance(e.__context__, _HeadersTooLarge):
                    self._too_large()
                    return
                detail = "the request line or a header cannot be read" if e.__context__ else str(e) or "malformed"
                self._refuse(400, f"the request is not valid HTTP/1.1: {detail}", "invalid_http", "bad_http")
                return
            if self._in_head and self._head_bytes > limits.max_header_bytes:
                self._too_large()
            elif not self._in_head and self._message_bytes > limits.max_header_bytes + limits.max_body_wire_bytes:
                self._body_too_large()

        def on_headers_complete(self) -> None:
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers) + 16
            if size > limits.max_header_bytes:  # they came in one piece: measured here
                raise _HeadersTooLarge
            self._in_head = False
            self._cancel(self._head_timer)
            self._head_timer = None
            self._body_timer = self.loop.call_later(limits.body_timeout_s, self._body_timeout)
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._cancel(self._body_timer)
            self._body_timer = None
            self._in_head, self._head_bytes, self._message_bytes = True, 0, 0
            super().on_message_complete()

        def shutdown(self) -> None:
            """At shutdown a request still sending its body gets a 503 now instead of holding the exit."""
            cycle = self.cycle
            if (
                cycle is not None
                and cycle.more_body
                and not cycle.response_started
                and not self._in_head
                and not self.pipeline
            ):  # (a pipelined request waits its turn: closing would cut the one before)
                self._abort(
                    503, "the gateway is shutting down; retry on another instance", "shutting_down", "shutting_down"
                )
                return
            super().shutdown()

        # -- the limits ------------------------------------------------------------------------
        def _too_large(self) -> None:
            self._refuse(
                431,
                f"the request line and headers pass this gateway's limit of {limits.max_header_bytes} bytes",
                "headers_too_large",
                "headers_too_large",
            )

        def _body_too_large(self) -> None:
            """Trailers or chunk framing beyond all measure: the app never sees these bytes as body."""
            message = f"the request body passes this gateway's limit of {limits.max_body_wire_bytes} bytes on the wire"
            if self.cycle is not None and not self.cycle.response_started:
                self._abort(413, message, "request_too_large", "too_large")
            else:  # the app has answered (its own 413, say) and counted it
                self._cancel_timers()
                self.transport.close()

        def _arm_head_timer(self) -> None:
            self._head_timer = self.loop.call_later(limits.header_timeout_s, self._head_timeout)

        def _head_timeout(self) -> None:
            self._head_timer = None
            if self._in_head and not self.transport.is_closing():
                self._refuse(
                    408,
                    f"the request line and headers did not arrive within {limits.header_timeout_s:g} s",
                    "header_timeout",
                    "header_timeout",
                )

        def _body_timeout(self) -> None:
            self._body_timer = None
            cycle = self.cycle
            if cycle is None or not cycle.more_body or self.transport.is_closing():
                return
            if self.pipeline:  # pipelined behind a request being answered: its body is not being read yet
                self._body_timer = self.loop.call_later(limits.body_timeout_s, self._body_timeout)
                return
            if cycle.response_started:  # answered early (401, 413, ...) while the body still trickles in
                count("body_timeout")
                self.transport.close()
                return
            self._abort(
                408,
                f"the request body did not arrive within {limits.body_timeout_s:g} s",
                "body_timeout",
                "body_timeout",
            )

        def _abort(self, status: int, message: str, code: str, reason: str) -> None:
            """Answer the request whose body is being read, and tell the app the client is gone."""
            cycle = self.cycle
            cycle.scope[ABORTED] = (status, reason)  # type: ignore[literal-required]
            cycle.disconnected = True
            cycle.message_event.set()
            self._refuse(status, message, code, reason)

        def _refuse(
            self, status: int, message: str, code: str, reason: str, extra: dict[str, str] | None = None
        ) -> None:
            if self.transport.is_closing():
                return
            count(reason)
            self._cancel_timers()
            self.transport.write(error_response(status, message, code, extra))
            self.transport.close()

        def _cancel_timers(self) -> None:
            self._cancel(self._head_timer)
            self._cancel(self._body_timer)
            self._head_timer = self._body_timer = None

        @staticmethod
        def _cancel(timer: asyncio.TimerHandle | None) -> None:
            if timer is not None:
                timer.cancel()

    return GuardedProtocol
