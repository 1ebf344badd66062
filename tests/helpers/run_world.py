"""Evaluation runs against the scripted server, as the run tests make them: one configuration shape,
runs in this process, ``specalign`` as a process of its own, and the records a run directory holds."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from repo_paths import SRC
from scripted_server import Responder, ScriptedServer
from specalign.runs import Evaluation, RunConfig
from specbench_world import world

CLI = [sys.executable, "-m", "specalign.cli"]


def model_spec(server: ScriptedServer) -> str:
    """The server's model as a ``--model``/``--judge`` value."""
    return f"openai:scripted-model@{server.base_url}"


def run_config(server: ScriptedServer, out: Path, **overrides: Any) -> RunConfig:
    """The bundled child and code scenarios, three prompts each, the server's model as target and judge."""
    spec = model_spec(server)
    settings = dict(
        data="bundled", scenarios=["child", "code"], limit=3, model=spec, judge=spec, out=str(out), concurrency=4
    )
    return RunConfig(**{**settings, **overrides})


def run_evaluation(config: RunConfig):
    """One evaluation, in this process, to its end."""
    return asyncio.run(Evaluation(config).run())


def evaluate(server: ScriptedServer, out: Path, **overrides: Any):
    """:func:`run_config`'s run, in this process, to its end."""
    return run_evaluation(run_config(server, out, **overrides))


def runs_in(folder: Path, plan: dict[str, tuple[Responder, dict[str, Any]]], **common: Any) -> dict[str, str]:
    """One finished run per entry of ``plan`` (``name: (responder, overrides)``), in plan order, each against
    its own scripted server, in ``folder / name``; returns each name's run directory."""
    for name, (responder, overrides) in plan.items():
        with ScriptedServer(responder) as server:
            evaluate(server, folder / name, **{**common, **overrides})
    return {name: str(folder / name) for name in plan}


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for ``specalign`` processes: this tree's sources, a wide terminal."""
    return {**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "200", **extra}


def start_cli(*args: str, **kw: Any) -> subprocess.Popen:
    """``specalign ARGS`` started as a process, its stdout and stderr piped (text)."""
    return subprocess.Popen(
        [*CLI, *args], env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw
    )


def run_cli(*args: str, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess:
    """``specalign ARGS`` run to its end, output captured (text)."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=cli_env(), timeout=timeout, **kw)


def records(path: Path) -> list[dict]:
    """The records of a JSONL file, whole lines only (a running process may be writing the next); none before
    the file exists."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().split("\n")[:-1] if line]


def judged(run_dir: Path) -> set[str]:
    """The samples a run directory holds a whole judgment record for."""
    return {j["sample_id"] for j in records(run_dir / "judgments.jsonl")}


def slowed(seconds: float, responder: Responder = world) -> Responder:
    """``responder`` taking ``seconds`` per answer: a slow model, so that a run is still going when a test acts."""

    def slow(body):
        time.sleep(seconds)
        return responder(body)

    return slow
