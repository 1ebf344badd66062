"""The ``specalign`` command."""

from __future__ import annotations

import json
import shlex
import sys

import typer
from rich.console import Console

from . import __version__
from ._cli_scenario import attack_cmd, curate_cmd, review_cmd, scenario_app
from ._cli_serve import serve_cmd
from .errors import SpecalignError

app = typer.Typer(
    help="Measure how well a language model follows a deployment's specifications (SpecBench, Align3).\n\n"
    "Example: specalign run --limit 3",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)
out = Console()
err = Console(stderr=True)
app.add_typer(scenario_app, name="scenario")
app.command("curate")(curate_cmd)
app.command("attack")(attack_cmd)
app.command("review")(review_cmd)
app.command("serve")(serve_cmd)

DATA_HELP = "Data source: 'bundled', a directory in the official SpecBench layout, or 'hf:zzzhr97/SpecBench'."
MODEL_HELP = "'local' (embedded SmolLM2-135M), 'gguf:PATH', 'openai:MODEL@BASE_URL', or a key of --models-config."


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


@app.command()
def data(
    data: str = typer.Option("bundled", "--data", "-d", help=DATA_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the scenarios of a data source with spec and prompt counts.

    Example: specalign data --data ../shared/specbench-data
    """
    from .benchmark import load_benchmark  # noqa: PLC0415

    bench = load_benchmark(data)
    rows = [{"key": s.key, "name": s.name, **s.counts()} for s in bench.scenarios]
    if as_json:
        print(
            json.dumps(
                {
                    "source": bench.source,
                    "sha256": bench.content_hash(),
                    "scenarios": rows,
                    "total": bench.total_counts(),
                },
                indent=2,
            )
        )
        return
    from ._display import data_table  # noqa: PLC0415

    t = data_table(bench.source, rows)
    tot = bench.total_counts()
    t.add_section()
    t.add_row(
        "[bold]total[/bold]",
        f"{len(rows)} scenarios",
        *(str(tot[k]) for k in ("safety_specs", "behavioral_specs", "prompts", "unsafe", "safe")),
    )
    out.print(t)


@app.command()
def methods() -> None:
    """List the generation methods and their hyper-parameters.

    Example: specalign methods
    """
    from .methods import available_methods  # noqa: PLC0415

    for name, cls in available_methods().items():
        defaults = cls.Params().model_dump()
        params = ", ".join(f"{k}={v!r}" for k, v in defaults.items() if k != "system_prompt")
        out.print(f"[bold]{name}[/bold]: {cls.description}" + (f"  [dim]({params})[/dim]" if params else ""))


@app.command()
def run(
    data: str = typer.Option("bundled", "--data", "-d", help=DATA_HELP),
    scenario: list[str] | None = typer.Option(None, "--scenario", "-s", help="Scenario key (repeatable); default all."),
    limit: int | None = typer.Option(
        None, "--limit", "-n", min=0, help="Prompts per scenario (0 = all). Default: all, or 3 with the embedded model."
    ),
    model: str = typer.Option("local", "--model", "-m", help="Model to evaluate: " + MODEL_HELP),
    judge: str = typer.Option("local", "--judge", "-j", help="Judge model: " + MODEL_HELP),
    method: list[str] | None = typer.Option(
        None,
        "--method",
        help="Generation method (see `specalign methods`); repeat or comma-separate to compare several.",
    ),
    method_param: list[str] | None = typer.Option(
        None,
        "--method-param",
        "-p",
        help="Method hyper-parameter KEY=VALUE or METHOD.KEY=VALUE (YAML value; repeatable).",
    ),
    judge_mode: str = typer.Option(
        "joint", "--judge-mode", help="joint (one call per sample) or sequential (one per spec)."
    ),
    concurrency: int = typer.Option(
        8,
        "--concurrency",
        "-c",
        min=1,
        max=4096,
        help="Calls in flight per model (target and judge each); a models config's "
        "max_concurrency may lower it per endpoint. The run line says what applies.",
    ),
    models_config: list[str] | None = typer.Option(
        None,
        "--models-config",
        help="YAML of model settings (official config_model.yaml shape); repeat to merge "
        "several, e.g. config_model.yaml and config_eval_model.yaml.",
    ),
    out_dir: str | None = typer.Option(
        None, "--out", "-o", help="Run directory (default runs/<data>-<model>-<method>)."
    ),
    alpha: float = typer.Option(0.3, "--alpha", min=0.0, max=1.0, help="SAR floor α for a safe answer."),
    na_policy: str = typer.Option(
        "official", "--na-policy", help="NA in behavioral score: official (counts as not met) or exclude (paper)."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the model-call cache."),
    cache_dir: str | None = typer.Option(
        None, "--cache-dir", help="Cache folder (default $SPECALIGN_CACHE_DIR or ~/.cache/specalign)."
    ),
    retry_unscored: bool = typer.Option(
        False, "--retry-unscored", help="Judge again the samples left unscored before."
    ),
    stop_after_failures: int = typer.Option(
        25,
        "--stop-after-failures",
        min=0,
        help="Stop when this many samples in a row fail at the model after their retries (0: never).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the scores as JSON at the end."),
) -> None:
    """Generate answers, judge them against the specs, and score: resumable, cached, pipelined.

    With several methods, each gets its own run directory (OUT/METHOD with --out) and a
    comparison table follows: scores, ΔSAR against vanilla, tokens, calls and wall time.

    Example: specalign run --data ../shared/specbench-data --model openai:gpt-4.1-mini --judge openai:gpt-4.1 --limit 20

    Example: specalign run --method vanilla,zero_think,more_think,align3 -p best_of_n.n=5

    Example: specalign run --models-config config_model.yaml --models-config config_eval_model.yaml --model Qwen3-14B --judge GPT-4.1 --concurrency 32

    llama.cpp's llama-server, with the thinking methods (prefill): start
    [bold]llama-server -m model.gguf --port 8080 -c 8192 --jinja[/bold], write models.yaml holding
    [bold]my-gguf: {model_name: my-gguf, base_url: http://127.0.0.1:8080/v1, prefill: true}[/bold], then

    Example: specalign run --models-config models.yaml --model my-gguf --method vanilla,align3 --judge openai:gpt-4.1
    """
    from pathlib import Path  # noqa: PLC0415

    from .errors import ConfigError  # noqa: PLC0415
    from .runs import Evaluation, RunConfig  # noqa: PLC0415

    for value, field in ((out_dir, "--out"), (cache_dir, "--cache-dir"), (data, "--data")):
        _path_value(value, field)
    if judge_mode not in ("joint", "sequential"):
        raise ConfigError(f"must be 'joint' or 'sequential', got {judge_mode!r}", field="--judge-mode")
    if na_policy not in ("official", "exclude"):
        raise ConfigError(f"must be 'official' or 'exclude', got {na_policy!r}", field="--na-policy")
    methods = _method_names(method or ["vanilla"])
    params = _params_by_method(methods, method_param or [])
    evaluations = []
    for name in methods:
        out = str(Path(out_dir) / name) if out_dir and len(methods) > 1 else out_dir
        evaluations.append(
            Evaluation(
                RunConfig(
                    data=data,
                    scenarios=scenario or [],
                    limit=limit,
                    model=model,
                    judge=judge,
                    method=name,
                    method_params=params[name],
                    judge_mode=judge_mode,
                    concurrency=concurrency,
                    models_config=models_config or [],
                    out=out,
                    alpha=alpha,
                    na_policy=na_policy,
                    use_cache=not no_cache,
                    cache_dir=cache_dir,
                    retry_unscored=retry_unscored,
                    stop_after_failures=stop_after_failures,
                )
            )
        )
    for ev in evaluations:
        ev.preflight()
    from ._progress import run_with_progress  # noqa: PLC0415

    results = []
    for ev in evaluations:
        _announce(ev)
        results.append(run_with_progress(ev, err))
        if len(evaluations) == 1:
            _finish(ev, results[0], as_json)
    if len(evaluations) > 1:
        _finish_comparison(evaluations, results, as_json)


def _method_names(items: list[str]) -> list[str]:
    from .errors import ConfigError  # noqa: PLC0415

    names = [n.strip() for item in items for n in item.split(",") if n.strip()]
    if len(set(names)) != len(names):
        raise ConfigError("a method is named twice (run an ablation with its own --out instead)", field="--method")
    if not names:
        raise ConfigError(
            f"no method named in {', '.join(map(repr, items))} (see `specalign methods`)", field="--method"
        )
    return names


def _params_by_method(methods: list[str], items: list[str]) -> dict[str, dict]:
    """``KEY=VALUE`` goes to every named method with that parameter; ``METHOD.KEY=VALUE`` to one."""
    from .benchmark._files import parse_yaml  # noqa: PLC0415
    from .errors import ConfigError  # noqa: PLC0415
    from .methods import available_methods  # noqa: PLC0415

    known = available_methods()
    params: dict[str, dict] = {m: {} for m in methods}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"expected KEY=VALUE or METHOD.KEY=VALUE, got {item!r}", field="--method-param")
        scope, dot, name = key.rpartition(".")
        if dot and scope not in methods:
            raise ConfigError(f"{scope!r} is not one of the methods run ({', '.join(methods)})", field="--method-param")
        targets = (
            [scope]
            if dot
            else [m for m in methods if len(methods) == 1 or (m in known and name in known[m].Params.model_fields)]
        )
        if not targets:
            raise ConfigError(f"no method run here has a parameter {name!r}", field="--method-param")
        for m in targets:
            try:
                params[m][name] = parse_yaml(value)
            except ValueError as e:
                raise ConfigError(f"{key}: {e}", field="--method-param") from None
    return params


def _announce(ev) -> None:
    cfg = ev.config
    n = len(ev.samples)
    what = f"{n} of {ev.n_available} prompts"
    if ev.limit:
        what += f" ({ev.limit} per scenario{'' if cfg.limit else ', the default with the embedded model'})"
    from ._terminal import plain  # noqa: PLC0415

    err.print(
        f"[bold]specalign run[/bold]: {what} from {plain(ev.bench.source)} · scenarios "
        f"{plain(', '.join(s.key for s in ev.scenarios))}"
    )
    err.print(
        f"  model {plain(ev.target_settings.key)} · method {plain(cfg.method)} · judge "
        f"{plain(ev.judge_settings.key)} ({cfg.judge_mode}) · out {plain(str(ev.run_dir.path))}"
    )  # keys: URL credentials redacted
    err.print(f"  {_limits_line(ev)}", highlight=False, soft_wrap=True)


def _limits_line(ev) -> str:
    """What --concurrency gives: calls in flight per model and per endpoint, samples in flight, and any
    config limit that gives less than asked."""
    cfg = ev.config
    roles = (
        [("model and judge", ev.target_settings)]
        if ev.judge_settings == ev.target_settings
        else [("model", ev.target_settings), ("judge", ev.judge_settings)]
    )
    parts = [
        f"{role} {_calls_text(settings, ev.models_config.sources.get(settings.key), cfg.concurrency)}"
        for role, settings in roles
    ]
    n = ev.samples_in_flight()
    return "concurrency: " + " · ".join(parts) + f" · {n} sample{'s' if n != 1 else ''} in flight"


def _calls_text(settings, source: str | None, asked: int) -> str:  # noqa: ANN001
    from rich.markup import escape  # noqa: PLC0415

    if settings.backend != "openai":
        return "in this process" if settings.backend != "llamacpp" else "llama.cpp in this process"
    limits = settings.call_limits()
    text = limits.describe()
    if limits.capped:
        where = escape(source or "the models config")
        text += (
            f" [yellow]— fewer than --concurrency {asked}: max_concurrency {settings.max_concurrency} per "
            f"endpoint in {where}[/yellow]"
        )
    return text


def _finish(ev, result, as_json: bool) -> None:
    from ._display import plain, scores_table  # noqa: PLC0415

    rep = result.scores
    if as_json:
        print(json.dumps(rep.model_dump(mode="json"), indent=2))
    else:
        out.print(scores_table(rep))
    c = rep.counts
    st = result.stats
    err.print(
        f"samples: {c['scored']} scored, {c['unscored']} unscored, {c['pending']} pending · "
        f"{st.resumed} resumed from earlier runs · {st.model_calls} model calls made "
        f"· tokens: generation {rep.usage['generation'].completion_tokens:,} completion, "
        f"judge {rep.usage['judge'].completion_tokens:,} completion"
        + (
            f", candidate scoring {rep.usage['scorer'].completion_tokens:,} completion"
            if rep.usage["scorer"].samples
            else ""
        )
    )
    for reason, k in rep.unscored_reasons.items():
        err.print(f"  unscored ×{k}: {plain(reason)}")
    if ev.limit and len(ev.samples) < ev.n_available:
        err.print(
            f"[yellow]This ran {len(ev.samples)} of {ev.n_available} prompts. "
            f"Run all of them with --limit 0 (same --out resumes and reuses what is done).[/yellow]"
        )
    err.print(f"Files: {plain(str(result.out_dir))}/ (manifest.json, generations.jsonl, judgments.jsonl, scores.json)")
    err.print(f"Read the answers: specalign report {plain(shlex.quote(str(result.out_dir)))} -o report.html")


def _finish_comparison(evaluations, results, as_json: bool) -> None:
    from ._display import comparison_table  # noqa: PLC0415
    from .runs import compare_runs, format_comparison  # noqa: PLC0415

    rows = compare_runs([r.out_dir for r in results])
    if as_json:
        print(format_comparison(rows, "json"))
    else:
        out.print(comparison_table(rows))
    for ev, res in zip(evaluations, results, strict=False):
        c = res.scores.counts
        err.print(
            f"  {ev.config.method}: {c['scored']} scored, {c['unscored']} unscored · "
            f"{res.stats.model_calls} model calls made · {res.out_dir}/"
        )
    err.print(
        "ΔSAR is against vanilla when it ran, else the first method. Tokens are the target model's "
        "average completion tokens per sample (judge and candidate scoring not included)."
    )
    dirs = " ".join(shlex.quote(str(r.out_dir)) for r in results)
    err.print(f"See the trade-offs and every sample: specalign report {dirs} -o report.html")


@app.command()
def compare(
    run_dirs: list[str] = typer.Argument(..., help="Run directories written by `specalign run`."),
    baseline: str | None = typer.Option(
        None,
        "--baseline",
        "-b",
        help="Run directory or method name that ΔSAR is against (default vanilla, else the first).",
    ),
    fmt: str = typer.Option("table", "--format", "-f", help="table, markdown, csv or json."),
    alpha: float | None = typer.Option(None, "--alpha", min=0.0, max=1.0, help="Recompute with another α."),
    na_policy: str | None = typer.Option(
        None, "--na-policy", help="Recompute with another NA policy: official or exclude."
    ),
) -> None:
    """Compare runs side by side: scores, ΔSAR against a baseline, tokens, calls, wall time (no model calls).

    Example: specalign compare runs/bundled-local-vanilla runs/bundled-local-align3 --format markdown
    """
    from .errors import ConfigError  # noqa: PLC0415
    from .runs import compare_runs, format_comparison  # noqa: PLC0415

    if fmt not in ("table", "markdown", "csv", "json"):
        raise ConfigError(f"must be table, markdown, csv or json, got {fmt!r}", field="--format")
    if na_policy is not None and na_policy not in ("official", "exclude"):
        raise ConfigError(f"must be 'official' or 'exclude', got {na_policy!r}", field="--na-policy")
    rows = compare_runs(run_dirs, baseline=baseline, alpha=alpha, na_policy=na_policy)
    from ._terminal import plain  # noqa: PLC0415
    from .runs._compare import comparison_warnings  # noqa: PLC0415

    if warnings := comparison_warnings(rows):
        err.print(f"[yellow]warning: {plain('; '.join(warnings))}[/yellow]", soft_wrap=True)
    if fmt == "table":
        from ._display import comparison_table  # noqa: PLC0415

        out.print(comparison_table(rows))
    else:
        sys.stdout.write(format_comparison(rows, fmt))  # type: ignore[arg-type]


@app.command()
def export(
    run_dirs: list[str] = typer.Argument(..., help="Run directories written by `specalign run`."),
    output: str = typer.Option(..., "--output", "-o", help="File to write: .csv or .jsonl."),
    fmt: str | None = typer.Option(None, "--format", "-f", help="csv or jsonl (default: from the file name)."),
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
    from .errors import ConfigError  # noqa: PLC0415
    from .runs import export_verdicts  # noqa: PLC0415
    from .runs._store import check_output, check_runs  # noqa: PLC0415

    if fmt is not None and fmt not in ("csv", "jsonl"):
        raise ConfigError(f"must be csv or jsonl, got {fmt!r}", field="--format")
    check_runs(run_dirs)  # a bad run directory is refused before the output file is opened
    check_output(output, run_dirs)
    n = export_verdicts(run_dirs, output, fmt, with_text=with_text, raw_cells=raw_cells)  # type: ignore[arg-type]
    err.print(f"wrote {n:,} rows to {output}")


@app.command()
def report(
    run_dirs: list[str] = typer.Argument(..., help="Run directories written by `specalign run`."),
    output: str = typer.Option("report.html", "--output", "-o", help="HTML file to write."),
    title: str | None = typer.Option(None, "--title", help="Heading of the report (default: the models)."),
    baseline: str | None = typer.Option(
        None,
        "--baseline",
        "-b",
        help="Run directory or method name that ΔSAR is against (default vanilla, else the first).",
    ),
    alpha: float | None = typer.Option(None, "--alpha", min=0.0, max=1.0, help="Recompute with another α."),
    na_policy: str | None = typer.Option(
        None, "--na-policy", help="Recompute with another NA policy: official or exclude."
    ),
) -> None:
    """Write one self-contained HTML report of runs: scores, trade-off plots, per-spec failures, every sample.

    The file needs no network to open; share it as it is. No model calls.

    Example: specalign report runs/ttd/vanilla runs/ttd/align3 -o report.html
    """
    from .errors import ConfigError  # noqa: PLC0415
    from .report import collect_report, write_report  # noqa: PLC0415
    from .runs._store import check_output  # noqa: PLC0415

    if na_policy is not None and na_policy not in ("official", "exclude"):
        raise ConfigError(f"must be 'official' or 'exclude', got {na_policy!r}", field="--na-policy")
    check_output(output, run_dirs)
    data = collect_report(run_dirs, title=title, baseline=baseline, alpha=alpha, na_policy=na_policy)  # type: ignore[arg-type]
    size = write_report(data, output)
    answers = sum(len(s.runs) for s in data.samples)
    err.print(
        f"wrote {output} ({size / 1e6:.1f} MB): {len(data.runs)} run{'s' if len(data.runs) != 1 else ''}, {len(data.samples):,} samples, "
        f"{answers:,} answers"
    )


@app.command()
def score(
    run_dir: str = typer.Argument(..., help="A run directory written by `specalign run`."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    alpha: float | None = typer.Option(None, "--alpha", min=0.0, max=1.0, help="Recompute with another α."),
    na_policy: str | None = typer.Option(
        None, "--na-policy", help="Recompute with another NA policy: official or exclude."
    ),
    write: bool = typer.Option(
        False, "--write", help="Also rewrite RUN_DIR/scores.json (refused while a run holds the directory)."
    ),
) -> None:
    """Recompute and print the scores of a run directory from its records (no model calls).

    Example: specalign score runs/bundled-local-vanilla --na-policy exclude
    """
    from ._display import scores_table  # noqa: PLC0415
    from .errors import ConfigError  # noqa: PLC0415
    from .runs import RunDir, compute_scores  # noqa: PLC0415

    if na_policy is not None and na_policy not in ("official", "exclude"):
        raise ConfigError(f"must be 'official' or 'exclude', got {na_policy!r}", field="--na-policy")
    rd = RunDir(run_dir)
    manifest = rd.read_manifest()
    if write:  # a run rewrites scores.json when it ends: refuse while one holds the directory
        rd.lock("score --write")
    try:
        rep = compute_scores(rd, manifest, alpha=alpha, na_policy=na_policy)  # type: ignore[arg-type]
        if write:
            rd.write_json_atomic("scores.json", rep.model_dump(mode="json"))
    finally:
        rd.unlock()
    if as_json:
        print(json.dumps(rep.model_dump(mode="json"), indent=2))
    else:
        out.print(scores_table(rep))
        if rep.counts["pending"]:
            err.print(
                f"[yellow]{rep.counts['pending']} selected samples are not finished: rerun the same "
                f"`specalign run` command to complete them.[/yellow]"
            )


@app.command("cache")
def cache_cmd(
    clear: bool = typer.Option(False, "--clear", help="Delete every cached model call."),
    cache_dir: str | None = typer.Option(
        None, "--cache-dir", help="Cache folder (default $SPECALIGN_CACHE_DIR or ~/.cache/specalign)."
    ),
) -> None:
    """Show (or clear) the cache of model calls.

    Example: specalign cache --clear
    """
    from pathlib import Path  # noqa: PLC0415

    from .models import CallCache, default_cache_dir  # noqa: PLC0415

    folder = Path(_path_value(cache_dir, "--cache-dir")) if cache_dir is not None else default_cache_dir()
    if _nothing_cached(folder):
        out.print(f"0 cached calls in {folder / 'calls.sqlite'}")  # nothing to show or clear: create nothing
        return
    cache = CallCache(folder / "calls.sqlite")
    if clear:
        out.print(f"removed {cache.clear()} cached calls from {cache.path}")
    else:
        out.print(f"{len(cache)} cached calls in {cache.path}")
    cache.close()


def _nothing_cached(folder) -> bool:  # noqa: ANN001
    """No cache file in an existing or missing folder (an unusable folder is left to the cache to report)."""
    try:
        return not folder.exists() or (folder.is_dir() and not (folder / "calls.sqlite").exists())
    except OSError:
        return False


def _path_value(value: str | None, field: str) -> str | None:
    """A path option as given; an empty one is refused (it would silently mean the default or '.')."""
    from .errors import ConfigError  # noqa: PLC0415

    if value is not None and not value.strip():
        raise ConfigError("an empty path", field=field)
    return value


def main() -> None:
    """Entry point: one clear line and a non-zero exit code for expected errors, never a traceback."""
    usage_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")  # typer's own click
    _check_argv_text()
    from ._terminal import log_warnings_to_stderr  # noqa: PLC0415

    log_warnings_to_stderr()
    try:
        code = app(standalone_mode=False)
    except usage_error as e:  # a bad option or argument: one line, like every other input error
        if type(e).__name__ == "NoArgsIsHelpError" and e.ctx is not None:
            print(e.ctx.get_help())
            sys.exit(0)
        err.print(f"[red]error:[/red] {_usage_line(e)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Abort:
        err.print("interrupted: finished samples are saved; rerun the same command to resume")
        sys.exit(130)
    except SpecalignError as e:
        from ._terminal import plain  # noqa: PLC0415

        err.print(f"[red]error:[/red] {plain(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted: finished samples are saved; rerun the same command to resume")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def _check_argv_text() -> None:
    """Arguments are read as UTF-8: bytes that are not (Python keeps them as lone surrogates) could not be
    written to any record, so they are refused up front, naming the argument."""
    from ._terminal import plain  # noqa: PLC0415
    from ._unicode import repair_text  # noqa: PLC0415

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
    from ._terminal import plain  # noqa: PLC0415

    message = " ".join(e.format_message().split())
    command = e.ctx.command_path if e.ctx is not None else "specalign"
    return plain(f"{message} (see {command} --help)")


if __name__ == "__main__":
    main()
