"""Run the gateway under uvicorn: ready line, signals, graceful shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any

from .._terminal import log_warnings_to_stderr
from ..errors import ConfigError
from ._config import ServeConfig
from ._gateway import Gateway
from ._http import ConnectionLimits, guarded_protocol, stop_cleanly
from ._monitor import Monitor
from ._shadow import build_shadow
from ._tracing import trace_destination
from ._workers import WorkerSpec, supervise, tag_worker


def build_gateway(config: ServeConfig, *, shared: Path | None = None) -> tuple[Gateway, Monitor | None]:
    """The gateway and its monitor, checked: every configuration error is raised here. ``shared``: the
    folder of the supervisor when this is one of several workers."""
    gateway = Gateway(config)
    monitor = None
    if config.monitor.enabled:
        monitor = Monitor(
            config.monitor,
            gateway.scenarios,
            gateway.methods,
            gateway.model,
            gateway.metrics,
            config.models_config,
            shared=shared,
            tracing=gateway.tracing,
        )
    return gateway, monitor


def _announce(url: str, workers: int = 1, traces: str = "") -> None:
    print(
        f"specalign gateway ready: {url}/v1 (status page {url}/status, metrics {url}/metrics; "
        f"{workers} worker{'s' if workers != 1 else ''}{'; ' + traces if traces else ''})",
        file=sys.stderr,
        flush=True,
    )


async def serve_async(
    config: ServeConfig, *, on_ready: Callable[[str], None] = _announce, worker: WorkerSpec | None = None
) -> None:
    """Serve until SIGINT/SIGTERM; in-flight requests finish (up to ``graceful_shutdown_s``), then
    waiting judgments are drained and the run directories closed. ``worker``: this process is one of a
    supervisor's workers (see :func:`supervise`)."""
    import uvicorn  # noqa: PLC0415

    from ._app import create_app  # noqa: PLC0415

    _log_to_stderr()
    gateway, monitor = build_gateway(config, shared=worker.folder if worker else None)
    shadow = build_shadow(config, gateway, shared=worker.folder if worker else None)
    app = stop_cleanly(create_app(gateway, monitor, shadow))
    if worker is not None:
        app = tag_worker(app)
        sock = worker.socket(config.host)
    else:
        sock = listen_socket(config.host, config.port)
    _allow_open_files(config.max_connections + 2 * config.max_concurrency + 256)
    await gateway.model.backend.warm()  # load weights, open clients: the first request pays nothing extra
    if monitor is not None:
        await monitor.judge.model.backend.warm()
    if shadow is not None:
        await shadow.judge.model.backend.warm()
    gc.collect()
    gc.freeze()  # start-up objects (scenarios, modules, clients) leave the collector's scans
    gc.set_threshold(20_000, 20, 50)  # requests allocate many short-lived objects: collect less often

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            super().handle_exit(sig, frame)  # type: ignore[arg-type]
            self._captured_signals.clear()  # a graceful stop is a normal exit, not death by signal

    limits = connection_limits(config)
    protocol = guarded_protocol(limits, lambda reason: gateway.metrics.rejected.inc(reason=reason))
    server = Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level="info",
            access_log=False,
            lifespan="on",
            # uvicorn waits with asyncio.wait_for, which takes seconds as a float; its annotation says int
            timeout_graceful_shutdown=config.graceful_shutdown_s,  # type: ignore[arg-type]
            server_header=False,
            http=protocol,
            ws="none",
        )
    )

    async def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.02)
        if worker is not None:
            worker.ready()
            return
        port = sock.getsockname()[1]
        host = f"[{config.host}]" if ":" in config.host else config.host
        on_ready(f"http://{host}:{port}")
        log = logging.getLogger("specalign.serve")
        log.info("limits: %s", describe_limits(config))
        if gateway.enforcer is not None:
            log.info("enforce: %s", gateway.enforcer.describe(gateway.scenarios.values()))

    async def orphaned() -> None:  # a worker whose supervisor is gone stops gracefully
        assert worker is not None
        while os.getppid() == worker.parent:
            await asyncio.sleep(0.5)
        server.handle_exit(signal.SIGTERM, None)

    watchers = [asyncio.create_task(announce())]
    if worker is not None:
        watchers.append(asyncio.create_task(orphaned()))
    try:
        await server.serve(sockets=[sock])
    finally:
        for w in watchers:
            w.cancel()
        sock.close()
    if not server.started:
        raise SystemExit(1)


def connection_limits(config: ServeConfig) -> ConnectionLimits:
    return ConnectionLimits(
        max_header_bytes=config.max_header_bytes,
        header_timeout_s=config.header_timeout_s,
        body_timeout_s=config.body_timeout_s,
        max_connections=config.max_connections,
        max_body_wire_bytes=2 * config.max_request_bytes + config.max_header_bytes,
    )


def describe_limits(config: ServeConfig) -> str:
    """The limits in effect, in one line (printed at start-up)."""
    return (
        f"{config.max_concurrency} requests in flight, body <= {config.max_request_bytes} bytes, max_tokens <= "
        f"{config.max_tokens_limit}, {connection_limits(config).describe()}"
    )


def _allow_open_files(wanted: int) -> None:
    """Raise the soft limit on open files toward ``wanted`` (client and upstream sockets), within the hard limit."""
    try:
        import resource  # noqa: PLC0415
    except ImportError:  # Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            pass


def _log_to_stderr() -> None:
    log_warnings_to_stderr("specalign.serve", "%(levelname)s:     %(message)s", logging.INFO, propagate=False)


def listen_socket(host: str, port: int) -> socket.socket:
    """A bound socket, so that a taken port or an unknown host is one clear error before anything starts."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}", field="--port") from None
    sock.set_inheritable(True)
    return sock


def serve(config: ServeConfig) -> None:
    """Blocking: run the gateway ``config`` describes (on uvloop when it is installed); with
    ``workers`` > 1, as a supervisor of that many worker processes on one port."""
    if config.workers > 1 and os.name == "posix":
        _log_to_stderr()
        supervise(config, partial(_announce, traces=trace_destination(config)), describe_limits(config))
        return
    run_loop(serve_async(config, on_ready=partial(_announce, traces=trace_destination(config))))


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)
