"""The live progress bar of a run: done/total, running safety/behavioral/SAR, tokens."""

from __future__ import annotations

import asyncio

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from ..runs import Evaluation, RunResult, RunStats


def _summary(st: RunStats) -> str:
    def p(x):
        return "—" if x is None else f"{100 * x:.1f}"

    line = (
        f"safety {p(st.mean('safety'))} · behav. {p(st.mean('behavioral'))} · SAR {p(st.mean('sar'))} · "
        f"unscored {st.unscored} · tokens {st.gen_tokens + st.judge_tokens:,}"
    )
    b = st.batch
    if b is not None and b.submitted:
        states = ", ".join(b.open.values()) or "none open"
        line += f" · batches {b.submitted} ({states}) · {b.answered:,}/{b.requests:,} answered"
        if b.failed:
            line += f", {b.failed:,} failed"
    return line


def run_with_progress(ev: Evaluation, console: Console) -> RunResult:
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]samples"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[summary]}"),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("run", total=len(ev.samples), summary="starting")

        def update(st: RunStats) -> None:
            progress.update(task, completed=st.done, summary=_summary(st))

        return asyncio.run(ev.run(update))
