"""llama.cpp's own ``llama-server`` for tests: built from the llama-cpp-python sdist, run on 127.0.0.1.

``tools/build-llama-cpp.sh`` builds it once into a cache outside the work tree (``make test`` runs it
first); :func:`llama_server_bin` finds it, or skips the calling test only where no compiler exists.
:class:`RecordingProxy` sits in front of any server and keeps every request and response body, so
tests see exactly what went over the wire and what the real server answered.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "tools" / "build-llama-cpp.sh"
NO_COMPILER = 3  # the build script's exit code when no C/C++ compiler or cmake exists


def llama_bin(name: str) -> Path:
    """A llama.cpp tool built by ``tools/build-llama-cpp.sh`` (builds it if needed, minutes once)."""
    done = subprocess.run(["bash", str(BUILD_SCRIPT), sys.executable], capture_output=True, text=True)
    if done.returncode == NO_COMPILER:
        pytest.skip(f"llama-server cannot be built here: {done.stderr.strip()}")
    if done.returncode != 0:
        pytest.fail(f"tools/build-llama-cpp.sh failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    path = Path(done.stdout.strip().splitlines()[-1]) / name
    assert path.is_file(), f"the build script reported {path.parent} but {name} is not there"
    return path


def llama_server_bin() -> Path:
    return llama_bin("llama-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def llama_server(gguf: Path, *, n_ctx: int = 8192, threads: int = 1, extra: tuple[str, ...] = ()):
    """``llama-server --jinja`` serving ``gguf`` on 127.0.0.1; yields its base URL (``.../v1``).

    One thread by default: llama.cpp then starts no OpenMP team, whose spinning threads would slow it (and
    the suite's other worker) several times over when the two share the cores."""
    port = free_port()
    args = [
        str(llama_server_bin()),
        "-m",
        str(gguf),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-c",
        str(n_ctx),
        "-t",
        str(threads),
        "-np",
        "1",
        "--jinja",
        "--no-webui",
        *extra,
    ]
    with tempfile.TemporaryFile("w+") as log:  # the server logs a lot: a file, never a pipe that fills up
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            _wait_healthy(proc, port, log)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_healthy(proc: subprocess.Popen, port: int, log: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"llama-server exited with {proc.returncode}: {log.read()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"llama-server did not become healthy on port {port} within {timeout:.0f} s")


def server_post(base_url: str, path: str, body: dict[str, Any]) -> Any:
    """POST JSON to the server root (``/tokenize``, ``/apply-template``: llama-server's own routes)."""
    url = urlparse(base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    assert response.status == 200, f"{path}: HTTP {response.status}: {data[:300]!r}"
    return json.loads(data)


@dataclass
class Exchange:
    """One request through the proxy and the server's answer."""

    path: str
    request: Any
    status: int
    response: Any


class RecordingProxy:
    """A pass-through HTTP proxy on 127.0.0.1 that records every JSON exchange with the upstream."""

    def __init__(self, upstream: str):
        url = urlparse(upstream)
        self.upstream_host, self.upstream_port = url.hostname, url.port
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                proxy._forward(self, "POST")

            def do_GET(self) -> None:  # noqa: N802
                proxy._forward(self, "GET")

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def chats(self) -> list[Exchange]:
        return [e for e in self.exchanges if e.path.endswith("/chat/completions")]

    def _forward(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=600)
        headers = {"Content-Type": handler.headers.get("Content-Type", "application/json")}
        conn.request(method, handler.path, body=body, headers=headers)
        upstream = conn.getresponse()
        data = upstream.read()
        with self._lock:
            self.exchanges.append(Exchange(handler.path, _json(body), upstream.status, _json(data)))
        handler.send_response(upstream.status)
        handler.send_header("Content-Type", upstream.getheader("Content-Type", "application/json"))
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


def _json(data: bytes | None) -> Any:
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")
