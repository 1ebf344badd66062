"""The HTTP side: FastAPI routes, bearer auth, size and concurrency limits, errors in OpenAI's shape."""

from __future__ import annotations

import asyncio
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
from starlette.types import Receive

from ._gateway import Gateway
from ._http import ABORTED
from ._metrics import CONTENT_TYPE
from ._monitor import Monitor
from ._protocol import GatewayError, Reply, clip, parse_chat_request, sse
from ._status import CSP, render_status

log = logging.getLogger("specalign.serve")


def create_app(gateway: Gateway, monitor: Monitor | None = None) -> FastAPI:
    """The ASGI app of ``gateway``; ``monitor`` (optional) judges a sample of the answers."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if monitor is not None:
            await monitor.start()
        try:
            yield
        finally:  # uvicorn has let in-flight requests finish by now
            if monitor is not None:
                await monitor.stop()
            await gateway.aclose()

    app = FastAPI(title="specalign gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    config = gateway.config
    traffic: dict[tuple[str, str], list[int]] = {}

    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, e: GatewayError) -> JSONResponse:
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
        try:
            answered = await _answer(request, raw, labels, t0)
        except GatewayError as e:
            gateway.metrics.requests.inc(code=str(e.status), **labels)
            if labels["method"]:
                traffic.setdefault((labels["method"], labels["scenario"]), [0, 0, 0])[1] += 1
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
            gateway.in_flight -= 1
        if answered is None:
            return _gone(request, "answer", labels)
        reply, stream, usage = answered
        gateway.metrics.requests.inc(code="200", **labels)
        gateway.metrics.latency.observe(time.perf_counter() - t0, method=labels["method"])
        row = traffic.setdefault((labels["method"], labels["scenario"]), [0, 0, 0])
        row[0] += 1
        row[2] += reply.completion_tokens
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
    ) -> tuple[Reply, bool, bool] | None:
        try:
            inp = parse_chat_request(raw, max_tokens_limit=config.max_tokens_limit)
            method, scenario = gateway.resolve(inp)
        except GatewayError:
            gateway.metrics.rejected.inc(reason="invalid")
            raise
        labels.update(method=method.name, scenario=scenario.key)
        out = await unless_disconnected(request.receive, gateway.answer(inp, method, scenario))
        if out is None:
            return None
        monitored = monitor is not None and monitor.offer(method, scenario, inp.prompt, out, time.perf_counter() - t0)
        return gateway.reply(inp, method, scenario, out, monitored), inp.stream, inp.include_usage

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        authorize(request)
        return Response(gateway.metrics.registry.render(), media_type=CONTENT_TYPE)

    @app.get("/status")
    async def status(request: Request) -> HTMLResponse:
        authorize(request)
        rows = [
            {"method": m, "scenario": s, "ok": v[0], "errors": v[1], "completion_tokens": v[2]}
            for (m, s), v in sorted(traffic.items())
        ]
        info = {**gateway.describe(), "started": gateway.started, "in_flight": gateway.in_flight}
        tables = recent = mon = None
        if monitor is not None:
            tables, recent = monitor.spec_table(), list(monitor.recent)
            dropped = sum(v for k, v in monitor.metrics_samples.values.items() if ("outcome", "dropped") in k)
            mon = {
                "rate": config.monitor.rate,
                "judge": monitor.judge_settings.key,
                "window": config.monitor.window,
                "queue": monitor.queue.qsize(),
                "dropped": int(dropped),
            }
        page = render_status(info, rows, tables, recent or [], mon)
        return HTMLResponse(
            page,
            headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"},
        )

    return app


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
