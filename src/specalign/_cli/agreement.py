"""``specalign agreement``: how far judges agree on the same answers (κ, α, confusion, rank correlation)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer

from .common import RecomputeAlphaOption, RecomputeNaPolicyOption, RunDirsArgument, err, out, value

if TYPE_CHECKING:
    from rich.table import Table

    from ..runs import AgreementReport, AgreementStats


def agreement(
    run_dirs: RunDirsArgument,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    top: int = typer.Option(10, "--top", min=0, help="Contested samples and specs to list."),
    alpha: RecomputeAlphaOption = None,
    na_policy: RecomputeNaPolicyOption = None,
) -> None:
    """Judge agreement over the same answers: percent agreement, Cohen's κ, Krippendorff's α, confusion matrices,
    what each judge makes of the scores, and the most contested samples and specs (no model calls).

    Give one run directory judged again with another --judge, or directories over the same generations, each
    judged by another judge. With several runs (methods, models), each judged by the judges, it also gives the
    rank correlation (Kendall's τ, Spearman's ρ) of the runs' SAR under each judge.

    Example: specalign agreement runs/bundled-local-vanilla --json
    """
    from .._terminal import plain  # noqa: PLC0415
    from ..runs import judge_agreement  # noqa: PLC0415

    rep = judge_agreement(run_dirs, alpha=alpha, na_policy=value(na_policy), top=top)
    for warning in rep.warnings:
        err.print(f"[yellow]warning: {plain(warning)}[/yellow]", soft_wrap=True)
    if as_json:
        print(json.dumps(rep.model_dump(mode="json"), indent=2))
        return
    for part in agreement_view(rep):
        out.print(part, soft_wrap=isinstance(part, str), highlight=False)


def agreement_view(rep: AgreementReport) -> list[Table | str]:
    """The report as rich tables and lines (markup): judges, agreement, pairs, scores, rank correlation,
    contested specs and samples."""
    from rich import box  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from .._terminal import plain  # noqa: PLC0415

    alias = {j.name: f"J{i}" for i, j in enumerate(rep.judges, 1)}

    view: list[Table | str] = []

    def table(title: str, note: str | None = None) -> Table:
        """A table after its title line (and a note line): long lines wrap with the terminal, not the table."""
        view.extend(["", f"[bold]{title}[/bold]", *([f"[dim]{note}[/dim]"] if note else [])])
        t = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        view.append(t)
        return t

    judges = table(f"Judges · {len(rep.runs)} run{'s' if len(rep.runs) != 1 else ''}")
    for col in ("", "judge", "samples", "scored", "unscored", "not judged"):
        judges.add_column(col, justify="left" if col in ("", "judge") else "right", overflow="fold")
    for j in rep.judges:
        mode = f" ({plain(j.mode)})" if j.mode and j.mode != "joint" and f"({j.mode})" not in j.name else ""
        judges.add_row(
            alias[j.name], plain(j.name) + mode, *(str(x) for x in (j.samples, j.scored, j.unscored, j.not_judged))
        )
    agree = table(
        "Agreement over spec verdicts (YES / NO / NA)",
        "agreement: share of items both judges gave the same verdict · κ: Cohen's κ"
        + (" (mean over pairs)" if len(rep.judges) > 2 else "")
        + " · α: Krippendorff's α, nominal · —: undefined (the judges used one verdict throughout; see --json)",
    )
    for col in ("", "items", "agreement %", "κ", "α"):
        agree.add_column(col, justify="left" if not col else "right")
    agree.add_row("[bold]overall[/bold]", *_stats_cells(rep.overall))
    for kind, stats in rep.kinds.items():
        agree.add_row(f"{kind} specs", *_stats_cells(stats))
    agree.add_section()
    for scenario, stats in rep.scenarios.items():
        agree.add_row(plain(scenario), *_stats_cells(stats))

    for pair in rep.overall.pairs:
        a, b = (alias[n] for n in pair.judges)
        conf = table(
            f"{a} (rows) against {b} (columns): {pair.n} items · agreement {_pct(pair.percent_agreement)}% · "
            f"κ {_num(pair.kappa)}"
        )
        conf.add_column(f"{a} \\ {b}")
        for label in pair.confusion:
            conf.add_column(label, justify="right")
        for label, row in pair.confusion.items():
            conf.add_row(label, *(str(n) for n in row.values()))

    scores = table(
        "Scores under each judge, in % (over the samples every judge of the run scored)",
        "Δ: the first judge's score minus the second's",
    )
    for col in ("run", "judge", "samples", "safety", "behav.", "SAR"):
        scores.add_column(col, justify="left" if col in ("run", "judge") else "right", overflow="fold")
    for r in rep.runs:
        for name, js in r.scores.items():
            scores.add_row(plain(r.label), alias[name], str(js.n), _pct(js.safety), _pct(js.behavioral), _pct(js.sar))
        for d in r.differences:
            scores.add_row(
                plain(r.label),
                f"Δ {alias[d.judges[0]]} − {alias[d.judges[1]]}",
                "",
                _pct(d.safety, signed=True),
                _pct(d.behavioral, signed=True),
                _pct(d.sar, signed=True),
            )
        scores.add_section()

    rc = rep.rank_correlation
    if rc.n_runs >= 2:
        ranks = table(f"Rank correlation of the {rc.n_runs} runs' SAR under each judge")
        for col in ("judges", "runs", "Kendall τ", "Spearman ρ", "note"):
            ranks.add_column(col, justify="right" if col in ("runs", "Kendall τ", "Spearman ρ") else "left")
        for p in rc.pairs:
            ranks.add_row(
                f"{alias[p.judges[0]]} · {alias[p.judges[1]]}",
                str(len(p.runs)),
                _num(p.kendall_tau),
                _num(p.spearman_rho),
                plain(p.undefined or ""),
            )

    if rep.contested_specs:
        specs = table("Most contested specs")
        for col in ("scenario", "spec", "items", "disputed", "agreement %", "κ", "samples in dispute"):
            specs.add_column(col, justify="right" if col in ("items", "disputed", "agreement %", "κ") else "left")
        for c in rep.contested_specs:
            shown = ", ".join(c.sample_ids[:5]) + (", …" if c.disagreements > 5 else "")
            specs.add_row(
                plain(c.scenario),
                c.spec_id,
                str(c.n_items),
                str(c.disagreements),
                _pct(c.percent_agreement),
                _num(c.kappa),
                plain(shown),
            )

    if rep.contested_samples:
        contested = table("Most contested samples")
        multi = len(rep.runs) > 1
        for col in (*(("run",) if multi else ()), "sample", "disagreement %", "verdicts in dispute"):
            contested.add_column(col, justify="right" if col == "disagreement %" else "left", overflow="fold")
        for s in rep.contested_samples:
            disputed = "; ".join(
                f"{spec}: " + " ".join(f"{alias[j]} {v}" for j, v in verdicts.items())
                for spec, verdicts in s.specs.items()
            )
            contested.add_row(
                *((plain(s.run),) if multi else ()),
                plain(s.sample_id),
                _pct(s.disagreement),
                plain(disputed),
            )
    return view[1:]


def _stats_cells(s: AgreementStats) -> list[str]:
    return [str(s.n_items), _pct(s.percent_agreement), _num(s.kappa), _num(s.krippendorff_alpha)]


def _pct(x: float | None, *, signed: bool = False) -> str:
    if x is None:
        return "—"
    return f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}"


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"
