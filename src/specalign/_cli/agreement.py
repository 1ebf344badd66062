"""``specalign agreement``: how far judges agree on the same answers (κ, α, confusion, rank correlation)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer

from .common import (
    BootstrapOption,
    RecomputeAlphaOption,
    RecomputeNaPolicyOption,
    ReviewOnly,
    RunDirsArgument,
    err,
    out,
    value,
)

if TYPE_CHECKING:
    from rich.table import Table

    from ..runs import AgreementReport, AgreementStats, PairAgreement


def agreement(
    run_dirs: RunDirsArgument,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    top: int = typer.Option(10, "--top", min=0, help="Contested samples and specs to list."),
    alpha: RecomputeAlphaOption = None,
    na_policy: RecomputeNaPolicyOption = None,
    bootstrap: BootstrapOption = None,
) -> None:
    """Judge agreement over the same answers: percent agreement, Cohen's κ, Krippendorff's α, confusion matrices,
    what each judge makes of the scores, and the most contested samples and specs (no model calls).

    Give one run directory judged again with another --judge, or directories over the same generations, each
    judged by another judge. With several runs (methods, models), each judged by the judges, it also gives the
    rank correlation (Kendall's τ, Spearman's ρ) of the runs' SAR under each judge.

    People's labels (specalign review DIR --label) count as raters named human:NAME, beside the judges.
    Percent agreement and κ come with 95% intervals from a bootstrap over samples.

    Example: specalign agreement runs/bundled-local-vanilla --json
    """
    from .._terminal import plain  # noqa: PLC0415
    from ..runs import judge_agreement  # noqa: PLC0415

    rep = judge_agreement(run_dirs, alpha=alpha, na_policy=value(na_policy), top=top, bootstrap=bootstrap)
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

    judges = [j for j in rep.judges if j.kind == "judge"]
    people = [j for j in rep.judges if j.kind == "human"]
    alias = {j.name: f"J{i}" for i, j in enumerate(judges, 1)} | {j.name: f"H{i}" for i, j in enumerate(people, 1)}
    resamples = rep.bootstrap.resamples if rep.bootstrap is not None else 0
    ci = resamples > 0

    view: list[Table | str] = []

    def table(title: str, note: str | None = None) -> Table:
        """A table after its title line (and a note line): long lines wrap with the terminal, not the table."""
        view.extend(["", f"[bold]{title}[/bold]", *([f"[dim]{note}[/dim]"] if note else [])])
        t = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        view.append(t)
        return t

    listed = table(f"Judges · {len(rep.runs)} run{'s' if len(rep.runs) != 1 else ''}")
    for col in ("", "judge", "samples", "scored", "unscored", "not judged"):
        listed.add_column(col, justify="left" if col in ("", "judge") else "right", overflow="fold")
    for j in judges:
        mode = f" ({plain(j.mode)})" if j.mode and j.mode != "joint" and f"({j.mode})" not in j.name else ""
        listed.add_row(
            alias[j.name], plain(j.name) + mode, *(str(x) for x in (j.samples, j.scored, j.unscored, j.not_judged))
        )
    if people:
        labellers = table("People (labels from specalign review DIR --label)")
        for col in ("", "labeler", "items labelled", "samples", "left out (answer changed)"):
            labellers.add_column(col, justify="left" if col in ("", "labeler") else "right", overflow="fold")
        for j in people:
            labellers.add_row(alias[j.name], plain(j.name), str(j.labels or 0), str(j.scored), str(j.stale_labels or 0))
    two = len(rep.overall.pairs) == 1
    agree = table(
        "Agreement over spec verdicts (YES / NO / NA)",
        "agreement: share of items both raters gave the same verdict · κ: Cohen's κ"
        + ("" if two else " (mean over pairs)")
        + " · α: Krippendorff's α, nominal · —: undefined (the raters used one verdict throughout; see --json)"
        + (f" · \\[a, b]: 95% interval, bootstrap over samples ({resamples} resamples)" if ci and two else "")
        + (" · *: more than 1% of the resamples had an undefined κ, left out" if ci and two else ""),
    )
    for col in ("", "items", "agreement %", "κ", "α"):
        agree.add_column(col, justify="left" if not col else "right")
    agree.add_row("[bold]overall[/bold]", *_stats_cells(rep.overall, rep))
    for kind, stats in rep.kinds.items():
        agree.add_row(f"{kind} specs", *_stats_cells(stats, rep))
    agree.add_section()
    for scenario, stats in rep.scenarios.items():
        agree.add_row(plain(scenario), *_stats_cells(stats, rep))

    if not two:
        pairs = table(
            "Pairs of raters, over every item both rated",
            f"\\[a, b]: 95% interval, bootstrap over samples ({resamples} resamples) · *: more than 1% "
            "of the resamples had an undefined κ, left out"
            if ci
            else None,
        )
        for col in ("pair", "items", "agreement %", "κ"):
            pairs.add_column(col, justify="left" if col == "pair" else "right")
        groups = [
            ("", [p for p in rep.overall.pairs if not (set(p.judges) & set(rep.humans))]),
            ("judge vs person", rep.judge_vs_human.pairs if rep.judge_vs_human else []),
            ("person vs person", rep.human_vs_human.pairs if rep.human_vs_human else []),
        ]
        for title, group in groups:
            if not group:
                continue
            pairs.add_section()
            for one in group:
                pairs.add_row(f"{alias[one.judges[0]]} · {alias[one.judges[1]]}", *_pair_cells(one, rep))
            summary = rep.judge_vs_human if title == "judge vs person" else rep.human_vs_human if title else None
            if summary is not None and summary.n_pairs > 1:
                pairs.add_row(f"[dim]{title}: mean[/dim]", "", _pct(summary.percent_agreement), _num(summary.kappa))

    for pair in rep.overall.pairs:
        a, b = (alias[n] for n in pair.judges)
        shares = " ".join(
            x for x in (f"{_pct(pair.percent_agreement)}%", _ci(pair.percent_agreement_ci, pct=True)) if x
        )
        kappa = " ".join(x for x in (_num(pair.kappa), _ci(pair.kappa_ci)) if x)
        conf = table(f"{a} (rows) against {b} (columns): {pair.n} items · agreement {shares} · κ {kappa}")
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


def _stats_cells(s: AgreementStats, rep: AgreementReport) -> list[str]:
    return [
        str(s.n_items),
        f"{_pct(s.percent_agreement)} {_ci(s.percent_agreement_ci, pct=True)}".rstrip(),
        f"{_num(s.kappa)} {_ci(s.kappa_ci)}{_dropped(s.kappa_ci_dropped, rep)}".rstrip(),
        _num(s.krippendorff_alpha),
    ]


def _pair_cells(p: PairAgreement, rep: AgreementReport) -> list[str]:
    return [
        str(p.n),
        f"{_pct(p.percent_agreement)} {_ci(p.percent_agreement_ci, pct=True)}".rstrip(),
        f"{_num(p.kappa)} {_ci(p.kappa_ci)}{_dropped(p.kappa_ci_dropped, rep)}".rstrip(),
    ]


def _ci(ci: list[float] | None, *, pct: bool = False) -> str:
    if ci is None:
        return ""
    low, high = (100 * x for x in ci) if pct else ci
    return f"[{low:.1f}, {high:.1f}]" if pct else f"[{low:.2f}, {high:.2f}]"


def _dropped(n: int | None, rep: AgreementReport) -> str:
    resamples = rep.bootstrap.resamples if rep.bootstrap else 0
    return "*" if n and resamples and n > 0.01 * resamples else ""


def _pct(x: float | None, *, signed: bool = False) -> str:
    if x is None:
        return "—"
    return f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}"


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


# -- specalign review RUN_DIR --label: people's labels ------------------------------------------------------------------

#: the options of `specalign review` that only go with --label
LABEL_OPTIONS = ("label", "n", "seed", "judge", "labeler")


def review_or_label(
    scenario_dir: str = typer.Argument(
        ..., help="A scenario folder (scenario.yaml, prompts.yaml); with --label, a run directory."
    ),
    reviewer: str | None = typer.Option(
        None, "--reviewer", help="Who decides (default: $SPECALIGN_REVIEWER or your user name)."
    ),
    only: ReviewOnly | None = typer.Option(None, "--only", help="Review only specs, prompts or attacks."),
    export: str | None = typer.Option(None, "--export", help="Write a review sheet (CSV) instead of asking here."),
    import_sheet_path: str | None = typer.Option(None, "--import", help="Read decisions from a filled review sheet."),
    apply_to: str | None = typer.Option(
        None, "--apply", help="Write the final scenario (accepted items only) into this data folder."
    ),
    force: bool = typer.Option(False, "--force", help="With --apply: replace an existing final scenario."),
    raw_cells: bool = typer.Option(
        False,
        "--raw-cells",
        help="With --export: write cells starting with = + - @ "
        "as they are, without the leading ' that keeps spreadsheets from running them.",
    ),
    label: bool = typer.Option(
        False, "--label", help="Label a run's answers blind (YES, NO, NA per spec): the argument is a run directory."
    ),
    n: int | None = typer.Option(None, "--n", min=1, help="With --label --export: items to draw (default 200)."),
    seed: int | None = typer.Option(
        None, "--seed", help="With --label --export: the draw's seed (default 20240917: everyone gets the same items)."
    ),
    judge: str | None = typer.Option(
        None,
        "--judge",
        help="With --label --export: draw from the answers this judge scored (its key or its model's key; "
        "default: the run's judge).",
    ),
    labeler: str | None = typer.Option(
        None,
        "--labeler",
        help="With --label --import: whose labels (default: --reviewer, $SPECALIGN_REVIEWER or your user name).",
    ),
) -> None:
    """Verify specs, prompts and attacked prompts: accept, reject, edit or skip each, in the terminal or
    through a CSV sheet. Decisions (who, when) go to review.jsonl beside the data; a rerun carries on.

    In an exported sheet, a cell that starts with = + - @ (a formula to a spreadsheet) or ' gets a
    leading '; --import removes it. --import reads sheets saved as UTF-8, UTF-16 or Windows-1252,
    separated by commas, semicolons or tabs.

    With --label, the argument is a run directory and people label its answers, for `specalign agreement`:
    --export SHEET.csv draws --n items (a spec of an answer each; stratified by scenario × spec, seeded) into a
    blind sheet without the judges' verdicts; fill in label (YES, NO or NA) and read it back with --import
    SHEET.csv. Labels (who, when) go to labels.jsonl in the run directory; each person imports their own copy.
    This use of `specalign review` stays after 0.3.

    Example: specalign scenario review scenarios/museum-guide

    Example: specalign review runs/v --label --export labels.csv --n 200

    Example: specalign review runs/v --label --import labels.csv --labeler alice
    """
    from pathlib import Path  # noqa: PLC0415

    from ..errors import ConfigError  # noqa: PLC0415
    from .scenario import review  # noqa: PLC0415

    folder = Path(scenario_dir)
    if not label:
        extra = [
            o for o, v in (("--n", n), ("--seed", seed), ("--judge", judge), ("--labeler", labeler)) if v is not None
        ]
        if extra:
            raise ConfigError(f"{extra[0]} goes with --label (labelling a run's answers)", field=extra[0])
        if (folder / "manifest.json").is_file() and not (folder / "scenario.yaml").is_file():
            raise ConfigError(
                f"{scenario_dir} is a run directory, not a scenario folder: to label its answers add --label "
                f"(specalign review {scenario_dir} --label --export SHEET.csv)",
                field="SCENARIO_DIR",
            )
        review(
            scenario_dir,
            reviewer=reviewer,
            only=only,
            export=export,
            import_sheet_path=import_sheet_path,
            apply_to=apply_to,
            force=force,
            raw_cells=raw_cells,
        )
        return
    used = [o for o, v in (("--only", only), ("--apply", apply_to)) if v is not None] + (["--force"] if force else [])
    if used:
        raise ConfigError(f"{used[0]} is for reviewing a scenario, not with --label", field=used[0])
    if (folder / "scenario.yaml").is_file():
        raise ConfigError(
            f"{scenario_dir} is a scenario folder: --label labels a run directory's answers; review a scenario "
            f"without it (specalign scenario review {scenario_dir})",
            field="--label",
        )
    if not (folder / "manifest.json").is_file():
        raise ConfigError(
            f"{scenario_dir} is not a run directory (no manifest.json): --label labels the answers of a run "
            "(specalign run --out DIR)",
            field="--label",
        )
    if export and import_sheet_path:
        raise ConfigError("choose one of --export and --import", field="--export")
    if export:
        _label_export(scenario_dir, export, n, seed, judge, raw_cells)
    elif import_sheet_path:
        if n is not None or seed is not None or judge is not None:
            raise ConfigError("--n, --seed and --judge go with --export", field="--import")
        _label_import(scenario_dir, import_sheet_path, labeler or reviewer)
    else:
        _label_status(scenario_dir)


def _label_export(run_dir: str, sheet: str, n: int | None, seed: int | None, judge: str | None, raw: bool) -> None:
    from .._terminal import plain  # noqa: PLC0415
    from ..runs import export_labels  # noqa: PLC0415
    from .common import path_value  # noqa: PLC0415

    sheet = path_value(sheet, "--export") or sheet
    record, warnings = export_labels(run_dir, sheet, n=200 if n is None else n, seed=seed, judge=judge, raw_cells=raw)
    for w in warnings:
        err.print(f"[yellow]warning: {plain(w)}[/yellow]", soft_wrap=True)
    err.print(
        plain(
            f"wrote {sheet}: {len(record.items)} items from {len(record.cells)} scenario × spec cells (seed "
            f"{record.seed}, export {record.export}), blind: no verdicts. Fill in label (YES, NO or NA), then: "
            f"specalign review {run_dir} --label --import {sheet} --labeler NAME"
        ),
        soft_wrap=True,
        highlight=False,
    )


def _label_import(run_dir: str, sheet: str, labeler: str | None) -> None:
    from .._terminal import plain  # noqa: PLC0415
    from ..authoring import reviewer_name  # noqa: PLC0415
    from ..runs import import_labels  # noqa: PLC0415

    who = reviewer_name(labeler)
    labels, blank, warnings = import_labels(run_dir, sheet, who)
    for w in warnings:
        err.print(f"[yellow]warning: {plain(w)}[/yellow]", soft_wrap=True)
    if blank:
        err.print(f"[yellow]warning: {blank} rows without a label: skipped[/yellow]", soft_wrap=True)
    err.print(
        plain(
            f"imported {len(labels)} labels by {who} into {run_dir}/labels.jsonl; compare them with the judges: "
            f"specalign agreement {run_dir}"
        ),
        soft_wrap=True,
        highlight=False,
    )


def _label_status(run_dir: str) -> None:
    from .._terminal import plain  # noqa: PLC0415
    from ..runs import read_label_exports, read_labels  # noqa: PLC0415

    exports, labels = read_label_exports(run_dir), read_labels(run_dir)
    people: dict[str, set[str]] = {}
    for x in labels:
        people.setdefault(x.labeler, set()).add(x.item)
    out.print(
        plain(
            f"{run_dir}: {len(exports)} label sheet{'s' if len(exports) != 1 else ''} exported, "
            + (
                ", ".join(f"{who} labelled {len(items)} items" for who, items in sorted(people.items()))
                or "no labels yet"
            )
            + f". Export one: specalign review {run_dir} --label --export SHEET.csv"
        ),
        soft_wrap=True,
        highlight=False,
    )
