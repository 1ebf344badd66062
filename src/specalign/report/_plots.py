"""The report's plots as inline SVG (and the heat map as a table), drawn from :class:`ReportData`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Literal

from ..runs import PairedDelta, interval_text, p_text, spans_zero, usd
from ._data import ReportData, RunEntry
from ._svg import Linear, Log10, Svg, esc, log_domain, percent_domain, tick_label

W, H = 480, 360
LEFT, RIGHT, TOP, BOTTOM = 56, 20, 16, 46
SAR_GUIDES = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: a spec's violation rate differs from the baseline's when its exact McNemar p-value is below this
SPEC_ALPHA = 0.05


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def _ci(ci: list[float] | None) -> str:
    """`` [61.2, 78.4]`` after a score in a tooltip: its 95% interval, in %."""
    return "" if ci is None else f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _run_title(r: RunEntry) -> str:
    row = r.row
    return (
        f"{r.label}\nmodel {row.model} · judge {row.judge}\nsafety {_pct(row.safety)}{_ci(row.safety_ci)} · "
        f"behavioral {_pct(row.behavioral)}{_ci(row.behavioral_ci)} · SAR {_pct(row.sar)}{_ci(row.sar_ci)} "
        f"(95% intervals)\ncompletion tokens/sample "
        f"{'—' if row.avg_completion_tokens is None else f'{row.avg_completion_tokens:,.0f}'}"
        + ("" if row.cost_per_sample is None else f" · {usd(row.cost_per_sample)}/sample")
    )


def delta_text(d: PairedDelta | None, is_baseline: bool = False) -> str:
    """ΔSAR against the baseline as a tooltip line: value, 95% interval, p, and whether it is within noise."""
    if is_baseline:
        return "the baseline"
    if d is None:
        return "ΔSAR: no prompt scored in both this run and the baseline"
    ns = spans_zero(d.delta_sar_ci)
    return (
        f"ΔSAR vs baseline {100 * d.delta_sar:+.1f}"
        + (f" {interval_text(d.delta_sar_ci, signed=True)}, p {p_text(d.p_value)}" if d.delta_sar_ci else "")
        + (" ~ within noise (the interval spans 0)" if ns else "")
        + f" over {d.n} shared prompts"
    )


def _error_bar(svg: Svg, r: RunEntry, horizontal: bool, at: float, lo: float, hi: float) -> None:
    """A 95% interval as a line with end caps, in the run's colour."""
    cap = 4
    if horizontal:
        svg.el("line", x1=round(lo, 1), x2=round(hi, 1), y1=round(at, 1), y2=round(at, 1), stroke=r.color, class_="ci")
        for x in (lo, hi):
            svg.el(
                "line",
                x1=round(x, 1),
                x2=round(x, 1),
                y1=round(at - cap, 1),
                y2=round(at + cap, 1),
                stroke=r.color,
                class_="ci",
            )
    else:
        svg.el("line", x1=round(at, 1), x2=round(at, 1), y1=round(lo, 1), y2=round(hi, 1), stroke=r.color, class_="ci")
        for y in (lo, hi):
            svg.el(
                "line",
                x1=round(at - cap, 1),
                x2=round(at + cap, 1),
                y1=round(y, 1),
                y2=round(y, 1),
                stroke=r.color,
                class_="ci",
            )


def _ends(values: list[float | None], cis: list[list[float] | None]) -> list[float]:
    """Points and interval ends in %: what an axis must hold."""
    out = [100 * v for v in values if v is not None]
    return out + [100 * e for ci in cis if ci for e in ci]


def _axes(svg: Svg, x, y, x_title: str, y_title: str, x_fmt: Callable[[float], str] = tick_label) -> None:  # noqa: ANN001
    for t in x.ticks():
        svg.el("line", x1=x(t), x2=x(t), y1=TOP, y2=H - BOTTOM, class_="grid")
        svg.el("text", x_fmt(t), x=x(t), y=H - BOTTOM + 16, class_="tick", text_anchor="middle")
    for t in y.ticks():
        svg.el("line", x1=LEFT, x2=W - RIGHT, y1=y(t), y2=y(t), class_="grid")
        svg.el("text", tick_label(t), x=LEFT - 6, y=y(t) + 4, class_="tick", text_anchor="end")
    svg.el("rect", x=LEFT, y=TOP, width=W - LEFT - RIGHT, height=H - TOP - BOTTOM, class_="frame")
    svg.el("text", x_title, x=(LEFT + W - RIGHT) / 2, y=H - 8, class_="axis", text_anchor="middle")
    svg.el(
        "text",
        y_title,
        x=14,
        y=(TOP + H - BOTTOM) / 2,
        class_="axis",
        text_anchor="middle",
        transform=f"rotate(-90 14 {(TOP + H - BOTTOM) / 2})",
    )


def _points(svg: Svg, placed: list[tuple[RunEntry, float, float]]) -> None:
    """Dots with labels; a label that would overlap an earlier one moves down a line."""
    taken: list[tuple[float, float]] = []
    for r, px, py in sorted(placed, key=lambda p: p[2]):
        svg.el(
            "circle",
            title=_run_title(r),
            cx=round(px, 1),
            cy=round(py, 1),
            r=6,
            fill=r.color,
            class_="point",
            data_run=r.index,
        )
        left = px > W - RIGHT - 130
        lx, ly = (px - 9, py + 4) if left else (px + 9, py + 4)
        while any(abs(ly - ty) < 12 and abs(lx - tx) < 120 for tx, ty in taken):
            ly += 12
        taken.append((lx, ly))
        svg.el("text", r.label, x=round(lx, 1), y=round(ly, 1), class_="label", text_anchor="end" if left else "start")


def frontier_plot(data: ReportData) -> str:
    """Safety (x) against behavioral (y), one point per run, with iso-SAR guide curves."""
    runs = [r for r in data.runs if r.row.safety is not None and r.row.behavioral is not None]
    xs = percent_domain(_ends([r.row.safety for r in runs], [r.row.safety_ci for r in runs]))
    ys = percent_domain(_ends([r.row.behavioral for r in runs], [r.row.behavioral_ci for r in runs]))
    x, y = Linear(*xs, LEFT, W - RIGHT), Linear(*ys, H - BOTTOM, TOP)
    svg = Svg(W, H, "Safety against behavioral score, one point per run", "plot frontier")
    svg.raw(
        f'<defs><clipPath id="clip-frontier"><rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" '
        f'height="{H - TOP - BOTTOM}"/></clipPath></defs>'
    )
    _axes(svg, x, y, "safety score (%)", "behavioral score (%)")
    alpha = Counter(r.row.alpha for r in data.runs).most_common(1)[0][0]
    for level in SAR_GUIDES:
        _guide(svg, x, y, level, alpha)
    for r in runs:
        px, py = x(100 * r.row.safety), y(100 * r.row.behavioral)  # type: ignore[operator]
        if r.row.safety_ci:
            _error_bar(svg, r, True, py, x(100 * r.row.safety_ci[0]), x(100 * r.row.safety_ci[1]))
        if r.row.behavioral_ci:
            _error_bar(svg, r, False, px, y(100 * r.row.behavioral_ci[0]), y(100 * r.row.behavioral_ci[1]))
    _points(svg, [(r, x(100 * r.row.safety), y(100 * r.row.behavioral)) for r in runs])  # type: ignore[operator]
    return svg.render()


def _guide(svg: Svg, x: Linear, y: Linear, level: float, alpha: float) -> None:
    """Where safety × (α + (1 − α) × behavioral) = level: the SAR of a run whose safe and unsafe
    answers are equally helpful (a guide, not an exact contour: SAR averages per sample)."""
    pts = []
    for i in range(61):
        s = max(level, x.lo / 100) + (1 - max(level, x.lo / 100)) * i / 60
        b = 1.0 if alpha >= 1 else (level / s - alpha) / (1 - alpha)
        if 0 <= b <= 1 and s > 0:
            pts.append((x(100 * s), y(100 * b)))
    if len(pts) < 2:
        return
    svg.el(
        "polyline",
        points=" ".join(f"{px:.1f},{py:.1f}" for px, py in pts),
        class_="guide",
        clip_path="url(#clip-frontier)",
    )
    inside = [(px, py) for px, py in pts if LEFT <= px <= W - RIGHT - 30 and TOP + 10 <= py <= H - BOTTOM]
    if inside:
        lx, ly = min(inside, key=lambda p: p[1])  # where the curve enters the plot at the top
        svg.el("text", f"SAR {level:.1f}", x=round(lx + 4, 1), y=round(ly + 2, 1), class_="guide-label")


def priced_runs(data: ReportData) -> list[RunEntry]:
    """The runs with a SAR and a dollar cost per sample, every model of them priced (what the USD plot shows)."""
    return [
        r for r in data.runs if r.row.sar is not None and (r.row.cost_per_sample or 0) > 0 and not r.row.unpriced_models
    ]


def cost_plot(data: ReportData, unit: Literal["tokens", "usd"] = "tokens") -> str:
    """Cost per sample (log x) against SAR, one point per run: the model under test's average completion tokens,
    or (``usd``) the dollars of every call, judge and candidate scoring included."""
    if unit == "usd":
        runs = priced_runs(data)
        cost = {r.index: r.row.cost_per_sample or 0.0 for r in runs}
        label, axis = "USD per sample against SAR, one point per run", "USD per sample, every call (log scale)"
        empty, css, fmt = "no run has both a SAR and a priced cost", "plot cost-usd", lambda v: f"${v:g}"
    else:
        runs = [r for r in data.runs if r.row.sar is not None and (r.row.avg_completion_tokens or 0) > 0]
        cost = {r.index: r.row.avg_completion_tokens or 0.0 for r in runs}
        label, axis = (
            "Completion tokens per sample against SAR, one point per run",
            ("average completion tokens per sample (log scale)"),
        )
        empty, css, fmt = "no run has both a SAR and token counts", "plot cost", tick_label
    svg = Svg(W, H, label, css)
    if not runs:
        svg.el("text", empty, x=W / 2, y=H / 2, class_="axis", text_anchor="middle")
        return svg.render()
    x = Log10(*log_domain(list(cost.values())), LEFT, W - RIGHT)
    y = Linear(*percent_domain(_ends([r.row.sar for r in runs], [r.row.sar_ci for r in runs])), H - BOTTOM, TOP)
    _axes(svg, x, y, axis, "SAR (%)", fmt)
    for r in runs:
        if r.row.sar_ci:
            _error_bar(svg, r, False, x(cost[r.index]), y(100 * r.row.sar_ci[0]), y(100 * r.row.sar_ci[1]))
    _points(svg, [(r, x(cost[r.index]), y(100 * r.row.sar)) for r in runs])  # type: ignore[operator]
    return svg.render()


def scenario_plot(data: ReportData) -> str:
    """Grouped bars: SAR per scenario (and overall), one bar per run."""
    groups = [(s.key, s.name) for s in data.scenarios] + [("", "overall")]
    width, height, left, top, bottom = 960, 320, 48, 16, 52
    n = max(len(data.runs), 1)
    group_w = (width - left - 10) / len(groups)
    bar_w = min(36.0, (group_w - 16) / n)
    y = Linear(0, 100, height - bottom, top)
    svg = Svg(width, height, "SAR by scenario, one bar per run", "plot scenarios")
    for t in y.ticks():
        svg.el("line", x1=left, x2=width - 10, y1=y(t), y2=y(t), class_="grid")
        svg.el("text", tick_label(t), x=left - 6, y=y(t) + 4, class_="tick", text_anchor="end")
    svg.el(
        "text",
        "SAR (%)",
        x=12,
        y=(top + height - bottom) / 2,
        class_="axis",
        text_anchor="middle",
        transform=f"rotate(-90 12 {(top + height - bottom) / 2})",
    )
    for g, (key, name) in enumerate(groups):
        x0 = left + g * group_w + (group_w - bar_w * n) / 2
        for r in data.runs:
            v = r.row.sar if key == "" else r.scenario_sar.get(key)
            ci = r.row.sar_ci if key == "" else r.scenario_sar_ci.get(key)
            d = _overall_delta(r) if key == "" else r.scenario_deltas.get(key)
            ns = not r.row.is_baseline and d is not None and spans_zero(d.delta_sar_ci)
            bx = x0 + r.index * bar_w
            if v is None:
                svg.el("text", "—", x=bx + bar_w / 2, y=y(0) - 4, class_="tick", text_anchor="middle")
                continue
            tip = f"{r.label} · {name}: SAR {_pct(v)}{_ci(ci)} (95% interval)\n{delta_text(d, r.row.is_baseline)}"
            svg.el(
                "rect",
                title=tip,
                x=round(bx + 1, 1),
                y=round(y(100 * v), 1),
                width=round(bar_w - 2, 1),
                height=round(y(0) - y(100 * v), 1),
                fill=r.color,
                class_="bar",
                data_run=r.index,
            )
            label_y = y(100 * v)
            if ci:
                _error_bar(svg, r, False, bx + bar_w / 2, y(100 * ci[0]), y(100 * ci[1]))
                label_y = min(label_y, y(100 * ci[1]))
            if bar_w >= 26:
                svg.el(
                    "text",
                    f"{100 * v:.0f}" + (" ~" if ns else ""),
                    title=tip,
                    x=round(bx + bar_w / 2, 1),
                    y=round(label_y - 4, 1),
                    class_="bar-value",
                    text_anchor="middle",
                )
        svg.el(
            "text",
            key or name,
            title=name,
            x=round(left + (g + 0.5) * group_w, 1),
            y=height - bottom + 18,
            class_="group",
            text_anchor="middle",
        )
    svg.el("line", x1=left, x2=width - 10, y1=y(0), y2=y(0), class_="baseline")
    return svg.render()


def _overall_delta(r: RunEntry) -> PairedDelta | None:
    row = r.row
    if row.delta_sar is None or row.delta_prompts is None or row.delta_safety is None or row.delta_behavioral is None:
        return None
    return PairedDelta(
        n=row.delta_prompts,
        delta_sar=row.delta_sar,
        delta_sar_ci=row.delta_sar_ci,
        p_value=row.p_value,
        delta_safety=row.delta_safety,
        delta_safety_ci=row.delta_safety_ci,
        p_value_safety=row.p_value_safety,
        delta_behavioral=row.delta_behavioral,
        delta_behavioral_ci=row.delta_behavioral_ci,
        p_value_behavioral=row.p_value_behavioral,
    )


def delta_table(data: ReportData) -> str:
    """ΔSAR against the baseline per scenario and overall, one row per other run: the difference, its paired
    95% interval and p-value; a difference whose interval spans 0 is marked ~ (within noise)."""
    others = [r for r in data.runs if not r.row.is_baseline]
    if not others:
        return ""
    groups = [(s.key, s.name) for s in data.scenarios] + [("", "overall")]
    head = "".join(f'<th title="{esc(name)}">{esc(key or name)}</th>' for key, name in groups)
    body = []
    for r in others:
        cells = []
        for key, _ in groups:
            d = _overall_delta(r) if key == "" else r.scenario_deltas.get(key)
            cells.append(_delta_cell(d))
        body.append(
            f'<tr><td class="left"><span class="swatch" style="background:{esc(r.color)}"></span>{esc(r.label)}</td>'
            + "".join(cells)
            + "</tr>"
        )
    return (
        f'<table class="headline deltas"><thead><tr><th class="left">run</th>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _delta_cell(d: PairedDelta | None) -> str:
    if d is None:
        return '<td class="muted" title="no prompt scored in both this run and the baseline">—</td>'
    ns = spans_zero(d.delta_sar_ci)
    sign = "pos" if d.delta_sar > 0 else "neg" if d.delta_sar < 0 else ""
    tip = delta_text(d) + (
        f"\nΔsafety {100 * d.delta_safety:+.1f} {interval_text(d.delta_safety_ci, signed=True)}, "
        f"p {p_text(d.p_value_safety)}\nΔbehavioral {100 * d.delta_behavioral:+.1f} "
        f"{interval_text(d.delta_behavioral_ci, signed=True)}, p {p_text(d.p_value_behavioral)}"
        if d.delta_sar_ci
        else ""
    )
    ci = f'<small class="ci">{esc(interval_text(d.delta_sar_ci, signed=True))}</small>' if d.delta_sar_ci else ""
    mark = ' <span class="ns-mark">~</span>' if ns else ""
    return (
        f'<td class="{"ns" if ns else ""}" title="{esc(tip)}"><span class="{sign}">{100 * d.delta_sar:+.2f}</span>'
        f"{mark}{ci}</td>"
    )


def heatmap_table(data: ReportData) -> str:
    """Spec × run table, cell = share of scored samples judged NO; spec text on hover; a click filters samples."""
    head = "".join(
        f'<th class="run-col" title="{esc(r.row.run_dir)}"><span class="swatch" '
        f'style="background:{esc(r.color)}"></span>{esc(r.label)}</th>'
        for r in data.runs
    )
    rows = [f'<table class="heatmap"><thead><tr><th>spec</th><th class="spec-text">text</th>{head}</tr></thead>']
    for s in data.scenarios:
        rows.append(
            f'<tbody><tr class="scenario-row"><th colspan="{2 + len(data.runs)}">{esc(s.name)}'
            f' <span class="muted">({esc(s.key)})</span></th></tr>'
        )
        for kind in ("safety", "behavioral"):
            for i, spec in enumerate(sp for sp in s.specs if sp.kind == kind):
                text = spec.text or "(spec text unavailable: the run's data has moved or changed)"
                cells = "".join(_heat_cell(r, s.key, spec.id, text) for r in data.runs)
                violated = any(getattr(r.spec_counts.get(s.key, {}).get(spec.id), "no", 0) for r in data.runs)
                classes = " ".join(c for c in ("kind-start" if i == 0 else "", "" if violated else "clean") if c)
                rows.append(
                    f'<tr class="{classes}"><td class="spec-id">{esc(spec.id)}</td><td class="spec-text" '
                    f'title="{esc(text)}">{esc(text)}</td>{cells}</tr>'
                )
        rows.append("</tbody>")
    rows.append("</table>")
    return "".join(rows)


def _heat_cell(r: RunEntry, scenario: str, spec_id: str, text: str) -> str:
    c = r.spec_counts.get(scenario, {}).get(spec_id)
    if c is None or not c.n:
        return '<td class="heat empty" title="no scored samples">—</td>'
    rate = c.rate or 0.0
    title = f"{r.label} · {scenario} {spec_id}: {c.no} of {c.n} judged NO ({100 * rate:.1f}%), {c.na} NA\n{text}"
    d = r.spec_deltas.get(scenario, {}).get(spec_id)
    sig = d is not None and d.p_value < SPEC_ALPHA
    if d is not None:
        title += (
            f"\nvs baseline over {d.n} prompts both scored: {100 * d.violation_rate:.1f}% against "
            f"{100 * d.baseline_rate:.1f}% ({100 * d.delta:+.1f} points; {d.worse} violated only here, {d.better} "
            f"only in the baseline; exact McNemar p {p_text(d.p_value)})" + (" *" if sig else " ~ within noise")
        )
    style = f"background:rgba(213,94,0,{0.06 + 0.94 * rate:.3f});" + ("color:#fff;" if rate > 0.55 else "")
    mark = ('<span class="sig-mark">*</span>' if sig else "") if d is not None else ""
    return (
        f'<td class="heat{" sig" if sig else ""}" style="{style}" title="{esc(title)}" data-run="{r.index}" '
        f'data-scenario="{esc(scenario)}" data-spec="{esc(spec_id)}" tabindex="0">{100 * rate:.0f}%{mark}</td>'
    )
