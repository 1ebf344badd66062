"""Time each step of building a 20-prompt scenario on the embedded model, through the CLI.

scenario new → lint → curate (14 unsafe + 6 safe) → attack → review (sheet export, every item
accepted, import, apply) → run. Writes a section of docs/benchmarks.md. Usage:

    .venv/bin/python benchmarks/scenario_build.py
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests" / "helpers"))
from demo import write_section  # noqa: E402
from review_sheet import accept_all  # noqa: E402

DESCRIPTION = (
    "An assistant for a garden centre that answers questions from home gardeners about plants, soil, "
    "tools, pests and garden safety, including households with children and pets."
)


def step(name: str, args: list[str], rows: list[tuple[str, float, str]], env: dict[str, str]) -> str:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "specalign.cli", *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode not in (0,):
        raise SystemExit(f"{name} failed ({p.returncode}): {p.stderr[-1500:]}")
    last = (p.stderr.strip().splitlines() or [""])[-1]
    rows.append((name, wall, last))
    print(f"{name}: {wall:.0f} s — {last}", flush=True)
    return p.stdout


def main() -> None:
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT / "src"),
            "SPECALIGN_CACHE_DIR": str(Path(tmp) / "cache"),
            "COLUMNS": "200",
        }
        data, folder = Path(tmp) / "data", Path(tmp) / "data" / "garden-helper"
        step("scenario new", ["scenario", "new", "Garden Helper", "-d", DESCRIPTION, "--out", str(data)], rows, env)
        step("scenario lint", ["scenario", "lint", str(folder)], rows, env)
        step(
            "curate 14 unsafe + 6 safe", ["scenario", "curate", str(folder), "--unsafe", "14", "--safe", "6"], rows, env
        )
        step(
            "attack (2 rewrites, then 4 more; 2 checks each)",
            [
                "scenario",
                "attack",
                str(folder),
                "--attempts",
                "2",
                "--escalation",
                "2",
                "--max-attempts",
                "6",
                "--checks",
                "2",
            ],
            rows,
            env,
        )
        sheet = Path(tmp) / "sheet.csv"
        t0 = time.perf_counter()
        step("review: export sheet", ["scenario", "review", str(folder), "--export", str(sheet)], rows, env)
        accept_all(sheet)
        step(
            "review: import decisions",
            ["scenario", "review", str(folder), "--import", str(sheet), "--reviewer", "bench"],
            rows,
            env,
        )
        step("review: apply", ["scenario", "review", str(folder), "--apply", str(Path(tmp) / "final")], rows, env)
        review_s = time.perf_counter() - t0
        step(
            "run (embedded target and judge)",
            ["run", "--data", str(Path(tmp) / "final"), "--limit", "0", "--out", str(Path(tmp) / "run")],
            rows,
            env,
        )
    table = ["| step | wall time | last line it printed |", "|---|---:|---|"]
    table += [f"| {name} | {wall:.0f} s | {last.replace('|', '/')[:160]} |" for name, wall, last in rows]
    body = (
        f"`.venv/bin/python benchmarks/scenario_build.py` on {platform.machine()}, {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d')}. Every step on the embedded SmolLM2-135M through the CLI, from a "
        "one-paragraph description to an evaluated 20-prompt scenario; the review accepts every item "
        f"through a sheet (export, import, apply: {review_s:.0f} s in all). The attack budget is cut to 6 rewrites per "
        "prompt (the default is 4, then 40) to fit 2 cores. The 135M model's drafts and prompts are poor: these "
        "are the costs of the pipeline, not a scenario worth keeping.\n\n" + "\n".join(table) + "\n"
    )
    write_section("Building a scenario on the embedded model", body)
    print(body)


if __name__ == "__main__":
    main()
