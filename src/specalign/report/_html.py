"""The report as one self-contained HTML file: styles, script, plots and data inline, nothing fetched."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import Any

from ..errors import RunDirError
from ..runs import check_output, interval_text, p_text, spans_zero, usd
from ._agreement import agreement_section, browser_agreement
from ._data import ReportData, RunEntry, SampleRun
from ._plots import SPEC_ALPHA, cost_plot, delta_table, frontier_plot, heatmap_table, priced_runs, scenario_plot
from ._svg import esc

CHUNK = 100
STATUS_CODES = {"scored": 0, "unscored": 1, "generation_error": 2, "pending": 3}


def embed_json(obj: Any) -> str:
    """JSON that can sit inside ``<script type="application/json">``: no ``<``, ``>`` or ``&`` survive
    unescaped, so no text in it can close the element or open a comment."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    for ch, rep in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, rep)
    return text


def browser_index(data: ReportData) -> dict[str, Any]:
    """What the sample browser filters on, parsed at load: small per sample and run."""
    scen_index = {s.key: i for i, s in enumerate(data.scenarios)}
    spec_index = {s.key: {spec.id: k for k, spec in enumerate(s.specs)} for s in data.scenarios}
    cells = []
    for r in data.runs:
        cells.append([_cell(s.runs.get(r.index), spec_index[s.scenario]) for s in data.samples])
    return {
        "runs": [{"label": r.label, "color": r.color} for r in data.runs],
        "scenarios": [
            {"key": s.key, "name": s.name, "specs": [[p.id, p.kind, p.text] for p in s.specs]} for s in data.scenarios
        ],
        "samples": [[scen_index[s.scenario], s.prompt_id, s.label] for s in data.samples],
        "cells": cells,
        "chunk": CHUNK,
        "pairs": sum(len(s.runs) for s in data.samples),
        "agreement": browser_agreement(data),
    }


def _cell(run: SampleRun | None, specs: dict[str, int]) -> list[Any] | None:
    if run is None:
        return None
    sar = None if run.sar is None else round(1000 * run.sar)
    safe = None if run.safety is None else int(run.safety)
    return [STATUS_CODES[run.status], sar, safe, sorted(specs[k] for k in run.violated if k in specs)]


def detail_chunks(data: ReportData) -> list[list[dict[str, Any]]]:
    """Texts per sample (prompt, and per run: thought, response, verdicts in spec order), CHUNK samples a piece."""
    order = {s.key: [spec.id for spec in s.specs] for s in data.scenarios}
    out = []
    for start in range(0, len(data.samples), CHUNK):
        piece = []
        for s in data.samples[start : start + CHUNK]:
            runs = {str(i): _run_detail(run, order[s.scenario]) for i, run in s.runs.items()}
            piece.append({"p": s.prompt, "o": s.original_prompt, "r": runs})
        out.append(piece)
    return out


def _run_detail(run: SampleRun, spec_order: list[str]) -> dict[str, Any]:
    d: dict[str, Any] = {"t": run.thought, "a": run.response, "k": run.completion_tokens, "c": run.calls}
    if run.prompt_sent:
        d["s"] = run.prompt_sent
    if run.reason:
        d["e"] = run.reason
    if run.flags:
        d["f"] = run.flags
    if run.verdicts:
        d["v"] = [list(run.verdicts.get(k, ("NA", "(no verdict recorded)"))) for k in spec_order]
    return d


def _asset(name: str) -> str:
    return files("specalign.report").joinpath("assets", name).read_text(encoding="utf-8")


def render_report(data: ReportData) -> str:
    """The whole page. A Content-Security-Policy allows only the page's own script (by hash), so even
    text that slipped past escaping could neither run nor load anything."""
    script = _asset("report.js")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    csp = (
        f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; img-src data:; "
        "base-uri 'none'; form-action 'none'"
    )
    agreement_toc = '<a href="#agreement">Agreement</a>' if data.agreement else ""
    chunks = "".join(
        f'<script type="application/json" id="sa-chunk-{k}">{embed_json(c)}</script>'
        for k, c in enumerate(detail_chunks(data))
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="specalign {esc(data.specalign_version)}">
<title>{esc(data.title)}</title>
<style>{_asset("report.css")}</style>
</head><body><main>
<h1>{esc(data.title)}</h1>
<p class="lead">{len(data.runs)} run{"s" if len(data.runs) != 1 else ""} · {len(data.samples):,} samples ·
{sum(len(s.specs) for s in data.scenarios)} specs in {len(data.scenarios)} scenarios · {esc(data.alpha_note)} ·
generated {esc(data.created_at)}</p>
<nav class="toc"><a href="#scores">Scores</a><a href="#plots">Plots</a><a href="#specs">Specs</a>{agreement_toc}<a href="#samples">Samples</a></nav>
{_headline(data)}
{_plots(data)}
<h2 id="specs">Which specs fail</h2>
<p class="muted">Share of scored samples the judge found violating each spec (NO), per run. Hover for the spec's
text and the counts; click a cell to see those samples. <span class="sig-mark">*</span> marks a rate that differs
from the baseline's: an exact McNemar test over the prompts both runs scored (those violated in only one of the
two runs) gives p &lt; {SPEC_ALPHA:g}. A rate without it is within noise of the baseline's; hover for the counts
and p.</p>
<p><label><input type="checkbox" id="f-heat-violated"> only specs that some run violates</label></p>
<div class="scroll">{heatmap_table(data)}</div>
{agreement_section(data)}
{_browser()}
{_footer(data)}
</main>
<script type="application/json" id="sa-index">{embed_json(browser_index(data))}</script>
{chunks}
<script>{script}</script>
</body></html>
"""


def _legend(data: ReportData) -> str:
    return (
        '<div class="legend">'
        + "".join(
            f'<span><span class="swatch" style="background:{esc(r.color)}"></span>{esc(r.label)}</span>'
            for r in data.runs
        )
        + "</div>"
    )


def _plots(data: ReportData) -> str:
    alpha = data.runs[0].row.alpha
    return f"""<h2 id="plots">Trade-offs</h2>{_legend(data)}
<div class="plots">
<figure>{frontier_plot(data)}<figcaption>Safety against helpfulness, one point per run: up and to the right is better.
Dashed curves are guides where safety × ({alpha:g} + {1 - alpha:g} × behavioral) is constant, which is the SAR of a run
whose answers are all equally helpful.</figcaption></figure>
<figure>{cost_plot(data)}<figcaption>What a method's SAR costs: average completion tokens per sample (log scale) against
SAR. Tokens count every call the method makes to the model under test, not the judge.</figcaption></figure>{_usd_plot(data)}
</div>
<figure style="margin-top:16px">{scenario_plot(data)}<figcaption>SAR per scenario and overall (the mean of scenarios,
as the paper reports it). Whiskers here and in the plots above are 95% bootstrap intervals over prompts. A value
marked ~ differs from the baseline's by less than its noise: the paired interval of its ΔSAR spans 0. Hover a bar
for ΔSAR, its interval and p-value.</figcaption></figure>"""


def _usd_plot(data: ReportData) -> str:
    """The cost plot in dollars, when every run with a SAR has a priced cost."""
    scored = [r for r in data.runs if r.row.sar is not None]
    if not scored or len(priced_runs(data)) != len(scored):
        return ""
    return f"""
<figure>{cost_plot(data, "usd")}<figcaption>The same trade-off in dollars: USD per sample (log scale) for every call
of the run, the model under test, the judge and candidate scoring, batched calls at the batch price, at the prices
the run recorded.</figcaption></figure>"""


HEAD_COLS = ["safety", "behavioral", "sar"]


def _headline(data: ReportData) -> str:
    pending = any(r.row.pending for r in data.runs)
    best = {
        k: max((getattr(r.row, k) for r in data.runs if getattr(r.row, k) is not None), default=None)
        for k in ("safety", "behavioral", "sar")
    }
    head = (
        '<tr><th class="left" rowspan="2">run</th><th class="left" rowspan="2">model</th>'
        '<th class="left" rowspan="2">judge</th>'
        '<th colspan="3">safety %</th><th colspan="3">behavioral %</th><th colspan="3">SAR %</th>'
        '<th rowspan="2">ΔSAR</th><th rowspan="2">tokens<br>/ sample</th><th rowspan="2">calls<br>/ sample</th>'
        '<th rowspan="2">cost<br>USD</th>'
        '<th rowspan="2">scored</th><th rowspan="2">unscored</th>'
        + ('<th rowspan="2">pending</th>' if pending else "")
        + '<th class="left" rowspan="2">α · NA policy</th></tr><tr>'
        + "<th>full</th><th>unsafe</th><th>safe</th>" * 3
        + "</tr>"
    )
    body = "".join(_headline_row(r, best, pending) for r in data.runs)
    deltas = delta_table(data)
    deltas_html = (
        f"""<h3 id="deltas">ΔSAR against {esc(_baseline_label(data))}, by scenario</h3>
<div class="scroll">{deltas}</div>
<p class="muted">Each run's SAR minus the baseline's over the prompts both scored, in points, with its 95% paired
bootstrap interval below; <span class="ns-mark">~</span> marks a difference whose interval spans 0: within noise.
Hover for the p-value and for Δsafety and Δbehavioral.</p>"""
        if deltas
        else ""
    )
    notes = "".join(
        f"<li>{esc(r.label)}: {n} × {esc(reason)}</li>" for r in data.runs for reason, n in r.unscored_reasons.items()
    )
    notes_html = f'<h3>Why samples are unscored</h3><ul class="notes">{notes}</ul>' if notes else ""
    return f"""<h2 id="scores">Scores</h2>
{_notices(data)}<div class="scroll"><table class="headline"><thead>{head}</thead><tbody>{body}</tbody></table></div>
<p class="muted">Scores are means over scenarios (as in the paper), each with its 95% interval below it; hover a score
for its standard error and sample count. ΔSAR is against {esc(_baseline_label(data))}{esc(_delta_scope(data))}, with
its paired interval. {esc(_interval_scope(data))}Tokens are average completion tokens of the model under test; cost is
what every call of the run cost in US dollars (* some model is unpriced and counted as $0; hover for which).</p>
{deltas_html}
{notes_html}"""


def _baseline_label(data: ReportData) -> str:
    base = next((r for r in data.runs if r.row.is_baseline), None)
    return base.label if base else "the baseline run"


def _interval_scope(data: ReportData) -> str:
    return f"{data.interval_note[0].upper()}{data.interval_note[1:]}. " if data.interval_note else ""


def _delta_scope(data: ReportData) -> str:
    return f" ({data.delta_note})" if data.delta_note else ""


def _notices(data: ReportData) -> str:
    """What makes the runs' scores not comparable as they stand, above the table."""
    if not data.notices:
        return ""
    items = "".join(f"<li>{esc(n)}</li>" for n in data.notices)
    return f'<div class="notice" role="note"><strong>Read with care</strong><ul>{items}</ul></div>\n'


def _headline_row(r: RunEntry, best: dict[str, float | None], pending: bool) -> str:
    row = r.row
    cells = []
    for name in HEAD_COLS:
        for subset in ("full", "unsafe", "safe"):
            m = r.overall[subset]
            v, se, ci = getattr(m, name), getattr(m, f"{name}_se"), getattr(m, f"{name}_ci")
            tip = f"{name} {subset}: " + (
                "no scored samples"
                if v is None
                else f"{100 * v:.2f}%"
                + (f", 95% interval {interval_text(ci)}" if ci else "")
                + (f" ± {100 * se:.2f} (SE)" if se else "")
                + f", {m.n_scored} scored"
            )
            bold = ' class="best"' if subset == "full" and v is not None and v == best[name] else ""
            shown = "—" if v is None else f"{100 * v:.2f}" + (f'<small class="ci">{_range(ci)}</small>' if ci else "")
            cells.append(f'<td{bold} title="{esc(tip)}">{shown}</td>')
    delta = row.delta_sar
    ns = not row.is_baseline and spans_zero(row.delta_sar_ci)
    delta_tip = (
        "the baseline"
        if row.is_baseline
        else f"ΔSAR 95% paired interval {interval_text(row.delta_sar_ci, signed=True)}, p {p_text(row.p_value)}"
        + (": the interval spans 0, within noise" if ns else "")
        if row.delta_sar_ci
        else ""
    )
    delta_html = (
        "—"
        if delta is None
        else f'<span class="{"pos" if delta > 0 else "neg" if delta < 0 else ""}">{100 * delta:+.2f}</span>'
        + (' <span class="ns-mark">~</span>' if ns else "")
        + (
            f'<small class="ci">{esc(interval_text(row.delta_sar_ci, signed=True))}</small>'
            if row.delta_sar_ci and not row.is_baseline
            else ""
        )
    )
    tokens = "—" if row.avg_completion_tokens is None else f"{row.avg_completion_tokens:,.0f}"
    calls = "—" if row.avg_calls is None else f"{row.avg_calls:.1f}"
    cost_tip = (
        "no record holds a cost"
        if row.cost is None
        else f"{usd(row.cost)} for every call (model, judge, candidate scoring), {usd(row.cost_per_sample)} a sample"
        + (f"; cache hits saved {usd(row.cost_saved)}" if row.cost_saved else "")
        + (f"; unpriced, counted as $0: {', '.join(row.unpriced_models)}" if row.unpriced_models else "")
    )
    cost = usd(row.cost) + ("*" if row.cost is not None and row.unpriced_models else "")
    return (
        f'<tr><td class="left" title="{esc(row.run_dir)}"><span class="swatch" style="background:{esc(r.color)}">'
        f"</span>{esc(r.label)}</td>{_model_cell(row.model)}{_model_cell(row.judge)}"
        + "".join(cells)
        + f'<td class="{"ns" if ns else ""}" title="{esc(delta_tip)}">{delta_html}</td><td>{tokens}</td>'
        + f'<td>{calls}</td><td title="{esc(cost_tip)}">{esc(cost)}</td><td>{row.scored}</td>'
        f"<td>{row.unscored}</td>"
        + (f"<td>{row.pending}</td>" if pending else "")
        + f'<td class="left">{row.alpha:g} · {esc(row.na_policy)}</td></tr>'
    )


def _range(ci: list[float]) -> str:
    """An interval under a score: ``61.2–78.4``."""
    return f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}"


def short_model(key: str) -> str:
    """A model key without its server address: ``openai:gpt-4.1@https://...`` → ``openai:gpt-4.1``."""
    return key.split("@", 1)[0] if "@" in key else key


def _model_cell(key: str) -> str:
    return f'<td class="left" title="{esc(key)}">{esc(short_model(key))}</td>'


def _browser() -> str:
    return """<h2 id="samples">Samples</h2>
<p class="muted">One row per answer (sample × run). Click a row for the prompt, the thought, the response and every
spec's verdict with the judge's reason.</p>
<div class="filters">
<select id="f-scenario" aria-label="scenario"><option value="">all scenarios</option></select>
<select id="f-label" aria-label="label"><option value="">all prompts</option>
<option value="unsafe">unsafe prompts</option><option value="safe">safe prompts</option>
<option value="unlabeled">unlabeled (live) prompts</option></select>
<select id="f-run" aria-label="run"><option value="">all runs</option></select>
<select id="f-status" aria-label="status"><option value="">any status</option><option value="0">scored</option>
<option value="1">unscored</option><option value="2">generation error</option><option value="3">pending</option></select>
<label><input type="checkbox" id="f-unsafe"> unsafe responses only</label>
<select id="f-spec" aria-label="violated spec"></select>
<select id="f-sort" aria-label="order"><option value="order">data order</option><option value="sar-asc">lowest SAR first</option>
<option value="sar-desc">highest SAR first</option></select>
<input type="search" id="f-text" placeholder="search prompts, answers, reasons" aria-label="search">
<span id="f-sample" class="chip" hidden>one sample: <code id="f-sample-id"></code>
<button id="f-sample-clear" type="button">show all</button></span>
</div>
<div class="pager"><button id="sa-prev" type="button">← previous</button><button id="sa-next" type="button">next →</button>
<span id="sa-count"></span></div>
<div class="scroll"><table class="samples"><thead><tr><th>scenario</th><th>prompt</th><th>label</th><th>run</th>
<th>status</th><th>SAR %</th><th>violated</th><th>prompt text</th></tr></thead><tbody id="sa-rows"></tbody></table></div>
<p id="sa-empty" class="muted" hidden>No answers match these filters.</p>"""


def _footer(data: ReportData) -> str:
    items = "".join(
        f'<li><span class="swatch" style="background:{esc(r.color)}"></span>{esc(r.label)}: '
        f"<code>{esc(r.row.run_dir)}</code> · data {esc(r.data_source)}</li>"
        for r in data.runs
    )
    return (
        f'<footer><h3>Runs</h3><ul class="notes">{items}</ul>'
        f"<p>Made by specalign {esc(data.specalign_version)}. Model and judge text is shown as text.</p></footer>"
    )


def write_report(data: ReportData, path: str | Path) -> int:
    """Write the report, whole or not at all (never over a file of the runs it shows); returns its size in bytes.

    A regular file is replaced through a private temporary file; an existing special file (``/dev/stdout``,
    a pipe) is written to as it is, never replaced."""
    check_output(path, [r.row.run_dir for r in data.runs])
    target = Path(path)
    page = render_report(data).encode("utf-8")
    tmp: str | None = None
    try:
        if target.exists() and not target.is_file():
            with open(target, "wb") as f:
                f.write(page)
            return len(page)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with open(fd, "wb") as f:
            f.write(page)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except OSError as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise RunDirError(f"cannot write {target}: {e.strerror or e}") from None
    return len(page)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
