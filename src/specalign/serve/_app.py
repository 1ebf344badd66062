"""The HTTP side: FastAPI routes, bearer auth, size and concurrency limits, errors in OpenAI's shape."""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ._gateway import Gateway
from ._metrics import CONTENT_TYPE
from ._monitor import Monitor
from ._protocol import GatewayError, Reply, parse_chat_request, sse
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
        err = GatewayError(e.status_code, f"{request.method} {request.url.path}: {e.detail}", code="not_found"
                           if e.status_code == 404 else None)
        return JSONResponse(err.body(), status_code=e.status_code)

    def authorize(request: Request) -> None:
        if gateway.token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), gateway.token.encode()):
            gateway.metrics.rejected.inc(reason="auth")
            what = "no bearer token was sent" if not header else "the bearer token is not valid"
            raise GatewayError(401, f"{what}: send the gateway's token as the API key", code="invalid_api_key",
                               headers={"WWW-Authenticate": "Bearer"})

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
            raise GatewayError(404, f"model {model_id!r} is not served here", code="model_not_found")
        return _model_card(gateway)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        t0 = time.perf_counter()
        authorize(request)
        if gateway.in_flight >= config.max_concurrency:
            gateway.metrics.rejected.inc(reason="busy")
            raise GatewayError(429, f"the gateway is answering {config.max_concurrency} requests, its limit; retry "
                               "shortly", type="rate_limit_error", code="gateway_busy", headers={"Retry-After": "1"})
        gateway.in_flight += 1
        labels = {"method": "", "scenario": ""}
        try:
            reply, stream, usage = await _answer(request, labels, t0)
        except GatewayError as e:
            gateway.metrics.requests.inc(code=str(e.status), **labels)
            if labels["method"]:
                traffic.setdefault((labels["method"], labels["scenario"]), [0, 0, 0])[1] += 1
            raise
        finally:
            gateway.in_flight -= 1
        gateway.metrics.requests.inc(code="200", **labels)
        gateway.metrics.latency.observe(time.perf_counter() - t0, method=labels["method"])
        row = traffic.setdefault((labels["method"], labels["scenario"]), [0, 0, 0])
        row[0] += 1
        row[2] += reply.completion_tokens
        if stream:
            return StreamingResponse(_events(reply, usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return Response(json.dumps(reply.completion(), ensure_ascii=False).encode(), media_type="application/json")

    async def _answer(request: Request, labels: dict[str, str], t0: float) -> tuple[Reply, bool, bool]:
        try:
            raw = await _read_body(request, config.max_request_bytes)
            inp = parse_chat_request(raw, max_tokens_limit=config.max_tokens_limit)
            method, scenario = gateway.resolve(inp)
        except GatewayError as e:
            gateway.metrics.rejected.inc(reason="too_large" if e.status == 413 else "invalid")
            raise
        labels.update(method=method.name, scenario=scenario.key)
        out = await gateway.answer(inp, method, scenario)
        monitored = monitor is not None and monitor.offer(method, scenario, inp.prompt, out, time.perf_counter() - t0)
        return gateway.reply(inp, method, scenario, out, monitored), inp.stream, inp.include_usage

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        authorize(request)
        return Response(gateway.metrics.registry.render(), media_type=CONTENT_TYPE)

    @app.get("/status")
    async def status(request: Request) -> HTMLResponse:
        authorize(request)
        rows = [{"method": m, "scenario": s, "ok": v[0], "errors": v[1], "completion_tokens": v[2]}
                for (m, s), v in sorted(traffic.items())]
        info = {**gateway.describe(), "started": gateway.started, "in_flight": gateway.in_flight}
        tables = recent = mon = None
        if monitor is not None:
            tables, recent = monitor.spec_table(), list(monitor.recent)
            dropped = sum(v for k, v in monitor.metrics_samples.values.items() if ("outcome", "dropped") in k)
            mon = {"rate": config.monitor.rate, "judge": monitor.judge_settings.key, "window": config.monitor.window,
                   "queue": monitor.queue.qsize(), "dropped": int(dropped)}
        page = render_status(info, rows, tables, recent or [], mon)
        return HTMLResponse(page, headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                                           "Cache-Control": "no-store"})

    return app


def _model_card(gateway: Gateway) -> dict[str, Any]:
    return {"id": gateway.model_name, "object": "model", "created": int(gateway.started), "owned_by": "specalign"}


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, or a 413 as soon as it passes ``limit`` bytes (declared or received)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"the request body is larger than this gateway's limit of {limit} bytes",
                        code="request_too_large")


async def _events(reply: Reply, include_usage: bool) -> AsyncIterator[bytes]:
    for chunk in reply.chunks(include_usage=include_usage):
        yield sse(chunk)
    yield sse("[DONE]")
