"""The report's plots as inline SVG (and the heat map as a table), drawn from :class:`ReportData`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from ._data import ReportData, RunEntry
from ._svg import Linear, Log10, Svg, esc, log_domain, percent_domain, tick_label

W, H = 480, 360
LEFT, RIGHT, TOP, BOTTOM = 56, 20, 16, 46
SAR_GUIDES = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def _run_title(r: RunEntry) -> str:
    row = r.row
    return (
        f"{r.label}\nmodel {row.model} · judge {row.judge}\nsafety {_pct(row.safety)} · behavioral "
        f"{_pct(row.behavioral)} · SAR {_pct(row.sar)}\ncompletion tokens/sample "
        f"{'—' if row.avg_completion_tokens is None else f'{row.avg_completion_tokens:,.0f}'}"
    )


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
    xs = percent_domain([100 * (r.row.safety or 0.0) for r in runs])  # (all set: runs are filtered above)
    ys = percent_domain([100 * (r.row.behavioral or 0.0) for r in runs])
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


def cost_plot(data: ReportData) -> str:
    """Average completion tokens per sample (log x) against SAR, one point per run."""
    runs = [r for r in data.runs if r.row.sar is not None and (r.row.avg_completion_tokens or 0) > 0]
    svg = Svg(W, H, "Completion tokens per sample against SAR, one point per run", "plot cost")
    if not runs:
        svg.el("text", "no run has both a SAR and token counts", x=W / 2, y=H / 2, class_="axis", text_anchor="middle")
        return svg.render()
    x = Log10(*log_domain([r.row.avg_completion_tokens for r in runs]), LEFT, W - RIGHT)  # type: ignore[misc]
    y = Linear(*percent_domain([100 * r.row.sar for r in runs]), H - BOTTOM, TOP)  # type: ignore[operator]
    _axes(svg, x, y, "average completion tokens per sample (log scale)", "SAR (%)")
    _points(svg, [(r, x(r.row.avg_completion_tokens), y(100 * r.row.sar)) for r in runs])  # type: ignore[arg-type,operator]
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
            bx = x0 + r.index * bar_w
            if v is None:
                svg.el("text", "—", x=bx + bar_w / 2, y=y(0) - 4, class_="tick", text_anchor="middle")
                continue
            svg.el(
                "rect",
                title=f"{r.label} · {name}: SAR {_pct(v)}",
                x=round(bx + 1, 1),
                y=round(y(100 * v), 1),
                width=round(bar_w - 2, 1),
                height=round(y(0) - y(100 * v), 1),
                fill=r.color,
                class_="bar",
                data_run=r.index,
            )
            if bar_w >= 26:
                svg.el(
                    "text",
                    f"{100 * v:.0f}",
                    x=round(bx + bar_w / 2, 1),
                    y=round(y(100 * v) - 4, 1),
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
    style = f"background:rgba(213,94,0,{0.06 + 0.94 * rate:.3f});" + ("color:#fff;" if rate > 0.55 else "")
    return (
        f'<td class="heat" style="{style}" title="{esc(title)}" data-run="{r.index}" '
        f'data-scenario="{esc(scenario)}" data-spec="{esc(spec_id)}" tabindex="0">{100 * rate:.0f}%</td>'
    )
