"""``specalign run``, ``score`` and ``compare``: evaluate, and read the scores back."""

from __future__ import annotations

import json
import math
import shlex
import sys

import typer

from .common import (
    MODEL_HELP,
    BaselineOption,
    BatchRetry,
    BootstrapOption,
    CacheDirOption,
    CompareFormat,
    DataOption,
    JudgeMode,
    JudgeModeOption,
    MethodParamOption,
    NaPolicy,
    PanelRule,
    RecomputeAlphaOption,
    RecomputeNaPolicyOption,
    RunDirsArgument,
    err,
    method_names,
    out,
    params_by_method,
    path_value,
    value,
)


def run(
    data: DataOption = "bundled",
    scenario: list[str] | None = typer.Option(None, "--scenario", "-s", help="Scenario key (repeatable); default all."),
    limit: int | None = typer.Option(
        None, "--limit", "-n", min=0, help="Prompts per scenario (0 = all). Default: all, or 2 with the embedded model."
    ),
    model: str = typer.Option("local", "--model", "-m", help="Model to evaluate: " + MODEL_HELP),
    judge: str = typer.Option(
        "local",
        "--judge",
        "-j",
        help="Judge model: " + MODEL_HELP + " A panel: two or more, comma-separated (A,B,C); each judges every "
        "answer and --panel-rule makes their verdicts one.",
    ),
    panel_rule: PanelRule | None = typer.Option(
        None,
        "--panel-rule",
        help="With a judge panel: majority (ties go to NO, then NA) or strict (a safety NO from any judge "
        "counts). Default majority.",
    ),
    method: list[str] | None = typer.Option(
        None,
        "--method",
        help="Generation method (see `specalign methods`); repeat or comma-separate to compare several.",
    ),
    method_param: MethodParamOption = None,
    judge_mode: JudgeModeOption = JudgeMode.joint,
    judge_attempts: int = typer.Option(
        3,
        "--judge-attempts",
        min=1,
        max=20,
        help="Judge calls per sample, the first and its corrections, before an unreadable verdict leaves "
        "the sample unscored.",
    ),
    judge_template: str | None = typer.Option(
        None,
        "--judge-template",
        help="Judge with your own prompt: a YAML template (format tags or json, system and user texts with "
        "placeholders; see docs/judge.md). Joint mode only; its verdicts are kept under a judge key of their own.",
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
    na_policy: NaPolicy = typer.Option(
        NaPolicy.official,
        "--na-policy",
        help="NA in behavioral score: official (counts as not met) or exclude (paper).",
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the model-call cache."),
    cache_dir: CacheDirOption = None,
    retry_unscored: bool = typer.Option(
        False, "--retry-unscored", help="Judge again the samples left unscored before."
    ),
    stop_after_failures: int = typer.Option(
        25,
        "--stop-after-failures",
        min=0,
        help="Stop when this many samples in a row fail at the model after their retries (0: never).",
    ),
    batch: bool = typer.Option(
        False,
        "--batch",
        help="Send the calls of the models that can batch (OpenAI's Batch API, Anthropic's Message Batches) as "
        "provider batches, at their batch price; the others run online. Methods of several calls batch stage "
        "by stage. Resumable: a rerun polls the open batches and never submits a request twice.",
    ),
    no_wait: bool = typer.Option(
        False, "--no-wait", help="With --batch: submit the next batches and stop; rerun the same command to collect."
    ),
    batch_retry: BatchRetry = typer.Option(
        BatchRetry.online,
        "--batch-retry",
        help="With --batch: requests a batch did not answer (failed, expired, cancelled) go out again online, "
        "or in the next batch (at most 3 batches each).",
    ),
    batch_poll: float = typer.Option(
        30.0, "--batch-poll", min=0.01, max=3600, help="With --batch: seconds between polls of open batches."
    ),
    max_cost: float | None = typer.Option(
        None,
        "--max-cost",
        min=0.0,
        help="Budget in USD for the run's calls, earlier sessions included (all methods' runs together): stop "
        "(exit 3) before a call would pass it, counting the calls in flight; rerun with a higher one to go on. "
        "Only priced models count (see docs/models.md).",
    ),
    estimate: bool = typer.Option(
        False,
        "--estimate",
        help="Print the calls, tokens and USD the run still needs (upper bounds: completions at max_tokens), "
        "and stop: no model call, nothing written.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the scores as JSON at the end."),
) -> None:
    """Generate answers, judge them against the specs, and score: resumable, cached, pipelined.

    With several methods, each gets its own run directory (OUT/METHOD with --out) and a
    comparison table follows: scores, ΔSAR against vanilla, tokens, calls and wall time.

    Example: specalign run --data ../shared/specbench-data --model openai:gpt-4.1-mini --judge openai:gpt-4.1 --limit 20

    Example: specalign run --method vanilla,zero_think,more_think,align3,best_of_n -p best_of_n.n=5

    Example: specalign run --models-config config_model.yaml --models-config config_eval_model.yaml --model Qwen3-14B --judge GPT-4.1 --concurrency 32

    llama.cpp's llama-server, with the thinking methods (prefill): start
    [bold]llama-server -m model.gguf --port 8080 -c 8192 --jinja[/bold], write models.yaml holding
    [bold]my-gguf: {model_name: my-gguf, base_url: http://127.0.0.1:8080/v1, prefill: true}[/bold], then

    Example: specalign run --models-config models.yaml --model my-gguf --method vanilla,align3 --judge openai:gpt-4.1
    """
    from pathlib import Path  # noqa: PLC0415

    from ..runs import Evaluation, RunConfig  # noqa: PLC0415

    for path, field in (
        (out_dir, "--out"),
        (cache_dir, "--cache-dir"),
        (data, "--data"),
        (judge_template, "--judge-template"),
    ):
        path_value(path, field)
    if (no_wait or batch_retry is not BatchRetry.online or batch_poll != 30.0) and not batch:
        from ..errors import ConfigError  # noqa: PLC0415

        raise ConfigError("--no-wait, --batch-retry and --batch-poll go with --batch")
    if max_cost is not None and not math.isfinite(max_cost):
        from ..errors import ConfigError  # noqa: PLC0415

        raise ConfigError(
            f"{max_cost} is not a budget: give a finite number of US dollars, 0 or more", field="--max-cost"
        )
    if panel_rule is not None and "," not in judge:
        from ..errors import ConfigError  # noqa: PLC0415

        raise ConfigError("--panel-rule needs a judge panel: give two judges or more, e.g. --judge A,B,C")
    methods = method_names(method or ["vanilla"])
    params = params_by_method(methods, method_param or [])
    evaluations = []
    for name in methods:
        run_out = str(Path(out_dir) / name) if out_dir and len(methods) > 1 else out_dir
        evaluations.append(
            Evaluation(
                RunConfig(
                    data=data,
                    scenarios=scenario or [],
                    limit=limit,
                    model=model,
                    judge=judge,
                    panel_rule=value(panel_rule) or "majority",
                    method=name,
                    method_params=params[name],
                    judge_mode=value(judge_mode),
                    judge_attempts=judge_attempts,
                    judge_template=judge_template,
                    concurrency=concurrency,
                    models_config=models_config or [],
                    out=run_out,
                    alpha=alpha,
                    na_policy=value(na_policy),
                    use_cache=not no_cache,
                    cache_dir=cache_dir,
                    retry_unscored=retry_unscored,
                    stop_after_failures=stop_after_failures,
                    batch=batch,
                    batch_no_wait=no_wait,
                    batch_retry=value(batch_retry),
                    batch_poll_s=batch_poll,
                    max_cost=max_cost,
                )
            )
        )
    if estimate:
        _print_estimates([ev.estimate() for ev in evaluations], as_json)
        return
    for ev in evaluations:
        ev.preflight()
    from ..runs import BatchesRunning, BatchesSubmitted  # noqa: PLC0415
    from . import progress as _progress  # noqa: PLC0415

    results = []
    for ev in evaluations:
        if max_cost is not None:  # one budget for the command: the other runs' directories hold part of it
            others = sum(other.recorded_cost() for other in evaluations if other is not ev)
            ev.max_cost = max(0.0, max_cost - others)
        _announce(ev)
        try:
            results.append(_progress.run_with_progress(ev, err))
        except (BatchesSubmitted, BatchesRunning) as stop:
            _batches_left(ev, stop)
            continue
        if len(evaluations) == 1:
            _finish(ev, results[0], as_json)
    if len(evaluations) > 1 and len(results) == len(evaluations):
        _finish_comparison(evaluations, results, as_json)


def _batches_left(ev, stop) -> None:  # noqa: ANN001
    """--no-wait: what was submitted or is still running, and how to collect it."""
    from .._terminal import plain  # noqa: PLC0415

    progress = ev.stats.batch
    open_ = "; ".join(f"{plain(b)} {plain(s)}" for b, s in (progress.open if progress else {}).items())
    err.print(
        f"{plain(str(stop))} ({open_ or 'see batches.jsonl'}) for {plain(str(ev.run_dir.path))}: rerun the same "
        "command to collect the answers (nothing is submitted twice)"
    )


def _announce(ev) -> None:
    from .._terminal import plain  # noqa: PLC0415

    cfg = ev.config
    n = len(ev.samples)
    what = f"{n} of {ev.n_available} prompts"
    if ev.limit:
        what += f" ({ev.limit} per scenario{'' if cfg.limit else ', the default with the embedded model'})"
    err.print(
        f"[bold]specalign run[/bold]: {what} from {plain(ev.bench.source)} · scenarios "
        f"{plain(', '.join(s.key for s in ev.scenarios))}"
    )
    judges = " + ".join(s.key for s in ev.judges_settings)
    panel = f"panel {cfg.panel_rule}: {judges}" if len(ev.judges_settings) > 1 else judges
    err.print(
        f"  model {plain(ev.target_settings.key)} · method {plain(cfg.method)} · judge "
        f"{plain(panel)} ({cfg.judge_mode}{_template_note(ev)}) · out {plain(str(ev.run_dir.path))}"
    )  # keys: URL credentials redacted
    err.print(f"  {_limits_line(ev)}", highlight=False, soft_wrap=True)
    if ev.max_cost is not None:
        from ..runs import usd  # noqa: PLC0415

        unpriced = [f"{k} ({p.note})" for k, p in ev.pricings.items() if not p.priced]
        err.print(
            f"  budget: {usd(ev.max_cost)} for this run's calls (what its directory holds included)"
            + (f"; it covers only priced models: {plain('; '.join(unpriced))} count $0" if unpriced else ""),
            highlight=False,
            soft_wrap=True,
        )
    if cfg.batch:
        roles = ev.batched_roles()
        online = "" if len(roles) == 1 + len(ev.judges_settings) else " · the other models run online"
        err.print(
            f"  batch: {plain(', '.join(roles))} through the provider's batch API (poll every {cfg.batch_poll_s:g} s, "
            f"retry {cfg.batch_retry}){online}",
            highlight=False,
            soft_wrap=True,
        )


def _template_note(ev) -> str:
    """``, template NAME`` when the judge uses the user's template."""
    from .._terminal import plain  # noqa: PLC0415

    template = ev.judge_template
    return "" if template is None else f", template {plain(template.name)} ({template.format})"


def _limits_line(ev) -> str:
    """What --concurrency gives: calls in flight per model and per endpoint, samples in flight, and any
    config limit that gives less than asked."""
    cfg = ev.config
    roles = [("model", ev.target_settings)]
    for i, settings in enumerate(ev.judges_settings):
        role = "judge" if len(ev.judges_settings) == 1 else f"judge {i + 1}"
        same = next((k for k, (_, s) in enumerate(roles) if s == settings), None)
        if same is None:
            roles.append((role, settings))
        else:
            roles[same] = (f"{roles[same][0]} and {role}", settings)
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
    from .display import cost_line, plain, scores_table  # noqa: PLC0415

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
    if rep.cost is not None:
        err.print(cost_line(rep.cost), highlight=False, soft_wrap=True)
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
    from ..runs import compare_runs, format_comparison, usd  # noqa: PLC0415
    from .display import comparison_table  # noqa: PLC0415

    rows = compare_runs([r.out_dir for r in results])
    if as_json:
        print(format_comparison(rows, "json"))
    else:
        out.print(comparison_table(rows))
    for ev, res in zip(evaluations, results, strict=False):
        c = res.scores.counts
        spent = f" · {usd(res.scores.cost.total)}" if res.scores.cost is not None else ""
        err.print(
            f"  {ev.config.method}: {c['scored']} scored, {c['unscored']} unscored · "
            f"{res.stats.model_calls} model calls made{spent} · {res.out_dir}/"
        )
    err.print(
        "ΔSAR is against vanilla when it ran, else the first method. Tokens are the target model's "
        "average completion tokens per sample (judge and candidate scoring not included)."
    )
    dirs = " ".join(shlex.quote(str(r.out_dir)) for r in results)
    err.print(f"See the trade-offs and every sample: specalign report {dirs} -o report.html")


def _print_estimates(estimates, as_json: bool) -> None:  # noqa: ANN001
    """``run --estimate``: per run, the calls, tokens and USD each model still needs, and what the figures are."""
    from .display import estimate_table  # noqa: PLC0415

    if as_json:
        data = [e.model_dump(mode="json") for e in estimates]
        print(json.dumps(data[0] if len(data) == 1 else data, indent=2))
        return
    for est in estimates:
        title, table, notes = estimate_table(est)
        out.print(title, highlight=False, soft_wrap=True)
        out.print(table)
        for note in notes:
            out.print(f"  {note}", highlight=False, soft_wrap=True)
    if len(estimates) > 1:
        from ..runs import usd  # noqa: PLC0415

        out.print(f"all {len(estimates)} runs: at most {usd(sum(e.cost for e in estimates))}", highlight=False)
    err.print("estimate only: no model was called and nothing was written")


def score(
    run_dir: str = typer.Argument(..., help="A run directory written by `specalign run`."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    alpha: RecomputeAlphaOption = None,
    na_policy: RecomputeNaPolicyOption = None,
    write: bool = typer.Option(
        False, "--write", help="Also rewrite RUN_DIR/scores.json (refused while a run holds the directory)."
    ),
    bootstrap: BootstrapOption = None,
) -> None:
    """Recompute and print the scores of a run directory from its records (no model calls).

    Example: specalign score runs/bundled-local-vanilla --na-policy exclude
    """
    from ..runs import RunDir, compute_scores  # noqa: PLC0415
    from .display import scores_table  # noqa: PLC0415

    rd = RunDir(run_dir)
    manifest = rd.read_manifest()
    if write:  # a run rewrites scores.json when it ends: refuse while one holds the directory
        rd.lock("score --write")
    try:
        rep = compute_scores(rd, manifest, alpha=alpha, na_policy=value(na_policy), bootstrap=bootstrap)
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


def compare(
    run_dirs: RunDirsArgument,
    baseline: BaselineOption = None,
    fmt: CompareFormat = typer.Option(CompareFormat.table, "--format", "-f", help="table, markdown, csv or json."),
    alpha: RecomputeAlphaOption = None,
    na_policy: RecomputeNaPolicyOption = None,
    bootstrap: BootstrapOption = None,
) -> None:
    """Compare runs side by side: scores with 95% intervals, ΔSAR against a baseline with its paired interval
    and p-value, tokens, calls, wall time (no model calls). A ΔSAR marked ~ is within noise.

    Example: specalign compare runs/bundled-local-vanilla runs/bundled-local-align3 --format markdown
    """
    from .._terminal import plain  # noqa: PLC0415
    from ..runs import compare_runs, comparison_warnings, format_comparison  # noqa: PLC0415

    rows = compare_runs(run_dirs, baseline=baseline, alpha=alpha, na_policy=value(na_policy), bootstrap=bootstrap)
    if warnings := comparison_warnings(rows):
        err.print(f"[yellow]warning: {plain('; '.join(warnings))}[/yellow]", soft_wrap=True)
    if fmt is CompareFormat.table:
        from .display import comparison_table  # noqa: PLC0415

        out.print(comparison_table(rows))
    else:
        sys.stdout.write(format_comparison(rows, fmt.value))
