"""``specalign gate``: pass or fail a run on conditions over its scores, for CI."""

from __future__ import annotations

import typer

from .common import BootstrapOption, err, out, path_value


def gate(
    run_dir: str = typer.Argument(..., help="A run directory written by `specalign run`."),
    min_: list[str] | None = typer.Option(
        None,
        "--min",
        help="METRIC=X: the overall point estimate of sar, safety or behavioral is at least X (0.70 or 70%); "
        "repeatable.",
    ),
    max_violation: list[str] | None = typer.Option(
        None,
        "--max-violation",
        help="SCENARIO/SPEC=X: the share of the scenario's scored samples violating the spec (S3, B2) is at most "
        "X; a bare SPEC=X only for a run of one scenario. Repeatable.",
    ),
    baseline: str | None = typer.Option(
        None, "--baseline", "-b", help="Run directory that --no-regression compares against."
    ),
    no_regression: bool = typer.Option(
        False,
        "--no-regression",
        help="Fail when SAR, safety or behavioral dropped against --baseline with a paired 95% interval "
        "that leaves 0 out.",
    ),
    strict_ci: bool = typer.Option(
        False,
        "--strict-ci",
        help="Check the 95% interval's low end (high end for --max-violation) instead of the point estimate.",
    ),
    bootstrap: BootstrapOption = None,
    junit: str | None = typer.Option(None, "--junit", help="Also write the conditions as JUnit XML to this file."),
    summary: str | None = typer.Option(
        None, "--summary", help='Also append a Markdown summary to this file (e.g. "$GITHUB_STEP_SUMMARY").'
    ),
) -> None:
    """Pass or fail a run for CI: exit 0 when every condition holds, 1 when one falls short, 2 for bad input.

    One line per condition: PASS or FAIL, the measured value and its 95% interval. The point estimate is
    checked (the interval's end with --strict-ci); --no-regression fails only a drop whose interval excludes 0.

    Example: specalign gate runs/candidate --min sar=0.70 --min safety=90% --max-violation child/S3=0.05

    Example: specalign gate runs/candidate --baseline runs/main --no-regression --junit gate.xml
    """
    from pathlib import Path  # noqa: PLC0415

    from .._terminal import plain  # noqa: PLC0415
    from ..errors import ConfigError  # noqa: PLC0415
    from ..runs import (  # noqa: PLC0415
        check_output,
        gate_junit,
        gate_markdown,
        parse_max_violation,
        parse_min,
        run_gate,
    )

    path_value(run_dir, "RUN_DIR")
    path_value(baseline, "--baseline")
    mins = parse_min(min_ or [])
    violations = parse_max_violation(max_violation or [])
    inputs = [run_dir, *([baseline] if baseline else [])]
    for target, field in ((junit, "--junit"), (summary, "--summary")):
        if target is not None:
            path_value(target, field)
            check_output(target, inputs, field=field)
    result = run_gate(
        run_dir,
        mins=mins,
        max_violations=violations,
        baseline=baseline,
        no_regression=no_regression,
        strict_ci=strict_ci,
        bootstrap=bootstrap,
    )
    for warning in result.warnings:
        err.print(f"[yellow]warning: {plain(warning)}[/yellow]", soft_wrap=True)
    for line in result.lines():
        out.print(plain(line), highlight=False, soft_wrap=True)
    try:
        if junit is not None:
            Path(junit).write_bytes(gate_junit(result))
        if summary is not None:
            with open(summary, "a", encoding="utf-8") as f:
                f.write(gate_markdown(result))
    except OSError as e:
        raise ConfigError(f"cannot write {e.filename}: {e.strerror or e}") from None
    if not result.passed:
        raise typer.Exit(1)
