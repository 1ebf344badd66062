"""``specalign report`` and ``export``: run directories as an HTML report or as rows for pandas."""

from __future__ import annotations

import typer

from .common import (
    BaselineOption,
    BootstrapOption,
    ExportFormat,
    RecomputeAlphaOption,
    RecomputeNaPolicyOption,
    RunDirsArgument,
    err,
    value,
)


def report(
    run_dirs: RunDirsArgument,
    output: str = typer.Option("report.html", "--output", "-o", help="HTML file to write."),
    title: str | None = typer.Option(None, "--title", help="Heading of the report (default: the models)."),
    baseline: BaselineOption = None,
    alpha: RecomputeAlphaOption = None,
    na_policy: RecomputeNaPolicyOption = None,
    bootstrap: BootstrapOption = None,
) -> None:
    """Write one self-contained HTML report of runs: scores, trade-off plots, per-spec failures, every sample.

    The file needs no network to open; share it as it is. No model calls.

    Example: specalign report runs/ttd/vanilla runs/ttd/align3 -o report.html
    """
    from ..report import collect_report, write_report  # noqa: PLC0415
    from ..runs import check_output  # noqa: PLC0415

    check_output(output, run_dirs)
    data = collect_report(
        run_dirs, title=title, baseline=baseline, alpha=alpha, na_policy=value(na_policy), bootstrap=bootstrap
    )
    size = write_report(data, output)
    answers = sum(len(s.runs) for s in data.samples)
    err.print(
        f"wrote {output} ({size / 1e6:.1f} MB): {len(data.runs)} run{'s' if len(data.runs) != 1 else ''}, {len(data.samples):,} samples, "
        f"{answers:,} answers"
    )


def export(
    run_dirs: RunDirsArgument,
    output: str = typer.Option(..., "--output", "-o", help="File to write: .csv or .jsonl."),
    fmt: ExportFormat | None = typer.Option(None, "--format", "-f", help="csv or jsonl (default: from the file name)."),
    with_text: bool = typer.Option(False, "--with-text", help="Also the prompt, thought and response on every row."),
    raw_cells: bool = typer.Option(
        False,
        "--raw-cells",
        help="CSV: write cells that start with = + - @ as they are. "
        "By default they get a leading ' so that spreadsheets show them as text, never "
        "run them as formulas.",
    ),
) -> None:
    """Export one row per sample × spec verdict (CSV or JSON lines), ready for pandas (no model calls).

    Example: specalign export runs/bundled-local-vanilla runs/bundled-local-align3 -o verdicts.csv
    """
    from ..runs import check_output, check_runs, export_verdicts  # noqa: PLC0415

    check_runs(run_dirs)  # a bad run directory is refused before the output file is opened
    check_output(output, run_dirs)
    n = export_verdicts(run_dirs, output, value(fmt), with_text=with_text, raw_cells=raw_cells)
    err.print(f"wrote {n:,} rows to {output}")
