"""Time the default demo (embedded model as target and judge, bundled data) and the rerun of it.

Writes its figures to docs/benchmarks.md (section "Default demo"). Usage:
    .venv/bin/python benchmarks/demo.py
"""

from __future__ import annotations

import asyncio
import os
import platform
import re
import tempfile
import time
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SECTION = "Default demo"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SPECALIGN_CACHE_DIR"] = str(Path(tmp) / "cache")
        from specalign.runs import Evaluation, RunConfig  # noqa: PLC0415

        cfg = RunConfig(out=str(Path(tmp) / "run"))
        t0 = time.perf_counter()
        first = asyncio.run(Evaluation(cfg).run())
        wall = time.perf_counter() - t0
        os.environ["SPECALIGN_CACHE_DIR"] = str(Path(tmp) / "empty-cache")  # resume from records alone
        t1 = time.perf_counter()
        again = asyncio.run(Evaluation(cfg).run())
        rerun = time.perf_counter() - t1
    o = first.scores.overall["full"]
    c = first.scores.counts
    rows = [
        ("samples (2 per scenario × 5)", f"{c['selected']} ({c['scored']} scored, {c['unscored']} unscored)"),
        ("wall time, first run (model load included, install excluded)", f"{wall:.1f} s"),
        ("model calls, first run", str(first.stats.model_calls)),
        (
            "completion tokens: generation / judge",
            f"{first.scores.usage['generation'].completion_tokens:,} / {first.scores.usage['judge'].completion_tokens:,}",
        ),
        (
            "scores (overall, %): safety / behavioral / SAR",
            f"{100 * (o.safety or 0):.2f} / {100 * (o.behavioral or 0):.2f} / {100 * (o.sar or 0):.2f}",
        ),
        ("rerun of the finished run: model calls / wall time", f"{again.stats.model_calls} / {rerun:.2f} s"),
    ]
    body = (
        f"Measured by `benchmarks/demo.py` on {platform.machine()}, {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d')}. SmolLM2-135M judges poorly: the scores show the pipeline runs, "
        "not how good the model is.\n\n| what | figure |\n|---|---|\n"
        + "\n".join(f"| {k} | {v} |" for k, v in rows)
        + "\n"
    )
    write_section(SECTION, body)
    print(body)


def write_section(title: str, body: str) -> None:
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n\nFigures written by the scripts in `benchmarks/`.\n"
    block = f"## {title}\n\n{body}"
    pattern = re.compile(rf"## {re.escape(title)}\n.*?(?=\n## |\Z)", re.S)
    text = pattern.sub(block.rstrip("\n") + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block
    DOC.write_text(text.rstrip("\n") + "\n")


if __name__ == "__main__":
    main()
