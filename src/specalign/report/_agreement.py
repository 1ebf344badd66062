"""The report's "Judge agreement" section: the judges, their agreement overall and per spec kind, what each
makes of the scores, a heat map of κ per spec, and the contested samples as links into the sample browser."""

from __future__ import annotations

import math
from typing import Any

from ..runs import AgreementReport, AgreementStats
from ._data import AgreementSection, ContestedLink, ReportData, ScenarioEntry
from ._svg import Svg, esc

#: κ above 0 (agreement beyond chance) in Okabe–Ito blue, below 0 (worse than chance) in vermillion
ABOVE, BELOW = (0, 114, 178), (213, 94, 0)
VERDICTS = ("YES", "NO", "NA")


def kappa_colour(kappa: float) -> tuple[str, str]:
    """A κ cell's background (deeper as |κ| grows) and its text colour: black or white, whichever contrasts more."""
    base = ABOVE if kappa >= 0 else BELOW
    t = 0.1 + 0.9 * min(1.0, abs(kappa))
    rgb = tuple(round(255 - t * (255 - c)) for c in base)
    lum = _luminance(rgb)
    fg = "#000000" if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else "#ffffff"
    return "#{:02x}{:02x}{:02x}".format(*rgb), fg


def _luminance(rgb: tuple[int, ...]) -> float:
    """WCAG relative luminance of an sRGB colour."""
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (x / 255 for x in rgb)]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def short_judge(name: str) -> str:
    """A judge's name without its server address: ``openai:gpt-4.1@http://host/v1 (sequential)`` →
    ``openai:gpt-4.1 (sequential)``; other names (``human:ana``) as they are."""
    head, at, rest = name.partition("@")
    if not at or not rest.startswith(("http://", "https://")):
        return name
    _, space, tail = rest.partition(" ")
    return f"{head} {tail}" if space else head


def _interval(stats: Any, field: str) -> list[float] | None:
    """The interval of ``field`` when the agreement report carries one (``kappa_ci``, …); None otherwise."""
    names = [f"{field}_ci"] + (["alpha_ci"] if field == "krippendorff_alpha" else [])
    for name in names:
        ci = getattr(stats, name, None)
        if (
            isinstance(ci, list | tuple)
            and len(ci) == 2
            and all(isinstance(x, int | float) and math.isfinite(x) for x in ci)
        ):
            return [float(ci[0]), float(ci[1])]
    return None


def _fmt(v: float, pct: bool) -> str:
    return f"{100 * v:.1f}%" if pct else _two(v)


def _two(v: float) -> str:
    """Two decimals, and never ``-0.00``."""
    text = f"{v:.2f}"
    return "0.00" if text == "-0.00" else text


def _ci_text(ci: list[float], pct: bool) -> str:
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if pct else f"[{_two(ci[0])}, {_two(ci[1])}]"


FIELDS = {
    "percent_agreement": ("agreement", True),
    "kappa": ("κ", False),
    "krippendorff_alpha": ("α", False),
    "unanimous": ("unanimous", True),
}


def _stat_cell(stats: AgreementStats, field: str) -> str:
    """One number of an AgreementStats: its value, its interval below when there is one, why when undefined."""
    name, pct = FIELDS[field]
    v = getattr(stats, field)
    if v is None:
        why = {"kappa": stats.kappa_undefined, "krippendorff_alpha": stats.alpha_undefined}.get(field)
        why = f"{name} undefined: {why or 'no item to compare'}"
        return f'<td class="undef" title="{esc(why)}">—</td>'
    ci = _interval(stats, field)
    dropped = getattr(stats, f"{field}_ci_dropped", None) if ci else None
    tip = (
        f"{name} {_fmt(v, pct)}"
        + (f", 95% interval {_ci_text(ci, pct)}" if ci else "")
        + f" over {stats.n_items} items"
        + (f"; {dropped} resamples with an undefined {name} left out of the interval" if dropped else "")
    )
    small = f'<small class="ci">{_ci_text(ci, pct)}</small>' if ci else ""
    return f'<td title="{esc(tip)}">{_fmt(v, pct)}{small}</td>'


def agreement_section(data: ReportData) -> str:
    """The section's HTML; empty when the report has no agreement data."""
    section = data.agreement
    if section is None:
        return ""
    rep = section.report
    people = len(getattr(rep, "humans", None) or [])
    raters = f"{len(rep.judges) - people} judges" + (
        f" and {people} {'person' if people == 1 else 'people'}" if people else ""
    )
    return f"""<h2 id="agreement">Judge agreement</h2>
<p class="muted">{raters} rated the same answers. An item is one spec of one answer, and the judges' verdicts on it
(YES, NO or NA) are compared pair by pair over the items both rated. Cohen's κ corrects agreement for chance: 1 is full
agreement, 0 is what chance gives, below 0 is worse than chance. Krippendorff's α covers all judges at once. κ or α is
undefined (—) when the judges gave a single verdict throughout: hover for why.{_interval_note(rep)}
<code>specalign agreement</code> prints the same numbers, and more, for scripts.</p>
{_judges_table(rep)}
<div class="agree-grid">
<div><h3>Agreement</h3><div class="scroll">{_stats_table(rep)}</div>{_pairs_table(rep)}</div>
<div><h3>Scores under each judge</h3><div class="scroll">{_scores_table(section, data)}</div>
<p class="muted">Over each run's shared samples (those every judge scored); means over scenarios. Δ: the first
judge's score minus the second's, in points.</p>{_rank_note(rep)}</div>
</div>
<h3 id="agreement-specs">κ per spec</h3>
<p class="muted">One row per scenario, one cell per spec, the first cell all its specs together. Hover a cell for its
agreement, items and the spec's text.</p>
{kappa_legend()}
<div class="scroll">{kappa_heatmap(section, data)}</div>
{_contested(section, data)}
{_warnings(rep)}"""


def _interval_note(rep: AgreementReport) -> str:
    settings = getattr(rep, "bootstrap", None)
    resamples = getattr(settings, "resamples", None)
    if not resamples:
        return ""
    return (
        f" Small print under a value is its 95% interval, from a bootstrap over samples ({resamples:,} resamples): "
        "all the specs of one answer are drawn together."
    )


def _judge_ref(rep: AgreementReport) -> dict[str, str]:
    """Each judge's name → its short reference in tables: J1, J2, …"""
    return {j.name: f"J{k + 1}" for k, j in enumerate(rep.judges)}


def _judges_table(rep: AgreementReport) -> str:
    rows = "".join(
        f'<tr><td class="left">J{k + 1}</td><td class="left" title="{esc(j.name)}">{esc(short_judge(j.name))}</td>'
        f'<td class="left">{esc(_mode(j))}</td><td>{j.samples}</td><td>{j.scored}</td><td>{j.unscored}</td>'
        f"<td>{j.not_judged}</td></tr>"
        for k, j in enumerate(rep.judges)
    )
    return (
        '<div class="scroll"><table class="headline agree-judges"><thead><tr><th class="left"></th>'
        '<th class="left">judge</th><th class="left">mode</th><th>samples</th><th>scored</th>'
        "<th>unscored</th><th>not judged</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )


def _mode(judge: Any) -> str:
    """A judge's mode, or "person" for a person's labels."""
    return "person" if getattr(judge, "kind", "judge") == "human" else judge.mode or ""


def _stats_table(rep: AgreementReport) -> str:
    fields = ["percent_agreement", "kappa", "krippendorff_alpha"] + (["unanimous"] if len(rep.judges) > 2 else [])
    head = "".join(f"<th>{esc(FIELDS[f][0])}</th>" for f in fields)
    parts = [("all specs", rep.overall)] + [(f"{k} specs", s) for k, s in rep.kinds.items()]
    body = "".join(
        f'<tr><td class="left">{esc(label)}</td><td>{s.n_items}</td>'
        + "".join(_stat_cell(s, f) for f in fields)
        + "</tr>"
        for label, s in parts
    )
    return (
        f'<table class="headline agree-stats"><thead><tr><th class="left"></th><th>items</th>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _pairs_table(rep: AgreementReport) -> str:
    """Each pair of judges, with more than two: κ overall is the mean of theirs."""
    if len(rep.judges) <= 2:
        return ""
    ref = _judge_ref(rep)
    rows = []
    for p in rep.overall.pairs:
        a, b = (ref.get(j, j) for j in p.judges)
        kappa = (
            f'<td class="undef" title="{esc(p.kappa_undefined or "")}">—</td>'
            if p.kappa is None
            else f"<td>{_two(p.kappa)}</td>"
        )
        agreement = "—" if p.percent_agreement is None else _fmt(p.percent_agreement, True)
        rows.append(
            f'<tr><td class="left" title="{esc(" · ".join(p.judges))}">{esc(a)} · {esc(b)}</td><td>{p.n}</td>'
            f"<td>{agreement}</td>{kappa}</tr>"
        )
    return (
        '<div class="scroll"><table class="headline agree-pairs"><thead><tr><th class="left">pair</th><th>items</th>'
        f"<th>agreement</th><th>κ</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
        "<p class=\"muted\">κ over all specs is the mean of the pairs' defined κ (Light's κ).</p>"
    )


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def _signed(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:+.1f}"


def _scores_table(section: AgreementSection, data: ReportData) -> str:
    rep = section.report
    ref = _judge_ref(rep)
    labels = {r.index: r.label for r in data.runs}
    rows = []
    for run in rep.runs:
        shown = [labels[i] for i in section.run_indices.get(run.label, []) if i in labels]
        label = " · ".join(dict.fromkeys(shown)) or run.label
        span = len(run.scores) + len(run.differences)
        first = True
        for judge, s in run.scores.items():
            head = (
                f'<td class="left" rowspan="{span}" title="{esc(" · ".join(run.run_dirs))}">{esc(label)}</td>'
                if first
                else ""
            )
            first = False
            rows.append(
                f'<tr>{head}<td class="left" title="{esc(judge)}">{esc(ref.get(judge, judge))} '
                f'<span class="muted">{esc(short_judge(judge))}</span></td><td>{s.n}</td><td>{_pct(s.safety)}</td>'
                f"<td>{_pct(s.behavioral)}</td><td>{_pct(s.sar)}</td></tr>"
            )
        for d in run.differences:
            a, b = (ref.get(j, j) for j in d.judges)
            rows.append(
                f'<tr class="diff"><td class="left">Δ {esc(a)} − {esc(b)}</td><td></td><td>{_signed(d.safety)}</td>'
                f"<td>{_signed(d.behavioral)}</td><td>{_signed(d.sar)}</td></tr>"
            )
    return (
        '<table class="headline agree-scores"><thead><tr><th class="left">run</th><th class="left">judge</th>'
        "<th>shared</th><th>safety %</th><th>behavioral %</th><th>SAR %</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _rank_note(rep: AgreementReport) -> str:
    rc = rep.rank_correlation
    if rc.n_runs < 2:
        return ""
    if rc.kendall_tau is None:
        return f'<p class="muted">Ranking of the {rc.n_runs} runs by SAR: {esc(rc.undefined or "undefined")}.</p>'
    rho = "—" if rc.spearman_rho is None else _two(rc.spearman_rho)
    return (
        f'<p class="muted">Do the judges rank the {rc.n_runs} runs alike by SAR? Kendall\'s τ {_two(rc.kendall_tau)}, '
        f"Spearman's ρ {rho}" + (" (means over the pairs of judges)" if len(rc.pairs) > 1 else "") + ".</p>"
    )


# -- the heat map ------------------------------------------------------------------------------------------------------


def _kind(spec_id: str, entry: ScenarioEntry | None) -> str:
    if entry is not None:
        for sp in entry.specs:
            if sp.id == spec_id:
                return sp.kind
    return "safety" if spec_id.startswith("S") else "behavioral"


def _spec_order(specs: dict[str, AgreementStats], entry: ScenarioEntry | None) -> tuple[list[str], list[str]]:
    """A scenario's specs with agreement numbers, safety then behavioral, in the scenario's order."""
    known = [sp.id for sp in entry.specs] if entry else []
    rest = sorted((k for k in specs if k not in known), key=lambda k: (len(k), k))
    order = [k for k in known if k in specs] + rest
    return [k for k in order if _kind(k, entry) == "safety"], [k for k in order if _kind(k, entry) == "behavioral"]


def kappa_heatmap(section: AgreementSection, data: ReportData) -> str:
    """Scenarios × specs, κ printed in each cell and coloured by it; undefined κ hatched, with the reason on hover."""
    rep = section.report
    entries = {s.key: s for s in data.scenarios}
    rows = []
    laid = []
    for scenario, specs in rep.specs.items():
        entry = entries.get(section.scenario_keys.get(scenario, scenario))
        laid.append((scenario, specs, entry, *_spec_order(specs, entry)))
    n_s = max((len(x[3]) for x in laid), default=0)
    n_b = max((len(x[4]) for x in laid), default=0)
    for scenario, specs, entry, safety, behavioral in laid:
        name = entry.name if entry else scenario
        texts = {sp.id: sp.text for sp in entry.specs} if entry else {}
        whole = rep.scenarios.get(scenario)
        cells = [_kappa_cell(scenario, name, "", whole, None) if whole else '<td class="pad"></td>']
        cells += [_kappa_cell(scenario, name, k, specs[k], texts.get(k)) for k in safety]
        cells += ['<td class="pad"></td>'] * (n_s - len(safety))
        cells += [_kappa_cell(scenario, name, k, specs[k], texts.get(k)) for k in behavioral]
        cells += ['<td class="pad"></td>'] * (n_b - len(behavioral))
        rows.append(
            f'<tr><th class="left" title="{esc(scenario)}">{esc(name)}</th>'
            + "".join(cells[: 1 + n_s])
            + ('<td class="gap"></td>' if n_s and n_b else "")
            + "".join(cells[1 + n_s :])
            + "</tr>"
        )
    head = (
        '<tr><th class="left">scenario</th><th>all</th>'
        + (f'<th colspan="{n_s}">safety specs</th>' if n_s else "")
        + ('<th class="gap"></th>' if n_s and n_b else "")
        + (f'<th colspan="{n_b}">behavioral specs</th>' if n_b else "")
        + "</tr>"
    )
    return f'<table class="kappa-map"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _kappa_cell(scenario: str, name: str, spec_id: str, stats: AgreementStats, text: str | None) -> str:
    """One κ: the spec's id over the value; ``spec_id`` empty for the whole scenario."""
    what = f"{name} {spec_id}" if spec_id else f"{name}: all specs"
    kappa = stats.kappa
    ci = _interval(stats, "kappa")
    disputed = "" if stats.unanimous is None else f" ({round(stats.n_items * (1 - stats.unanimous))} disputed)"
    agreement = "—" if stats.percent_agreement is None else _fmt(stats.percent_agreement, True)
    alpha = "undefined" if stats.krippendorff_alpha is None else _two(stats.krippendorff_alpha)
    lines = [
        what + (f": κ undefined, {stats.kappa_undefined or 'no item to compare'}" if kappa is None else ""),
        ("" if kappa is None else f"κ {_two(kappa)}" + (f" {_ci_text(ci, False)}" if ci else "") + " · ")
        + f"agreement {agreement} over {stats.n_items} items{disputed} · α {alpha}",
    ] + ([text] if text else [])
    label = f'<span class="spec-id">{esc(spec_id or "all")}</span>'
    attrs = f'data-scenario="{esc(scenario)}" data-spec="{esc(spec_id)}" title="{esc(chr(10).join(lines))}"'
    if kappa is None:
        return f'<td class="kappa undefined" {attrs}>{label}<span class="val">—</span></td>'
    bg, fg = kappa_colour(kappa)
    return (
        f'<td class="kappa" {attrs} data-kappa="{kappa!r}" style="background:{bg};color:{fg}">'
        f'{label}<span class="val">{_two(kappa)}</span></td>'
    )


def kappa_legend() -> str:
    """The colour scale, κ from −1 to 1, and the hatched swatch of an undefined κ."""
    width, height, left, steps = 300, 40, 10, 40
    svg = Svg(width, height, "Colour scale of κ, from −1 (vermillion) through 0 (white) to 1 (blue)", "scale")
    bar = (width - 2 * left) / steps
    for i in range(steps):
        bg, _ = kappa_colour(-1 + (i + 0.5) * 2 / steps)
        svg.el("rect", x=round(left + i * bar, 2), y=4, width=round(bar + 0.3, 2), height=14, fill=bg)
    for t in (-1, -0.5, 0, 0.5, 1):
        x = left + (t + 1) / 2 * (width - 2 * left)
        svg.el("line", x1=round(x, 1), x2=round(x, 1), y1=18, y2=22, class_="frame")
        svg.el("text", f"{t:g}", x=round(x, 1), y=34, class_="tick", text_anchor="middle")
    return (
        f'<div class="kappa-legend">{svg.render()}<span class="muted">κ: below 0 worse than chance, 0 chance, 1 full '
        'agreement</span><span><span class="kappa-swatch undefined"></span>undefined (hover a cell for why)</span></div>'
    )


# -- contested samples -------------------------------------------------------------------------------------------------


def _contested(section: AgreementSection, data: ReportData) -> str:
    rep = section.report
    if not section.contested:
        return '<h3 id="contested">Contested samples</h3><p class="muted">The judges agree on every verdict.</p>'
    ref = _judge_ref(rep)
    index = {s.id: i for i, s in enumerate(data.samples)}
    labels = {r.index: r.label for r in data.runs}
    rows = []
    for c in section.contested:
        rows.append(
            f'<tr><td class="left">{_link(c, index)}</td>'
            f'<td class="left">{esc(labels[c.report_runs[0]] if c.report_runs else c.run)}</td>'
            f'<td title="{c.disagreements} of {c.comparisons} comparisons of verdicts differ">{c.disagreements} of '
            f'{c.comparisons}</td><td class="left">{_disputes(c, ref)}</td></tr>'
        )
    return f"""<h3 id="contested">Contested samples</h3>
<p class="muted">The samples the judges disagree on most: the share of (spec, pair of judges) comparisons that differ.
Click a sample to open it in the sample browser below, with the disputed verdicts.</p>
<div class="scroll"><table class="headline agree-contested"><thead><tr><th class="left">sample</th>
<th class="left">run</th><th>differ</th><th class="left">disputed specs: each judge's verdict</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table></div>"""


def _link(c: ContestedLink, index: dict[str, int]) -> str:
    i = index.get(c.report_sample) if c.report_sample else None
    if i is None or not c.report_runs:
        return f'<span class="mono" title="not among this report\'s samples">{esc(c.sample_id)}</span>'
    r = c.report_runs[0]
    return (
        f'<a class="contested-link mono" href="#sample-{i}-run-{r}" data-sample="{i}" data-run="{r}">'
        f"{esc(c.sample_id)}</a>"
    )


def _disputes(c: ContestedLink, ref: dict[str, str]) -> str:
    parts = []
    for spec, verdicts in c.specs.items():
        said = " ".join(
            f'<span title="{esc(judge)}">{esc(ref.get(judge, judge))}</span> '
            f'<span class="verdict {v if v in VERDICTS else ""}">{esc(v)}</span>'
            for judge, v in verdicts.items()
        )
        parts.append(f'<span class="mono">{esc(spec)}</span>: {said}')
    return "; ".join(parts)


def _warnings(rep: AgreementReport) -> str:
    items = [esc(w) for w in rep.warnings]
    if rep.skipped:
        items.append(
            f"{len(rep.skipped)} sample{'s' if len(rep.skipped) != 1 else ''} left out: their responses differ"
        )
    return f'<ul class="notes">{"".join(f"<li>{w}</li>" for w in items)}</ul>' if items else ""


def browser_agreement(data: ReportData) -> dict[str, Any]:
    """What the sample browser shows of the agreement: the judges' short names, and per contested sample its
    index, the report runs holding it and each disputed spec's verdicts (judge index, verdict)."""
    section = data.agreement
    if section is None:
        return {"judges": [], "contested": [], "run_judge": []}
    judges = [j.name for j in section.report.judges]
    where = {name: k for k, name in enumerate(judges)}
    index = {s.id: i for i, s in enumerate(data.samples)}
    contested = []
    for c in section.contested:
        i = index.get(c.report_sample) if c.report_sample else None
        if i is None:
            continue
        specs = [[spec, [[where.get(j, -1), v] for j, v in verdicts.items()]] for spec, verdicts in c.specs.items()]
        contested.append([i, c.report_runs, specs])
    keys = {j.key: k for k, j in enumerate(section.report.judges)}
    return {
        "judges": [[f"J{k + 1}", short_judge(n), n] for k, n in enumerate(judges)],
        "contested": contested,
        "run_judge": [keys.get(r.judge_key or "", -1) for r in data.runs],
    }
