"""Compare runs: one row per run (model × method × judge) with scores, cost and ΔSAR to a baseline."""

from __future__ import annotations

import csv
import io
import json
from typing import Literal

from pydantic import BaseModel, Field, PrivateAttr

from ..benchmark import neutralise_cell
from ..errors import ConfigError
from ._costs import usd
from ._intervals import (
    BootstrapSettings,
    PairedDelta,
    SamplePoint,
    SpecDelta,
    paired_deltas,
    spans_zero,
    spec_deltas,
)
from ._records import Manifest
from ._scores import ScoresReport, compute_scores
from ._store import RunDir

CompareFormat = Literal["table", "markdown", "csv", "json"]


class ComparisonRow(BaseModel):
    """One run in a comparison. Scores are overall (mean of the scenarios with a scored sample, full set)
    fractions in [0, 1], each with its 95% bootstrap interval ``*_ci`` [low, high]; ``delta_sar`` is over the
    prompts scored in both this run and the baseline, with a paired bootstrap interval and p-value."""

    run_dir: str
    label: str
    model: str
    method: str
    method_params: dict
    judge: str
    safety: float | None
    behavioral: float | None
    sar: float | None
    sar_unsafe: float | None
    sar_safe: float | None
    safety_ci: list[float] | None = None
    behavioral_ci: list[float] | None = None
    sar_ci: list[float] | None = None
    sar_unsafe_ci: list[float] | None = None
    sar_safe_ci: list[float] | None = None
    delta_sar: float | None = None
    delta_sar_ci: list[float] | None = Field(
        None, description="paired bootstrap interval of ΔSAR over the shared prompts (stratified by scenario)"
    )
    p_value: float | None = Field(None, description="two-sided paired bootstrap p-value of ΔSAR = 0")
    delta_safety: float | None = None
    delta_safety_ci: list[float] | None = None
    p_value_safety: float | None = None
    delta_behavioral: float | None = None
    delta_behavioral_ci: list[float] | None = None
    p_value_behavioral: float | None = None
    avg_completion_tokens: float | None
    avg_calls: float | None
    avg_scorer_tokens: float | None
    cost: float | None = Field(
        None,
        description="USD the run's calls cost (generation, judging, candidate scoring; batched calls at the batch "
        "price), as its records hold it; None when no record holds a cost",
    )
    cost_per_sample: float | None = Field(None, description="cost over the samples whose generation holds one")
    cost_saved: float | None = Field(None, description="USD the calls answered from the call cache would have cost")
    unpriced_models: list[str] = Field(
        default_factory=list, description="models without a price: their calls are counted as $0"
    )
    scored: int
    unscored: int
    pending: int
    wall_s: float
    alpha: float
    na_policy: str
    is_baseline: bool = Field(False, description="the row ΔSAR is against")
    delta_prompts: int | None = Field(
        None,
        description="how many prompts ΔSAR covers: those scored in both this run "
        "and the baseline (ΔSAR is the difference of the two runs' SAR over them)",
    )
    empty_scenarios: list[str] = Field(
        default_factory=list, description="scenarios without any scored sample, left out of the overall scores"
    )
    overall_note: str | None = None
    data_sha256: str = ""
    scenarios: list[str] = Field(default_factory=list, description="the run's selected scenarios")
    scenario_deltas: dict[str, PairedDelta] = Field(
        default_factory=dict, description="scenario → the paired differences to the baseline over its shared prompts"
    )
    spec_deltas: dict[str, dict[str, SpecDelta]] = Field(
        default_factory=dict,
        description="scenario → spec id → violation rates against the baseline's, exact McNemar test "
        "(empty for the baseline row)",
    )
    bootstrap: BootstrapSettings | None = Field(None, description="how the intervals were computed")
    _samples: dict[str, SamplePoint] = PrivateAttr(default_factory=dict)
    _selected: frozenset[str] = PrivateAttr(default_factory=frozenset)


def non_default_params(manifest: Manifest) -> dict:
    """The method's hyper-parameters that differ from their defaults (what makes a run's label)."""
    from ..methods import available_methods  # noqa: PLC0415

    params = manifest.method.get("params", {})
    cls = available_methods().get(manifest.method["name"])
    if cls is None:
        return params
    defaults = cls.Params().model_dump(mode="json")
    return {k: v for k, v in params.items() if defaults.get(k, object()) != v}


def comparison_row(
    run_dir: str,
    *,
    alpha: float | None = None,
    na_policy: str | None = None,
    bootstrap: int | None = None,
    seed: int | None = None,
) -> ComparisonRow:
    """Read one run directory into a row (no model calls)."""
    rd = RunDir(run_dir)
    manifest = rd.read_manifest()
    rep: ScoresReport = compute_scores(
        rd,
        manifest,
        alpha=alpha,
        na_policy=na_policy,  # type: ignore[arg-type]
        bootstrap=bootstrap,
        seed=seed,
    )
    return row_of(rd, manifest, rep)


def row_of(rd: RunDir, manifest: Manifest, rep: ScoresReport) -> ComparisonRow:
    """The comparison row of a run whose scores are already computed."""
    changed = non_default_params(manifest)
    label = manifest.method["name"] + "".join(f" {k}={json.dumps(v)}" for k, v in changed.items())
    full, unsafe, safe = rep.overall["full"], rep.overall["unsafe"], rep.overall["safe"]
    gen, scorer = rep.usage["generation"], rep.usage["scorer"]
    spend = rep.cost
    recorded = spend is not None and (spend.generation.samples > 0 or spend.judge.samples > 0)
    row = ComparisonRow(
        run_dir=str(rd.path),
        label=label,
        model=rep.model,
        method=rep.method,
        method_params=changed,
        judge=rep.judge,
        safety=full.safety,
        behavioral=full.behavioral,
        sar=full.sar,
        sar_unsafe=unsafe.sar,
        sar_safe=safe.sar,
        safety_ci=full.safety_ci,
        behavioral_ci=full.behavioral_ci,
        sar_ci=full.sar_ci,
        sar_unsafe_ci=unsafe.sar_ci,
        sar_safe_ci=safe.sar_ci,
        avg_completion_tokens=gen.avg_completion_tokens,
        avg_calls=gen.avg_calls,
        avg_scorer_tokens=(scorer.completion_tokens / gen.samples) if gen.samples and scorer.samples else None,
        cost=spend.total if recorded and spend else None,
        cost_per_sample=spend.total / spend.generation.samples
        if recorded and spend and spend.generation.samples
        else None,
        cost_saved=spend.saved if recorded and spend else None,
        unpriced_models=spend.unpriced if spend else [],
        scored=rep.counts["scored"],
        unscored=rep.counts["unscored"],
        pending=rep.counts["pending"],
        wall_s=round(sum(s.wall_s for s in manifest.sessions), 3),
        alpha=rep.alpha,
        na_policy=rep.na_policy,
        empty_scenarios=rep.empty_scenarios,
        overall_note=rep.overall_note,
        data_sha256=manifest.data.sha256,
        scenarios=list(manifest.selection.scenarios),
        bootstrap=rep.bootstrap,
    )
    row._samples, row._selected = rep.sample_points(), rep.selected_ids()
    return row


def compare_runs(
    run_dirs: list[str],
    *,
    baseline: str | None = None,
    alpha: float | None = None,
    na_policy: str | None = None,
    bootstrap: int | None = None,
    seed: int | None = None,
) -> list[ComparisonRow]:
    """Rows for ``run_dirs``; ΔSAR against ``baseline`` (a run dir or a method name; default: the
    ``vanilla`` run if there is one, else the first). Intervals from ``bootstrap`` resamples (default
    2,000; 0: none) drawn with ``seed`` (default fixed)."""
    rows = [comparison_row(d, alpha=alpha, na_policy=na_policy, bootstrap=bootstrap, seed=seed) for d in run_dirs]
    set_deltas(rows, baseline)
    return rows


def set_deltas(rows: list[ComparisonRow], baseline: str | None) -> ComparisonRow | None:
    """Fill the differences of every row to the baseline row, over the prompts scored in both (each run's
    scores over them, as a mean of scenarios): ΔSAR, Δsafety, Δbehavioral with paired bootstrap intervals
    and p-values, overall and per scenario, and per-spec violation-rate differences with exact McNemar
    tests; return the baseline row."""
    base = _baseline(rows, baseline)
    if base is None:
        return None
    base.is_baseline = True
    for r in rows:
        settings = r.bootstrap or BootstrapSettings(resamples=0)
        overall, per = paired_deltas(r._samples, base._samples, settings)
        r.delta_prompts = overall.n if overall else 0
        r.scenario_deltas = per
        if overall is not None:
            r.delta_sar, r.delta_sar_ci, r.p_value = overall.delta_sar, overall.delta_sar_ci, overall.p_value
            r.delta_safety, r.delta_safety_ci = overall.delta_safety, overall.delta_safety_ci
            r.p_value_safety = overall.p_value_safety
            r.delta_behavioral, r.delta_behavioral_ci = overall.delta_behavioral, overall.delta_behavioral_ci
            r.p_value_behavioral = overall.p_value_behavioral
        r.spec_deltas = {} if r is base else spec_deltas(r._samples, base._samples)
    return base


def comparison_warnings(rows: list[ComparisonRow]) -> list[str]:
    """Why the runs' scores are not over the same prompts: other scenarios, other selected prompts or
    another data version (then prompts with one id may differ), and which prompts ΔSAR covers."""
    base = next((r for r in rows if r.is_baseline), None)
    out = []
    if len({r.data_sha256 for r in rows}) > 1:
        out.append(
            "the runs used different data versions ("
            + ", ".join(sorted({r.data_sha256[:12] for r in rows}))
            + "): prompts with the same id may differ"
        )
    if len({frozenset(r.scenarios) for r in rows}) > 1:
        out.append(
            "the runs cover different scenarios ("
            + "; ".join(f"{r.label}: {', '.join(r.scenarios)}" for r in rows)
            + ")"
        )
    elif len({r._selected for r in rows}) > 1:
        out.append(
            "the runs selected different prompts (" + ", ".join(f"{r.label}: {len(r._selected)}" for r in rows) + ")"
        )
    if out and base is not None:
        out.append(
            f"ΔSAR is over the prompts scored in both a run and the baseline ({base.label}): "
            + ", ".join(f"{r.label} {r.delta_prompts}" for r in rows if r is not base)
        )
    return out


def delta_note(rows: list[ComparisonRow]) -> str | None:
    """'ΔSAR over N shared prompts' when ΔSAR leaves out prompts that a run or the baseline scored, else None."""
    base = next((r for r in rows if r.is_baseline), None)
    others = [r for r in rows if r is not base and r.delta_prompts is not None]
    if base is None or all(r.delta_prompts == r.scored == base.scored for r in others):
        return None
    counts = {r.delta_prompts for r in others}
    if len(counts) == 1:
        return f"ΔSAR over {counts.pop()} shared prompts (scored in both the run and the baseline)"
    return "ΔSAR over the prompts scored in both the run and the baseline: " + ", ".join(
        f"{r.label} {r.delta_prompts}" for r in others
    )


def overall_notes(rows: list[ComparisonRow]) -> list[str]:
    """One line per run whose overall scores leave out scenarios without any scored sample."""
    return [f"{r.label}: {r.overall_note}" for r in rows if r.overall_note]


def _baseline(rows: list[ComparisonRow], baseline: str | None) -> ComparisonRow | None:
    if not rows:
        return None
    if baseline is None:
        return next((r for r in rows if r.method == "vanilla" and not r.method_params), rows[0])
    for r in rows:
        if baseline in (r.run_dir, r.label, r.method) or RunDir(baseline).path == RunDir(r.run_dir).path:
            return r
    raise ConfigError(
        f"{baseline!r} is none of the compared runs (give a run directory or a method name)", field="--baseline"
    )


COLUMNS: list[tuple[str, str]] = [
    ("label", "method"),
    ("model", "model"),
    ("safety", "safety"),
    ("behavioral", "behavioral"),
    ("sar", "SAR"),
    ("sar_ci", "SAR 95% CI"),
    ("delta_sar", "ΔSAR"),
    ("delta_sar_ci", "ΔSAR 95% CI"),
    ("p_value", "p"),
    ("avg_completion_tokens", "avg completion tokens"),
    ("avg_calls", "calls/sample"),
    ("wall_s", "wall s"),
    ("cost", "cost USD"),
    ("scored", "scored"),
    ("unscored", "unscored"),
]


#: after a difference whose 95% interval contains 0: within noise
NS_MARK = "~"


def cell(row: ComparisonRow, key: str) -> str:
    """A value as shown in tables: scores in %, differences signed (with :data:`NS_MARK` when their interval
    spans 0), intervals as [low, high], p-values, tokens rounded. The baseline row has no interval or p."""
    v = getattr(row, key)
    if v is None:
        return "—"
    if key in ("safety", "behavioral", "sar", "sar_unsafe", "sar_safe"):
        return f"{100 * v:.2f}"
    if key.startswith("p_value"):
        return "—" if row.is_baseline else p_text(v)
    if key.endswith("_ci"):
        if key.startswith("delta_"):
            return "—" if row.is_baseline else interval_text(v, signed=True)
        return interval_text(v)
    if key in ("delta_sar", "delta_safety", "delta_behavioral"):
        ci = getattr(row, f"{key}_ci")
        return f"{100 * v:+.2f}" + (f" {NS_MARK}" if not row.is_baseline and spans_zero(ci) else "")
    if key == "avg_completion_tokens":
        return f"{v:,.0f}"
    if key == "avg_calls":
        return f"{v:.1f}"
    if key == "wall_s":
        return f"{v:,.1f}"
    if key in ("cost", "cost_per_sample", "cost_saved"):
        return usd(v) + ("*" if row.unpriced_models else "")
    return str(v)


def cost_note(rows: list[ComparisonRow]) -> str | None:
    """What the cost column leaves out: the models without a price (their calls count as $0)."""
    unpriced = sorted({m for r in rows for m in r.unpriced_models})
    if not unpriced:
        return None
    return f"* the cost counts only priced models; unpriced, counted as $0: {', '.join(unpriced)}"


def interval_text(ci: list[float] | None, *, signed: bool = False) -> str:
    """``[61.20, 78.40]`` (in %), ``[-12.00, +30.00]`` when ``signed``; ``—`` for None."""
    if ci is None:
        return "—"
    f = "+.2f" if signed else ".2f"
    return f"[{100 * ci[0]:{f}}, {100 * ci[1]:{f}}]"


def p_text(p: float | None) -> str:
    """A p-value as shown: three decimals, ``<0.001`` below."""
    if p is None:
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def interval_note(rows: list[ComparisonRow]) -> str | None:
    """What the intervals are, and what the ``~`` marker means when a row has it; None without intervals."""
    settings = next((r.bootstrap for r in rows if r.bootstrap and r.bootstrap.resamples), None)
    if settings is None:
        return None
    text = (
        f"95% CI: bootstrap over prompts, stratified by scenario ({settings.resamples:,} "
        f"resamples, seed {settings.seed}); ΔSAR's is paired over the prompts scored in both runs, p its "
        "two-sided p-value"
    )
    if any(not r.is_baseline and spans_zero(r.delta_sar_ci) for r in rows):
        text += f"; {NS_MARK}: the interval spans 0, the difference is within noise"
    return text


#: nested fields left out of CSV rows (the JSON has them); intervals become two columns, low and high
CSV_NESTED = ("scenario_deltas", "spec_deltas", "bootstrap")


def _csv_row(r: ComparisonRow) -> dict:
    out: dict = {}
    for k, v in r.model_dump(mode="json").items():
        if k in CSV_NESTED:
            continue
        if k.endswith("_ci"):
            out[f"{k}_low"], out[f"{k}_high"] = v if v is not None else (None, None)
        else:
            out[k] = json.dumps(v) if isinstance(v, (dict, list)) else v
    out["bootstrap_resamples"] = r.bootstrap.resamples if r.bootstrap else None
    out["bootstrap_seed"] = r.bootstrap.seed if r.bootstrap else None
    return out


def format_comparison(rows: list[ComparisonRow], fmt: CompareFormat) -> str:
    """``markdown`` (for papers), ``csv`` (spreadsheets, raw fractions) or ``json`` (scripts)."""
    if fmt == "json":
        return json.dumps([r.model_dump(mode="json") for r in rows], indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        fields = list(_csv_row(rows[0])) if rows else list(ComparisonRow.model_fields)
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: neutralise_cell(v) for k, v in _csv_row(r).items()})  # labels are user text
        return buf.getvalue()
    if fmt == "markdown":
        head = "| " + " | ".join(title for _, title in COLUMNS) + " |"
        rule = "|" + "|".join("---" if k in ("label", "model") else "---:" for k, _ in COLUMNS) + "|"
        body = ["| " + " | ".join(_md(cell(r, k)) for k, _ in COLUMNS) + " |" for r in rows]
        notes = [n for n in (delta_note(rows), interval_note(rows), *overall_notes(rows), cost_note(rows)) if n]
        tail = ["", *(f"- {_md(n)}" for n in notes)] if notes else []
        return "\n".join([head, rule, *body, *tail]) + "\n"
    raise ConfigError(f"unknown format {fmt!r} (table, markdown, csv, json)", field="--format")


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
