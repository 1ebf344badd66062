"""Rich tables for data listings and scores."""

from __future__ import annotations

from rich.table import Table

from .runs import ScoresReport
from .scoring import Metric


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def data_table(source: str, rows: list[dict]) -> Table:
    t = Table(title=f"Data: {source}", title_justify="left")
    t.add_column("scenario", no_wrap=True, min_width=8)
    t.add_column("name", no_wrap=True, overflow="ellipsis", max_width=18)
    for col in ("S specs", "B specs", "prompts", "unsafe", "safe"):
        t.add_column(col, justify="right", no_wrap=True, min_width=len(col))
    for r in rows:
        t.add_row(r["key"], r["name"], *(str(r[k]) for k in ("safety_specs", "behavioral_specs", "prompts", "unsafe", "safe")))
    return t


def scores_table(rep: ScoresReport) -> Table:
    t = Table(
        title=(f"{rep.model} · {rep.method} · judge {rep.judge} ({rep.judge_mode}) · "
               f"α={rep.alpha} · NA policy {rep.na_policy} · scores in %"),
        title_justify="left",
    )
    t.add_column("scenario", no_wrap=True)
    for col in ("safety", "behav.", "SAR", "SAR\nunsafe", "SAR\nsafe", "scored", "unscored"):
        t.add_column(col, justify="right")
    for key, subsets in rep.scenarios.items():
        t.add_row(key, *_cells(subsets))
    t.add_section()
    t.add_row("[bold]overall[/bold]", *_cells(rep.overall))
    return t


def _cells(subsets: dict[str, Metric]) -> list[str]:
    full = subsets["full"]
    return [pct(full.safety), pct(full.behavioral), pct(full.sar), pct(subsets["unsafe"].sar),
            pct(subsets["safe"].sar), str(full.n_scored), str(full.n_unscored)]
