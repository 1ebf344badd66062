"""Rich tables for data listings and scores."""

from __future__ import annotations

from rich import box
from rich.table import Table

from .._terminal import plain, shown
from ..runs import ComparisonRow, CostReport, RunEstimate, ScoresReport, usd
from ..scoring import Metric

__all__ = [
    "comparison_table",
    "cost_line",
    "data_table",
    "estimate_table",
    "pct",
    "plain",
    "scores_table",
    "shown",
]


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def data_table(source: str, rows: list[dict]) -> Table:
    t = Table(title=f"Data: {source}", title_justify="left")
    t.add_column("scenario", no_wrap=True, min_width=8)
    t.add_column("name", no_wrap=True, overflow="ellipsis", max_width=18)
    for col in ("S specs", "B specs", "prompts", "unsafe", "safe"):
        t.add_column(col, justify="right", no_wrap=True, min_width=len(col))
    for r in rows:
        t.add_row(
            plain(r["key"]),
            plain(r["name"]),
            *(str(r[k]) for k in ("safety_specs", "behavioral_specs", "prompts", "unsafe", "safe")),
        )
    return t


def scores_table(rep: ScoresReport) -> Table:
    t = Table(
        title=(
            f"{plain(rep.model)} · {plain(rep.method)} · judge {plain(rep.judge)} ({rep.judge_mode}) · "
            f"α={rep.alpha} · NA policy {rep.na_policy} · scores in %"
        ),
        title_justify="left",
    )
    t.add_column("scenario", no_wrap=True)
    # the interval sits under SAR, whole numbers: an 80-column terminal shows every column
    for col in ("safety", "behav.", "SAR\n95% CI", "SAR\nunsafe", "SAR\nsafe", "scored", "unscored"):
        t.add_column(col, justify="right", no_wrap=True)
    for key, subsets in rep.scenarios.items():
        t.add_row(plain(key), *_cells(subsets))
    t.add_section()
    t.add_row("[bold]overall[/bold]" + ("*" if rep.overall_note else ""), *_cells(rep.overall))
    notes = [f"* {plain(rep.overall_note)}"] if rep.overall_note else []
    if rep.bootstrap and rep.bootstrap.resamples:
        b = rep.bootstrap
        notes.append(
            f"95% CI: bootstrap over prompts, stratified by scenario ({b.resamples:,} resamples, "
            f"seed {b.seed}); overall's from the same resamples"
        )
    if notes:
        t.caption, t.caption_justify = "\n".join(notes), "left"
    return t


def _cells(subsets: dict[str, Metric]) -> list[str]:
    full = subsets["full"]
    return [
        pct(full.safety),
        pct(full.behavioral),
        pct(full.sar) + (f"\n{100 * full.sar_ci[0]:.0f}–{100 * full.sar_ci[1]:.0f}" if full.sar_ci else ""),
        pct(subsets["unsafe"].sar),
        pct(subsets["safe"].sar),
        str(full.n_scored),
        str(full.n_unscored),
    ]


def comparison_table(rows: list[ComparisonRow]) -> Table:
    """Runs side by side: overall scores in %, ΔSAR against the baseline, cost per sample."""
    from ..runs import cost_note, delta_note, interval_note, overall_notes  # noqa: PLC0415

    models = {r.model for r in rows}
    judges = {r.judge for r in rows}
    title = "overall scores in %"
    if len(models) == 1:
        title = f"model {plain(next(iter(models)))} · " + title
    if len(judges) == 1 and rows:
        title += f" · judge {plain(rows[0].judge)} · α={rows[0].alpha} · NA {rows[0].na_policy}"
    columns = [
        ("label", "method"),
        ("model", "model"),
        ("judge", "judge"),
        ("safety", "safety"),
        ("behavioral", "behav."),
        ("sar", "SAR\n95% CI"),
        ("delta_sar", "ΔSAR\n95% CI\np"),
        ("avg_completion_tokens", "tokens"),
        ("avg_calls", "calls"),
        ("wall_s", "wall s"),
        ("cost", "cost"),
        ("unscored", "unsc."),
    ]
    columns = [
        c
        for c in columns
        if not (c[0] == "model" and len(models) == 1)
        and not (c[0] == "judge" and len(judges) == 1)
        and not (c[0] == "cost" and all(r.cost is None for r in rows))
    ]
    caption = "tokens: avg completion tokens per sample · calls: model calls per sample · ΔSAR vs the baseline"
    if any(r.cost is not None for r in rows):
        caption += " · cost: USD of every call (model, judge, candidate scoring)"
    notes = [n for n in (delta_note(rows), interval_note(rows), *overall_notes(rows), cost_note(rows)) if n]
    caption = "\n".join([caption, *(plain(n) for n in notes)])
    t = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        caption=caption,
        caption_justify="left",
    )
    widest = max((len(r.label) for r in rows), default=6)
    for key, name in columns:
        t.add_column(
            name,
            justify="left" if key in ("label", "model", "judge") else "right",
            no_wrap=key not in ("label", "model", "judge"),
            overflow="fold",
            min_width=min(widest, 12) if key == "label" else None,
        )
    for r in rows:
        t.add_row(*(_cell_with_ci(r, k) for k, _ in columns))
    return t


def _cell_with_ci(row: ComparisonRow, key: str) -> str:
    """A comparison cell; SAR and ΔSAR with their 95% interval on a second line (``39.5–96.5``), ΔSAR with its
    p-value on a third, which keeps the table narrow enough for a terminal."""
    from ..runs import cell, p_text  # noqa: PLC0415

    text = plain(cell(row, key))
    ci = getattr(row, f"{key}_ci", None) if key in ("sar", "delta_sar") else None
    if ci is None or (key == "delta_sar" and row.is_baseline):
        return text
    if key == "sar":
        return f"{text}\n{100 * ci[0]:.1f}–{100 * ci[1]:.1f}"
    return f"{text}\n{100 * ci[0]:+.1f}–{100 * ci[1]:+.1f}\np {p_text(row.p_value)}"


def cost_line(cost: CostReport) -> str:
    """``cost: $0.042 (generation $0.03, judge $0.012) · $0.02 of it in batches · cache hits saved $0.01``."""
    parts = [("generation", cost.generation), ("judge", cost.judge), ("candidate scoring", cost.scorer)]
    shown_parts = ", ".join(f"{name} {usd(p.total)}" for name, p in parts if p.samples or p.total)
    text = f"cost: {usd(cost.total)}" + (f" ({shown_parts})" if shown_parts else "")
    if cost.batch:
        text += f" · {usd(cost.batch)} of it through provider batches"
    if cost.saved:
        text += f" · cache hits saved {usd(cost.saved)}"
    if cost.note:
        text += f" · {plain(cost.note)}"
    return text


def estimate_table(est: RunEstimate) -> tuple[str, Table, list[str]]:
    """What a run still needs per model (calls, prompt and completion tokens, USD: upper bounds): a heading, the
    table, and the notes that say what the figures are."""
    title = (
        f"estimate · {plain(est.method)} · {est.to_generate} samples to answer and judge, {est.to_judge} to judge, "
        f"{est.done} done of {est.samples} · {plain(est.run_dir)}"
    )
    t = Table(box=box.SIMPLE_HEAD)
    t.add_column("role", no_wrap=True)
    t.add_column("model", overflow="fold")
    for col in ("calls", "prompt tokens", "completion tokens ≤", "USD ≤"):
        t.add_column(col, justify="right", no_wrap=True)
    for line in est.lines:
        price = usd(line.cost) if line.priced else "unpriced"
        t.add_row(
            line.role + (" (batch)" if line.batch else ""),
            plain(line.model),
            f"{line.calls:,}",
            f"{line.prompt_tokens:,}",
            f"{line.completion_tokens:,}",
            price,
        )
    t.add_section()
    t.add_row(
        "[bold]total[/bold]",
        "",
        f"{sum(x.calls for x in est.lines):,}",
        f"{sum(x.prompt_tokens for x in est.lines):,}",
        f"{sum(x.completion_tokens for x in est.lines):,}",
        f"[bold]{usd(est.cost)}[/bold]",
    )
    notes = [
        "prompt tokens: estimated without a tokenizer, about 4 characters a token",
        "completion tokens: every call at its max_tokens, an upper bound, and so is the cost; retries and cache "
        "hits are not counted (calls the cache answers cost nothing)",
    ]
    if est.assumed:
        notes.append(f"no max_tokens set for {plain(', '.join(est.assumed))}: 4,096 a call assumed")
    if est.spent:
        notes.append(f"the run directory's records cost {usd(est.spent)} already (not included above)")
    for key, rates in est.prices.items():
        if rates.get("priced"):
            notes.append(
                f"{plain(key)}: ${rates['input']:g} input, ${rates['cached_input']:g} cached, ${rates['output']:g} "
                f"output per million tokens (batch ${rates['batch_input']:g} / ${rates['batch_output']:g}); "
                f"{plain(rates['source'])}"
            )
        else:
            notes.append(f"{plain(key)}: unpriced ({plain(rates.get('note', ''))}), counted as $0")
    notes += [plain(n) for n in est.notes]
    return title, t, notes
