"""The HTTP side: FastAPI routes, bearer auth, size and concurrency limits, errors in OpenAI's shape."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from ..methods import MethodOutput
from ._enforce import StreamGuard
from ._gateway import Gateway
from ._http import ABORTED
from ._metrics import CONTENT_TYPE
from ._monitor import Monitor
from ._protocol import ChatInput, ChunkWriter, GatewayError, Reply, clip, parse_chat_request, sse
from ._shadow import Shadow
from ._status import CSP, render_status

log = logging.getLogger("specalign.serve")


def create_app(gateway: Gateway, monitor: Monitor | None = None, shadow: Shadow | None = None) -> FastAPI:
    """The ASGI app of ``gateway``; ``monitor`` (optional) judges a sample of the answers; ``shadow``
    (optional) runs a second method on a sample of the requests, after the reply."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if monitor is not None:
            await monitor.start()
        if shadow is not None:
            await shadow.start()
        try:
            yield
        finally:  # uvicorn has let in-flight requests finish by now
            if shadow is not None:
                await shadow.stop()
            if monitor is not None:
                await monitor.stop()
            await gateway.aclose()

    app = FastAPI(title="specalign gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    config = gateway.config
    gateway.tracing.install(app)

    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, e: GatewayError) -> JSONResponse:
        gateway.tracing.failed(e)
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        err = GatewayError(
            e.status_code, f"{request.method} {clip(request.url.path)}: {e.detail}", code=codes.get(e.status_code)
        )
        gateway.metrics.rejected.inc(reason=codes.get(e.status_code, "http_error"))
        return JSONResponse(err.body(), status_code=e.status_code, headers=e.headers)

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception) -> JSONResponse:  # logged by the server; no traceback to clients
        err = GatewayError(500, "the gateway failed to answer; see its log", type="server_error", code="internal_error")
        return JSONResponse(err.body(), status_code=500)

    def authorize(request: Request) -> None:
        if gateway.token is None:
            return
        sent = request.headers.getlist("authorization")
        header = sent[0] if len(sent) == 1 else ""
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), gateway.token.encode()):
            gateway.metrics.rejected.inc(reason="auth")
            what = (
                "no bearer token was sent"
                if not sent
                else "send one Authorization header"
                if len(sent) > 1
                else "the bearer token is not valid"
            )
            raise GatewayError(
                401,
                f"{what}: send the gateway's token as the API key",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": gateway.model_name, "in_flight": gateway.in_flight}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        authorize(request)
        return {"object": "list", "data": [_model_card(gateway)]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str, request: Request) -> dict[str, Any]:
        authorize(request)
        if model_id != gateway.model_name:
            raise GatewayError(404, f"model {clip(model_id)!r} is not served here", code="model_not_found")
        return _model_card(gateway)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        t0 = time.perf_counter()
        authorize(request)
        _json_content(request)
        raw = await _body(request)
        if raw is None:
            return _gone(request, "body", {"method": "", "scenario": ""})
        if gateway.in_flight >= config.max_concurrency:  # only requests whose body is in take a slot
            gateway.metrics.rejected.inc(reason="busy")
            raise GatewayError(
                429,
                f"the gateway is answering {config.max_concurrency} requests, its limit; retry shortly",
                type="rate_limit_error",
                code="gateway_busy",
                headers={"Retry-After": "1"},
            )
        gateway.in_flight += 1
        labels = {"method": "", "scenario": ""}
        live: LiveStream | None = None
        try:
            answered = await _answer(request, raw, labels, t0)
            if isinstance(answered, LiveStream):
                live = answered  # it holds the slot until its stream ends
                return live
        except GatewayError as e:
            gateway.metrics.requests.inc(code=str(e.status), **labels)
            raise
        except asyncio.CancelledError:  # the shutdown timeout passed: the server answers 503
            gateway.metrics.requests.inc(code="503", **labels)
            raise
        except Exception:  # a bug: logged here, an OpenAI-shaped 500 for the client
            log.exception("chat request failed")
            gateway.metrics.requests.inc(code="500", **labels)
            raise GatewayError(
                500, "the gateway failed to answer; see its log", type="server_error", code="internal_error"
            ) from None
        finally:
            if live is None:
                gateway.in_flight -= 1
        if answered is None:
            return _gone(request, "answer", labels)
        reply, stream, usage = answered
        gateway.metrics.requests.inc(code="200", **labels)
        gateway.metrics.latency.observe(time.perf_counter() - t0, method=labels["method"])
        gateway.metrics.status_tokens.inc(reply.completion_tokens, **labels)
        if stream:
            return StreamingResponse(
                _events(reply, usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return Response(json.dumps(reply.completion(), ensure_ascii=False).encode(), media_type="application/json")

    def _json_content(request: Request) -> None:
        """JSON only: a browser page cannot send that cross-origin without a CORS preflight, which fails here."""
        kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if kind != "application/json":
            gateway.metrics.rejected.inc(reason="content_type")
            gateway.metrics.requests.inc(code="415", method="", scenario="")
            raise GatewayError(
                415,
                f"the body must be sent as Content-Type: application/json, not {clip(kind or 'none', 60)!r}",
                code="unsupported_media_type",
                headers={"Connection": "close"},
            )

    async def _body(request: Request) -> bytes | None:
        """The body, or None when the client left (or the connection layer refused it) while sending it."""
        try:
            return await read_body(request.receive, request.headers.get("content-length", ""), config.max_request_bytes)
        except GatewayError as e:
            gateway.metrics.rejected.inc(reason="too_large")
            gateway.metrics.requests.inc(code=str(e.status), method="", scenario="")
            raise

    def _gone(request: Request, stage: str, labels: dict[str, str]) -> Response:
        """Count a request whose client is gone; the response is never sent."""
        aborted = request.scope.get(ABORTED)
        if aborted:  # the connection layer answered it (408 body timeout, 503 shutting down) and counted why
            gateway.metrics.requests.inc(code=str(aborted[0]), **labels)
        else:
            gateway.metrics.requests.inc(code="499", **labels)
            gateway.metrics.disconnects.inc(stage=stage)
        return Response(status_code=499)

    async def _answer(
        request: Request, raw: bytes, labels: dict[str, str], t0: float
    ) -> tuple[Reply, bool, bool] | LiveStream | None:
        try:
            inp = parse_chat_request(raw, max_tokens_limit=config.max_tokens_limit)
            method, scenario = gateway.resolve(inp)
        except GatewayError:
            gateway.metrics.rejected.inc(reason="invalid")
            raise
        labels.update(method=method.name, scenario=scenario.key)
        if inp.stream:  # enforced streams are released window by window as they pass (docs/serve.md)
            return await _start_stream(request, inp, method, scenario, labels, t0)
        out = await unless_disconnected(request.receive, gateway.answer_enforced(inp, method, scenario))
        if out is None:
            return None
        monitored = monitor is not None and monitor.offer(method, scenario, inp.prompt, out, time.perf_counter() - t0)
        if shadow is not None:
            shadow.offer(method, scenario, inp.prompt, inp.params, out, time.perf_counter() - t0)
        return gateway.reply(inp, method, scenario, out, monitored), inp.stream, inp.include_usage

    async def _start_stream(
        request: Request, inp: ChatInput, method: Any, scenario: Any, labels: dict[str, str], t0: float
    ) -> tuple[Reply, bool, bool] | LiveStream | None:
        """Run the method with a sink until its answer starts to arrive. A failure before that is an
        ordinary error response; a method that finishes first (nothing streamed) is answered as before."""
        sink = QueueSink()
        task = asyncio.ensure_future(gateway.answer(inp, method, scenario, sink))
        watch = asyncio.ensure_future(_disconnect(request.receive))
        first = asyncio.ensure_future(sink.ready.wait())
        handed = False
        try:
            await asyncio.wait((task, watch, first), return_when=asyncio.FIRST_COMPLETED)
            if not task.done() and not sink.ready.is_set():  # the client hung up
                return None
            if task.done() and sink.queue.empty():
                out = task.result()  # a GatewayError goes out as an error response
                if gateway.enforcer is not None:  # nothing streamed: judged whole, as a plain request
                    out = await gateway.enforcer.enforce(_first_then(out, gateway.answer), inp, method, scenario)
                monitored = monitor is not None and monitor.offer(
                    method, scenario, inp.prompt, out, time.perf_counter() - t0
                )
                if shadow is not None:
                    shadow.offer(method, scenario, inp.prompt, inp.params, out, time.perf_counter() - t0)
                return gateway.reply(inp, method, scenario, out, monitored), True, inp.include_usage
            handed = True
            return LiveStream(request, inp, method, scenario, labels, t0, task, watch, sink)
        finally:
            first.cancel()
            if not handed:
                watch.cancel()
                if not task.done():
                    task.cancel()
                    await asyncio.wait((task,))  # the upstream calls are closed before the request is counted
                if watch.done() and not watch.cancelled():
                    watch.exception()

    class LiveStream(Response):
        """The SSE response of an answer that streams as the method's final call arrives (see ChunkWriter).

        It holds the request's concurrency slot until the stream ends; a client that hangs up cancels the
        method and its upstream call; a failure after the first event ends the stream with an error event.
        """

        def __init__(
            self,
            request: Request,
            inp: ChatInput,
            method: Any,
            scenario: Any,
            labels: dict[str, str],
            t0: float,
            task: asyncio.Future[Any],
            watch: asyncio.Future[None],
            sink: QueueSink,
        ):
            super().__init__(
                media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            )
            self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]  # chunked
            self.request, self.inp, self.method, self.scenario = request, inp, method, scenario
            self.labels, self.t0, self.task, self.watch, self.sink = labels, t0, task, watch, sink
            self.writer = ChunkWriter(id=inp.prompt.id, model=gateway.model_name)

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            counted = False
            try:
                await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
                async for event in self._events():
                    await send({"type": "http.response.body", "body": event, "more_body": True})
                if not self.watch.done():
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                counted = True
            except asyncio.CancelledError:  # the shutdown timeout passed
                gateway.metrics.requests.inc(code="503", **self.labels)
                counted = True
                raise
            finally:
                self.watch.cancel()
                if not self.task.done():
                    self.task.cancel()
                    await asyncio.wait((self.task,))
                if self.watch.done() and not self.watch.cancelled():
                    self.watch.exception()
                if not counted:  # a failed send: the client is gone
                    _gone(self.request, "answer", self.labels)
                gateway.in_flight -= 1

        async def _next(self) -> str | None:
            """The next piece of the answer, None once the method is done; raises _Gone when the client is."""
            queue = self.sink.queue
            while True:
                if not queue.empty():
                    return queue.get_nowait()
                if self.task.done():
                    return None
                got = asyncio.ensure_future(queue.get())
                await asyncio.wait((got, self.task, self.watch), return_when=asyncio.FIRST_COMPLETED)
                if got.done():
                    return got.result()
                got.cancel()
                if self.watch.done() and not self.task.done():
                    raise _Gone

        async def _stop_method(self) -> None:
            if not self.task.done():
                self.task.cancel()
                await asyncio.wait((self.task,))

        def _guard(self) -> StreamGuard | None:
            enforcer = gateway.enforcer
            if enforcer is None:
                return None
            checker = enforcer.for_request(self.scenario, self.inp.prompt)
            return StreamGuard(checker, enforcer.config.window, flag=enforcer.config.action == "flag")

        def _may_regenerate(self, guard: StreamGuard, attempts: int) -> bool:
            """A stream whose checked violation came before any of its text went out is run again."""
            assert gateway.enforcer is not None and guard.stopped is not None
            cfg = gateway.enforcer.config
            return (
                cfg.action == "regenerate" and guard.stopped.checked and not guard.released and attempts <= cfg.attempts
            )

        def _regenerate(self, guard: StreamGuard) -> None:
            assert gateway.enforcer is not None and guard.stopped is not None
            retry = gateway.enforcer.retry_input(self.inp, self.scenario, guard.stopped.violated)
            self.sink = QueueSink()
            self.task = asyncio.ensure_future(gateway.answer(retry, self.method, self.scenario, self.sink))

        async def _events(self) -> AsyncIterator[bytes]:
            labels, inp, writer = self.labels, self.inp, self.writer
            guard, attempts, judged_s = self._guard(), 1, 0.0
            yield writer.role()
            out: MethodOutput | None = None
            while True:  # one pass per attempt; only enforcement's regenerate makes more than one
                sent: list[str] = []
                try:
                    while (piece := await self._next()) is not None:
                        if guard is None:
                            sent.append(piece)
                            yield writer.content(piece)
                            continue
                        released = await guard.feed(piece)
                        if released:
                            sent.append(released)
                            yield writer.content(released)
                        if guard.stopped is not None:
                            await self._stop_method()  # the stream stops: no more tokens are spent on it
                            break
                except _Gone:  # the client hung up: cancel the method
                    await self._stop_method()
                    _gone(self.request, "answer", labels)
                    return
                out = None
                if guard is None or guard.stopped is None:
                    try:
                        out = self.task.result()
                    except GatewayError as e:
                        gateway.metrics.requests.inc(code=str(e.status), **labels)
                        for event in writer.error(e):
                            yield event
                        return
                    except Exception:  # a bug: logged, and an error event for the client
                        log.exception("chat request failed")
                        gateway.metrics.requests.inc(code="500", **labels)
                        bug = GatewayError(
                            500, "the gateway failed to answer; see its log", type="server_error", code="internal_error"
                        )
                        for event in writer.error(bug):
                            yield event
                        return
                    held = guard.text if guard is not None else "".join(sent)
                    if not out.response.startswith(held):  # cannot happen when the backends keep their contract
                        log.error("request %s: the streamed answer is not the start of the final one", inp.prompt.id)
                        gateway.metrics.requests.inc(code="502", **labels)
                        bad = GatewayError(
                            502,
                            "the upstream's stream did not add up to its answer",
                            type="upstream_error",
                            code="upstream_stream_inconsistent",
                        )
                        for event in writer.error(bad):
                            yield event
                        return
                    if guard is not None:  # the end of the answer is judged before the finish chunk
                        await guard.finish(out.response[len(guard.text) :])
                if guard is None:
                    break
                judged_s += guard.outcome().latency_s
                if guard.stopped is None:
                    break
                if self._may_regenerate(guard, attempts):  # nothing of this attempt went out: run it again
                    attempts += 1
                    self._regenerate(guard)
                    guard = self._guard()
                    continue
                for event in self._refused(guard, attempts, judged_s, out):
                    yield event
                return
            assert out is not None
            if guard is not None:
                assert gateway.enforcer is not None
                action = "flagged" if guard.flagged else ("regenerated" if attempts > 1 else "none")
                if guard.flagged:
                    out = out.model_copy(update={"flags": [*out.flags, "enforcement_flagged"]})
                gateway.enforcer.settle(inp, guard.outcome(), action, attempts, judged_s)
            streamed = "".join(sent)
            elapsed = time.perf_counter() - self.t0
            monitored = monitor is not None and monitor.offer(self.method, self.scenario, inp.prompt, out, elapsed)
            if shadow is not None:
                shadow.offer(self.method, self.scenario, inp.prompt, inp.params, out, elapsed)
            reply = gateway.reply(inp, self.method, self.scenario, out, monitored)
            gateway.metrics.requests.inc(code="200", **labels)
            gateway.metrics.latency.observe(elapsed, method=labels["method"])
            gateway.metrics.status_tokens.inc(reply.completion_tokens, **labels)
            reply.content = out.response[len(streamed) :]
            for event in writer.rest(reply, include_usage=inp.include_usage):
                yield event

        def _refused(self, guard: StreamGuard, attempts: int, judged_s: float, out: Any) -> list[bytes]:
            """The end of a stream stopped by enforcement: the refusal as the last content (what went out
            before it had passed), the finish chunk saying ``refused``, and ``[DONE]``."""
            enforcer, inp = gateway.enforcer, self.inp
            assert enforcer is not None and guard.stopped is not None
            refusal = enforcer.refusal(self.scenario)
            flags = [f for f in (out.flags if out is not None else []) if f != "max_tokens_reached"]
            base = out if out is not None else MethodOutput(response="")
            final = base.model_copy(
                update={"response": refusal, "thought": "", "flags": [*flags, "enforcement_refused"]}
            )
            decision = guard.outcome()
            enforcer.settle(inp, dataclasses.replace(decision, passed=False), "refused", attempts, judged_s)
            reply = gateway.reply(inp, self.method, self.scenario, final, False)
            gateway.metrics.requests.inc(code="200", **self.labels)
            gateway.metrics.latency.observe(time.perf_counter() - self.t0, method=self.labels["method"])
            gateway.metrics.status_tokens.inc(reply.completion_tokens, **self.labels)
            return self.writer.rest(reply, include_usage=inp.include_usage)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        authorize(request)
        return Response(gateway.metrics.registry.render(), media_type=CONTENT_TYPE)

    @app.get("/status")
    async def status(request: Request) -> HTMLResponse:
        authorize(request)
        rows = gateway.metrics.traffic()  # every worker's, like the monitor's windows
        in_flight = int(gateway.metrics.total("specalign_requests_in_flight"))
        info = {**gateway.describe(), "started": gateway.started, "in_flight": in_flight}
        if gateway.enforcer is not None:
            info["enforce"] = _enforce_info(gateway)
        tables = recent = mon = None
        if monitor is not None:
            tables, recent = monitor.spec_table(), list(monitor.recent)
            dropped = gateway.metrics.total("specalign_monitor_samples_total", outcome="dropped")
            mon = {
                "rate": config.monitor.rate,
                "judge": monitor.judge_settings.key,
                "window": config.monitor.window,
                "queue": int(gateway.metrics.total("specalign_monitor_queue_depth")),
                "dropped": int(dropped),
            }
        page = render_status(info, rows, tables, recent or [], mon, extra=shadow.status_html() if shadow else "")
        return HTMLResponse(
            page,
            headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"},
        )

    return app


def _enforce_info(gateway: Gateway) -> dict[str, Any]:
    """Enforcement's settings and counts (every worker's) for the status page."""
    assert gateway.enforcer is not None
    total = gateway.metrics.total
    cfg = gateway.enforcer.config
    checks = {o: int(total("specalign_enforce_checks_total", outcome=o)) for o in ("pass", "violation", "error")}
    actions = {a: int(total("specalign_enforce_actions_total", action=a)) for a in ENFORCE_ACTIONS}
    by_spec: dict[tuple[str, str], int] = {}
    for family in gateway.metrics.registry.families():
        for s in family.samples:
            if s.name == "specalign_enforce_violations_total" and s.value:
                key = (s.labels["scenario"], s.labels["spec"])
                by_spec[key] = by_spec.get(key, 0) + int(s.value)
    n = total("specalign_enforce_duration_seconds_count")
    mean_ms = 1000 * total("specalign_enforce_duration_seconds_sum") / n if n else None
    return {
        "judge": gateway.enforcer.judge_key,
        "action": cfg.action,
        "attempts": cfg.attempts,
        "on_error": cfg.on_error,
        "checks": checks,
        "actions": actions,
        "violations": sorted(by_spec.items()),
        "mean_ms": mean_ms,
    }


ENFORCE_ACTIONS = ("none", "regenerated", "refused", "flagged")


def _model_card(gateway: Gateway) -> dict[str, Any]:
    return {"id": gateway.model_name, "object": "model", "created": int(gateway.started), "owned_by": "specalign"}


async def read_body(receive: Receive, declared: str, limit: int) -> bytes | None:
    """The request body, a 413 as soon as it passes ``limit`` bytes (declared or received), or None when
    the client disconnects first. (The connection layer bounds the time it may take.)"""
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


T = TypeVar("T")


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T | None:
    """``work``'s result, or None when the client disconnects first: ``work`` (the method and its
    upstream calls) is then cancelled. Call it once the body has been read."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnect(receive))
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait((task,))  # the upstream calls are closed before the request is counted
    if watch.done() and not watch.cancelled():
        watch.exception()  # retrieved: a failed receive() counts as a disconnect
    if task.cancelled():
        return None
    return task.result()


class _Gone(Exception):
    """The client of a live stream hung up."""


def _first_then(out: Any, again: Any) -> Any:
    """An answer function for :meth:`Enforcer.enforce` whose first attempt is ``out`` (already run); a
    regeneration calls ``again``."""
    first = [out]

    async def answer(inp: ChatInput, method: Any, scenario: Any) -> Any:
        return first.pop() if first else await again(inp, method, scenario)

    return answer


class QueueSink:
    """An answer sink (``specalign.methods.AnswerSink``) that queues the pieces for the SSE response."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.ready = asyncio.Event()

    def answer(self, text: str) -> None:
        self.queue.put_nowait(text)
        self.ready.set()


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        413,
        f"the request body is larger than this gateway's limit of {limit} bytes",
        code="request_too_large",
        headers={"Connection": "close"},
    )


async def _events(reply: Reply, include_usage: bool) -> AsyncIterator[bytes]:
    for chunk in reply.chunks(include_usage=include_usage):
        yield sse(chunk)
    yield sse("[DONE]")
