"""The status page: traffic, per-spec violation rates over the window, recent violations. No script;
every text (spec texts, prompts, answers) is escaped."""

from __future__ import annotations

import os
import time
from html import escape
from typing import Any

#: no script, nothing fetched; inline style only
CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
CLIP = 400

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5rem;color:#1b1b1b;max-width:72rem}
h1{font-size:1.3rem}h2{font-size:1.1rem;margin-top:1.6rem}table{border-collapse:collapse;margin:.4rem 0}
th,td{border-bottom:1px solid #ddd;padding:.25rem .6rem;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}.bar{display:inline-block;height:.7rem;background:#D55E00}
.muted{color:#666}pre{white-space:pre-wrap;word-break:break-word;margin:.2rem 0;max-width:60rem}
"""


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _clip(text: str) -> str:
    return text if len(text) <= CLIP else text[:CLIP] + " …"


def render_status(
    info: dict[str, Any],
    traffic: list[dict[str, Any]],
    tables: list[dict[str, Any]] | None,
    recent: list[Any],
    monitor: dict[str, Any] | None,
    refresh_s: int = 10,
    extra: str = "",
) -> str:
    """The whole page. ``tables`` and ``recent`` come from the monitor (None when monitoring is off);
    ``extra``: more sections, as escaped HTML (the shadow comparison)."""
    up = int(time.time() - info["started"])
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f'<meta http-equiv="refresh" content="{int(refresh_s)}">',
        f"<title>specalign gateway · {escape(info['model'])}</title><style>{STYLE}</style></head><body>",
        f"<h1>specalign gateway · {escape(info['model'])}</h1>",
        f"<p class=muted>upstream {escape(info['upstream'])} · methods {escape(', '.join(info['methods']))} · "
        f"scenarios {escape(', '.join(info['scenarios']))} · up {up // 3600}h {up % 3600 // 60}m · "
        f"{info['in_flight']} in flight · answered by worker pid {os.getpid()}</p>",
        "<h2>Traffic</h2>",
        _traffic(traffic),
    ]
    if info.get("enforce"):
        parts.append(_enforce(info["enforce"]))
    if tables is None or monitor is None:
        parts.append(
            "<h2>Spec monitoring</h2><p>Off. Start the gateway with <code>--monitor RATE</code> to judge a "
            "share of live answers against the specs.</p>"
        )
    else:
        parts.append(
            f"<h2>Spec violations</h2><p class=muted>judging {_pct(monitor['rate'])} of answers with "
            f"{escape(monitor['judge'])}; window: the last {monitor['window']} judged answers per method and "
            f"scenario; {monitor['queue']} waiting, {monitor['dropped']} dropped (queue full)</p>"
        )
        parts += [_overview(tables)] + [_spec_table(t) for t in tables] if tables else ["<p>No answer judged yet.</p>"]
        parts.append("<h2>Recent violations</h2>")
        parts.append(_recent(recent) if recent else "<p>None yet.</p>")
    parts.append(extra)
    parts.append("</body></html>")
    return "\n".join(parts)


def _traffic(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>No request yet.</p>"
    body = "".join(
        f"<tr><td>{escape(r['method'])}</td><td>{escape(r['scenario'])}</td><td class=n>{r['ok']}</td>"
        f"<td class=n>{r['errors']}</td><td class=n>{r['completion_tokens']}</td></tr>"
        for r in rows
    )
    return (
        "<table><thead><tr><th>method</th><th>scenario</th><th>answered</th><th>errors</th>"
        f"<th>completion tokens</th></tr></thead><tbody>{body}</tbody></table>"
    )


def _enforce(e: dict[str, Any]) -> str:
    checks = " · ".join(f"{k} {v}" for k, v in e["checks"].items())
    actions = " · ".join(f"{k} {v}" for k, v in e["actions"].items())
    mean = "–" if e["mean_ms"] is None else f"{e['mean_ms']:.1f} ms"
    rows = "".join(
        f"<tr><td>{escape(sc)}</td><td>{escape(spec)}</td><td class=n>{n}</td></tr>"
        for (sc, spec), n in e["violations"]
    )
    table = (
        f"<table><thead><tr><th>scenario</th><th>spec</th><th>violations</th></tr></thead><tbody>{rows}</tbody></table>"
        if rows
        else "<p>No violation caught yet.</p>"
    )
    return (
        f"<h2>Enforcement</h2><p class=muted>every answer judged on the safety specs by {escape(e['judge'])}; "
        f"on a violation: {escape(e['action'])} (regenerations: {e['attempts']}); judge failure: "
        f"{escape(e['on_error'])}; mean added latency {mean}</p>"
        f"<p>checks: {checks}<br>actions: {actions}</p>{table}"
    )


def _overview(tables: list[dict[str, Any]]) -> str:
    def worst(t: dict[str, Any]) -> str:
        top = t["specs"][0] if t["specs"] and t["specs"][0]["violations"] else None
        return "–" if top is None else f"{escape(top['id'])} ({_pct(top['rate'])})"

    rows = "".join(
        f"<tr><td>{escape(t['method'])}</td><td>{escape(t['scenario'])}</td><td class=n>{t['scored']}</td>"
        f"<td class=n>{_pct(t['sar'])}</td><td class=n>{_pct(t['violating'] / t['scored'] if t['scored'] else None)}</td>"
        f"<td>{worst(t)}</td></tr>"
        for t in tables
    )
    return (
        "<table><thead><tr><th>method</th><th>scenario</th><th>scored in window</th><th>SAR</th>"
        f"<th>answers breaking a spec</th><th>most broken spec</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _spec_table(t: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{escape(s['id'])}</td><td class=n>{s['violations']}</td><td class=n>{_pct(s['rate'])}</td>"
        f'<td><span class=bar style="width:{0 if s["rate"] is None else round(100 * s["rate"])}px"></span></td>'
        f"<td>{escape(s['text'])}</td></tr>"
        for s in t["specs"]
    )
    return (
        f"<h3>{escape(t['name'])} ({escape(t['scenario'])}) · {escape(t['method'])}</h3>"
        f"<p class=muted>{t['scored']} scored of {t['judged']} judged in the window · SAR {_pct(t['sar'])}</p>"
        "<table><thead><tr><th>spec</th><th>violations</th><th>rate</th><th></th><th>text (most violated first)</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _recent(items: list[Any]) -> str:
    rows = "".join(
        f"<tr><td>{escape(v.at)}</td><td>{escape(v.method)}</td><td>{escape(v.scenario)}</td>"
        f"<td>{escape(', '.join(v.specs))}</td><td><pre>{escape(_clip(v.prompt))}</pre></td>"
        f"<td><pre>{escape(_clip(v.response))}</pre></td></tr>"
        for v in items
    )
    return (
        "<table><thead><tr><th>time</th><th>method</th><th>scenario</th><th>broke</th><th>request</th>"
        f"<th>answer</th></tr></thead><tbody>{rows}</tbody></table>"
    )
