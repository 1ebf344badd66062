"""Reports: one self-contained HTML file from one or many run directories."""

from __future__ import annotations

from pathlib import Path

from ..scoring import NAPolicy
from ._data import ReportData, RunEntry, SampleEntry, SampleRun, ScenarioEntry, collect_report
from ._html import render_report, write_report

__all__ = [
    "ReportData",
    "RunEntry",
    "SampleEntry",
    "SampleRun",
    "ScenarioEntry",
    "build_report",
    "collect_report",
    "render_report",
    "write_report",
]


def build_report(
    run_dirs: list[str],
    output: str | Path,
    *,
    title: str | None = None,
    baseline: str | None = None,
    alpha: float | None = None,
    na_policy: NAPolicy | None = None,
    bootstrap: int | None = None,
) -> ReportData:
    """Read ``run_dirs`` and write the report to ``output``; returns what it shows."""
    data = collect_report(
        run_dirs, title=title, baseline=baseline, alpha=alpha, na_policy=na_policy, bootstrap=bootstrap
    )
    write_report(data, output)
    return data
