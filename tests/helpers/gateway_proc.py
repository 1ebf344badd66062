"""Run ``specalign serve`` as a real process on 127.0.0.1 for tests and benchmarks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

READY = re.compile(r"specalign gateway ready: (http://\S+)/v1 ")


class GatewayProcess:
    """A running gateway: its URL, its process, and everything it printed."""

    def __init__(self, proc: subprocess.Popen, url: str, lines: list[str]):
        self.proc = proc
        self.url = url
        self.lines = lines

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for the graceful exit; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "specalign.cli", "serve", "--port", "0", *args]


@contextmanager
def running_gateway(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120.0
) -> Iterator[GatewayProcess]:
    """Start the gateway, wait for its ready line, and stop it (SIGTERM) afterwards."""
    full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        serve_command(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=full_env, cwd=cwd
    )
    lines: list[str] = []
    ready = threading.Event()
    found: list[str] = []

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            m = READY.search(line)
            if m and not found:
                found.append(m.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.05):
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError("the gateway did not get ready:\n" + "\n".join(lines))
    if not found:
        proc.wait(10)
        raise RuntimeError(f"the gateway exited with {proc.returncode}:\n" + "\n".join(lines))
    gw = GatewayProcess(proc, found[0], lines)
    try:
        yield gw
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
