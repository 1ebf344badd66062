"""Rich tables for data listings and scores."""

from __future__ import annotations

from rich import box
from rich.table import Table

from .._terminal import plain, shown
from ..runs import ComparisonRow, ScoresReport
from ..scoring import Metric

__all__ = ["comparison_table", "data_table", "pct", "plain", "scores_table", "shown"]


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
    from ..runs import delta_note, interval_note, overall_notes  # noqa: PLC0415

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
        ("unscored", "unsc."),
    ]
    columns = [
        c for c in columns if not (c[0] == "model" and len(models) == 1) and not (c[0] == "judge" and len(judges) == 1)
    ]
    caption = "tokens: avg completion tokens per sample · calls: model calls per sample · ΔSAR vs the baseline"
    notes = [n for n in (delta_note(rows), interval_note(rows), *overall_notes(rows)) if n]
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
