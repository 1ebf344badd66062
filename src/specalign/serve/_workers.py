"""Several gateway processes on one port (``--workers N``): a supervisor and its workers.

The supervisor holds the port, the run directories' locks and a private folder; it starts N workers
(fresh interpreters), waits until all of them listen, prints the ready line, forwards SIGTERM/SIGINT,
and restarts a worker that dies (at most ``MAX_RESTARTS`` within ``RESTART_WINDOW_S``).

- **Port**: on Linux every worker listens on its own socket bound with ``SO_REUSEPORT``, so the kernel
  spreads connections evenly over them; the supervisor keeps a bound, non-listening socket on the port
  so that it stays reserved while a worker restarts. Elsewhere the workers share one listening socket.
- **Metrics**: ``prometheus_client``'s multiprocess files in the folder; /metrics sums them.
- **Windows**: one SQLite file (WAL) in the folder, written and read by every worker.
- **Run directories**: the supervisor holds each one's exclusive lock (a second gateway or a
  ``specalign run`` is refused, as with one process) and hands the lock to its workers, which append
  each record under the directory's append lock.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, SpecalignError
from ._config import ServeConfig
from ._metrics import METRICS_DIR_ENV

WORKER_ENV = "SPECALIGN_SERVE_WORKER"
#: a worker that dies is restarted, unless this many have died within RESTART_WINDOW_S
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
HEADER = b"x-specalign-worker"

log = logging.getLogger("specalign.serve")


@dataclass
class WorkerSpec:
    """What a worker gets from its supervisor."""

    index: int
    parent: int
    folder: Path
    port: int
    fd: int | None  # an inherited listening socket; None: bind one with SO_REUSEPORT
    ready_fd: int

    def socket(self, host: str) -> socket.socket:
        if self.fd is not None:
            return socket.socket(fileno=self.fd)
        try:
            family, kind, proto, _, addr = socket.getaddrinfo(host, self.port, type=socket.SOCK_STREAM)[0]
            sock = socket.socket(family, kind, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(addr)
        except OSError as e:
            raise ConfigError(f"cannot listen on {host}:{self.port}: {e.strerror or e}", field="--port") from None
        return sock

    def ready(self) -> None:
        os.write(self.ready_fd, f"{self.index} {os.getpid()}\n".encode())


def tag_worker(app: Any) -> Any:
    """``app``, whose responses name the worker process that answered (``x-specalign-worker: PID``)."""
    header = (HEADER, str(os.getpid()).encode())

    async def tagged(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_tagged(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        await app(scope, receive, send_tagged)

    return tagged


def worker_main() -> None:
    """A worker's entry point (``python -c``): its spec comes in the environment."""
    from .._terminal import log_warnings_to_stderr, plain  # noqa: PLC0415
    from ._server import run_loop, serve_async  # noqa: PLC0415

    log_warnings_to_stderr()
    raw = json.loads(os.environ.pop(WORKER_ENV))
    spec = WorkerSpec(
        index=raw["index"],
        parent=raw["parent"],
        folder=Path(raw["folder"]),
        port=raw["port"],
        fd=raw["fd"],
        ready_fd=raw["ready_fd"],
    )
    try:
        run_loop(serve_async(ServeConfig.model_validate(raw["config"]), worker=spec))
    except SpecalignError as e:
        print(f"error: {plain(str(e))}", file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


def supervise(config: ServeConfig, announce: Callable[[str, int], None], limits: str) -> None:
    """Run ``config.workers`` workers on one port until SIGTERM/SIGINT; exits like one gateway would."""
    from ..runs import RunDir  # noqa: PLC0415
    from ._gateway import _token  # noqa: PLC0415
    from ._server import listen_socket  # noqa: PLC0415
    from ._shadow import shadow_dirs  # noqa: PLC0415

    _token(config)  # no token for a public address: refused before the port is touched
    n = config.workers
    held: list[RunDir] = []
    monitored = config.monitor.enabled and config.monitor.out
    dirs = [Path(str(config.monitor.out)) / m for m in config.methods] if monitored else []
    dirs += shadow_dirs(config)
    if dirs:
        try:
            for path in dirs:
                rd = RunDir(path)
                rd.ensure_writable()
                rd.lock("serve")
                held.append(rd)
        except SpecalignError:
            for rd in held:
                rd.unlock()
            raise
    probe = listen_socket(config.host, config.port)  # a taken port or a bad host: one clear line
    port = probe.getsockname()[1]
    if _reuse_port():
        probe.close()
        reserve = _reserve(config.host, port)
        fd = None
    else:
        probe.listen(2048)
        reserve, fd = probe, probe.fileno()
    folder = Path(tempfile.mkdtemp(prefix="specalign-serve-"))
    metrics_dir = folder / "metrics"
    metrics_dir.mkdir()
    ready_r, ready_w = os.pipe()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), METRICS_DIR_ENV: str(metrics_dir)}
    worker_config = config.model_copy(update={"port": port}).model_dump(mode="json")
    fds = [ready_w, *([fd] if fd is not None else []), *(rd.lock_fd for rd in held if rd.lock_fd is not None)]

    def start(index: int) -> subprocess.Popen:
        spec = {
            "config": worker_config,
            "index": index,
            "parent": os.getpid(),
            "folder": str(folder),
            "port": port,
            "fd": fd,
            "ready_fd": ready_w,
        }
        return subprocess.Popen(
            [sys.executable, "-c", "from specalign.serve._workers import worker_main; worker_main()"],
            env={**env, WORKER_ENV: json.dumps(spec)},
            pass_fds=fds,
            start_new_session=True,  # a terminal's Ctrl-C reaches the supervisor only; it forwards one SIGTERM
        )

    stopping: list[int] = []
    procs: dict[int, subprocess.Popen] = {}

    def on_signal(sig: int, frame: object) -> None:
        stopping.append(sig)
        if len(stopping) > 1:  # a second signal: the workers stop at once
            for p in procs.values():
                _signal(p, signal.SIGTERM)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        procs.update({i: start(i) for i in range(n)})
        code = _watch(procs, start, stopping, ready_r, metrics_dir, n, config, port, announce, limits)
    finally:
        for p in procs.values():
            _signal(p, signal.SIGTERM)
        waited = _wait_all(procs, config)
        code = code or waited
        for s, h in previous.items():
            signal.signal(s, h)
        for rd in held:
            rd.unlock()
        reserve.close()
        os.close(ready_r)
        os.close(ready_w)
        shutil.rmtree(folder, ignore_errors=True)
    if code:
        raise SystemExit(code)


def _watch(
    procs: dict[int, subprocess.Popen],
    start: Callable[[int], subprocess.Popen],
    stopping: list[int],
    ready_r: int,
    metrics_dir: Path,
    n: int,
    config: ServeConfig,
    port: int,
    announce: Callable[[str, int], None],
    limits: str,
) -> int:
    """Until a signal: note workers that get ready, announce once all are, restart those that die.
    Returns the exit code (0 after a signal)."""
    from prometheus_client import multiprocess  # noqa: PLC0415

    ready: set[int] = set()
    announced = False
    deaths: deque[float] = deque()
    pending = b""
    while not stopping:
        readable, _, _ = select.select([ready_r], [], [], 0.05)
        if readable:
            pending += os.read(ready_r, 4096)
            *lines, pending = pending.split(b"\n")
            for line in lines:
                index, pid = (int(x) for x in line.split())
                if procs.get(index) is not None and procs[index].pid == pid:
                    ready.add(index)
                    if announced:
                        log.info("worker %d is back (pid %d)", index, pid)
        if not announced and len(ready) == n:
            host = f"[{config.host}]" if ":" in config.host else config.host
            announce(f"http://{host}:{port}", n)
            log.info("limits: %s (each of %d workers)", limits, n)
            announced = True
        for index, p in list(procs.items()):
            status = p.poll()
            if status is None:
                continue
            multiprocess.mark_process_dead(p.pid, str(metrics_dir))
            if not announced:
                log.error("worker %d (pid %d) exited with %s before it was ready: stopping", index, p.pid, status)
                del procs[index]
                return status if status > 0 else 1
            now = time.monotonic()
            deaths.append(now)
            while deaths and deaths[0] < now - RESTART_WINDOW_S:
                deaths.popleft()
            if len(deaths) > MAX_RESTARTS:
                log.error(
                    "worker %d (pid %d) exited with %s; %d workers died within %g s: stopping",
                    index,
                    p.pid,
                    status,
                    len(deaths),
                    RESTART_WINDOW_S,
                )
                del procs[index]
                return 1
            log.warning("worker %d (pid %d) exited with %s: restarting it", index, p.pid, status)
            ready.discard(index)
            procs[index] = start(index)
    return 0


def _wait_all(procs: dict[int, subprocess.Popen], config: ServeConfig) -> int:
    """Wait for every worker's graceful exit (killed past its own time limits); the first bad exit code."""
    limit = time.monotonic() + config.graceful_shutdown_s + 2 * config.monitor.drain_s + 30  # shadow, then monitor
    code = 0
    for p in procs.values():
        try:
            status = p.wait(max(0.1, limit - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            status = p.wait()
        if status and not code:
            code = status if status > 0 else 1
    return code


def _signal(p: subprocess.Popen, sig: int) -> None:
    if p.poll() is None:
        try:
            p.send_signal(sig)
        except ProcessLookupError:
            pass


def _reuse_port() -> bool:
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _reserve(host: str, port: int) -> socket.socket:
    """A bound, non-listening SO_REUSEPORT socket: holds the port while no worker listens, takes no
    connection."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}", field="--port") from None
    return sock
