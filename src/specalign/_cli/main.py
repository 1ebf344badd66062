"""The ``specalign`` command: the app assembled from its command groups, and ``main()``, the entry point."""

from __future__ import annotations

import sys

import typer

from .. import __version__
from ..errors import SpecalignError
from . import agreement, data, gate, report, run, scenario, serve
from .common import err, out

app = typer.Typer(
    help="Measure how well a language model follows a deployment's specifications (SpecBench, Align3).\n\n"
    "Example: specalign run --limit 3",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        out.print(f"specalign {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Measure how well a language model follows a deployment's specifications."""


app.command("run")(run.run)
app.command("score")(run.score)
app.command("compare")(run.compare)
app.command("gate")(gate.gate)
app.command("agreement")(agreement.agreement)
app.command("report")(report.report)
app.command("export")(report.export)
app.command("data")(data.data)
app.command("methods")(data.methods)
app.command("cache")(data.cache)
app.command("serve")(serve.serve)
app.add_typer(scenario.scenario_app, name="scenario")
scenario.add_aliases(app)


def main() -> None:
    """Entry point: one clear line and a non-zero exit code for expected errors, never a traceback."""
    usage_error: type[Exception] = next(  # typer's own click
        c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"
    )
    _check_argv_text()
    from .._terminal import log_warnings_to_stderr  # noqa: PLC0415

    log_warnings_to_stderr()
    try:
        code = app(standalone_mode=False)
    except usage_error as e:  # a bad option or argument: one line, like every other input error
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:
            print(ctx.get_help())
            sys.exit(0)
        err.print(f"[red]error:[/red] {_usage_line(e)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Abort:
        err.print("interrupted: finished samples are saved; rerun the same command to resume")
        sys.exit(130)
    except SpecalignError as e:
        from .._terminal import plain  # noqa: PLC0415

        err.print(f"[red]error:[/red] {plain(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted: finished samples are saved; rerun the same command to resume")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def _check_argv_text() -> None:
    """Arguments are read as UTF-8: bytes that are not (Python keeps them as lone surrogates) could not be
    written to any record, so they are refused up front, naming the argument."""
    from .._terminal import plain  # noqa: PLC0415
    from .._unicode import repair_text  # noqa: PLC0415

    for arg in sys.argv[1:]:
        if repair_text(arg)[1]:
            err.print(
                f"[red]error:[/red] argument {plain(repr(arg))} is not valid UTF-8 (specalign reads its "
                "arguments, paths included, as UTF-8)",
                highlight=False,
                soft_wrap=True,
            )
            sys.exit(2)


def _usage_line(e) -> str:  # noqa: ANN001
    from .._terminal import plain  # noqa: PLC0415

    message = " ".join(e.format_message().split())
    message = message.replace(": Value error, ", ": ", 1)  # pydantic's prefix (typer's pydantic-based parsing)
    command = e.ctx.command_path if e.ctx is not None else "specalign"
    return plain(f"{message} (see {command} --help)")
