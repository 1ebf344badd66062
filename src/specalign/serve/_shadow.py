"""Shadow comparison: run a second method on a sampled share of requests after the reply has gone, judge
both answers, and keep the paired ΔSAR (shadow minus served) with its bootstrap interval.

The client never sees any of it: a sampled request is queued (dropped and counted when the queue is full),
and background workers run the shadow method, judge the two answers with the monitor's judge settings, and
append them to a pair of run directories (``OUT/shadow/SERVED`` and ``OUT/shadow/SHADOW``) under the same
sample ids, so ``specalign compare`` pairs them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sqlite3
import time
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from ..benchmark import Prompt, Scenario
from ..errors import ConfigError, ModelError, SpecalignError
from ..judge import JudgeOutcome
from ..methods import GenerationMethod, MethodOutput, create_method
from ..runs import SamplePoint, bootstrap_settings, now, paired_deltas, sample_id_of, spec_deltas
from ..scoring import verdict_letters
from ._config import ServeConfig
from ._gateway import Gateway
from ._monitor import Monitor, _Item
from ._tracing import NO_TRACING

log = logging.getLogger("specalign.serve")
SHADOW_DIR = "shadow"
RECENT = 10
CLIP = 400


def shadow_dirs(config: ServeConfig) -> list[Path]:
    """The run directories the shadow writes (the supervisor locks them): one per served method, one for
    the shadow method; none without an output folder."""
    sh = config.shadow
    if sh.method is None or not config.monitor.out:
        return []
    root = Path(config.monitor.out) / SHADOW_DIR
    return [root / n for n in _dir_methods(config)]


def _dir_methods(config: ServeConfig) -> list[str]:
    return [m for m in config.methods if m != config.shadow.method] + [str(config.shadow.method)]


class _Quiet:
    """Stands in for the recorder's gauges: the shadow keeps its own metrics."""

    def set(self, *a: Any, **kw: Any) -> None:
        pass

    def inc(self, *a: Any, **kw: Any) -> None:
        pass


class _Recorder(Monitor):
    """The monitor's judge and run directory writing, without its sampling, windows or metrics."""

    def _register_metrics(self) -> None:
        self.queue_depth = self.metrics_samples = self.metrics_verdicts = _Quiet()  # type: ignore[assignment]


@dataclass
class _Job:
    method: GenerationMethod
    scenario: Scenario
    prompt: Prompt
    params: dict[str, Any]
    served: MethodOutput
    elapsed_s: float


class PairStore:
    """Judged pairs, the latest ``size`` per served method, in SQLite: a file that a supervisor's workers
    share (WAL, writers take turns), or memory for one process."""

    def __init__(self, path: Path | None, size: int):
        self.size = size
        self.db = sqlite3.connect(str(path) if path else ":memory:", timeout=30, isolation_level=None)
        if path:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS pairs(id INTEGER PRIMARY KEY AUTOINCREMENT, served TEXT NOT NULL,"
            " item TEXT NOT NULL)"
        )

    def add(self, served: str, item: dict[str, Any]) -> None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("INSERT INTO pairs(served, item) VALUES (?, ?)", (served, json.dumps(item)))
            self.db.execute(
                "DELETE FROM pairs WHERE served = ? AND id <= (SELECT id FROM pairs WHERE served = ? "
                "ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (served, served, self.size),
            )

    def version(self) -> tuple[int, int]:
        return tuple(self.db.execute("SELECT COALESCE(MAX(id), 0), COUNT(*) FROM pairs").fetchone())

    def items(self) -> list[dict[str, Any]]:
        return [json.loads(x) for (x,) in self.db.execute("SELECT item FROM pairs ORDER BY id")]

    def close(self) -> None:
        self.db.close()


class Shadow:
    """Samples answered requests, runs the shadow method on them in the background, judges both answers."""

    def __init__(self, config: ServeConfig, gateway: Gateway, shared: Path | None = None):
        sh = self.config = config.shadow
        assert sh.method is not None
        self.gateway = gateway
        self.name = sh.method
        try:
            self.method = create_method(sh.method, config.method_params.get(sh.method))
        except SpecalignError as e:
            raise ConfigError(f"{e}", field="--shadow") from None
        if config.methods == [sh.method]:
            raise ConfigError(f"--shadow {sh.method} is the only served method: shadow another one", field="--shadow")
        self.method.check(gateway.model)
        served = {m: gateway.methods[m] for m in config.methods if m != sh.method}
        out = str(Path(config.monitor.out) / SHADOW_DIR) if config.monitor.out else None
        mon = config.monitor.model_copy(update={"out": out, "workers": 2 * sh.workers})  # two judgments a pair
        self.recorder = _Recorder(
            mon,
            gateway.scenarios,
            {**served, sh.method: self.method},
            gateway.model,
            gateway.metrics,
            config.models_config,
            shared=shared,
            tracing=NO_TRACING,
        )
        self.judge = self.recorder.judge
        self.alpha, self.na_policy = mon.alpha, mon.na_policy
        self.store = PairStore(shared / "shadow.sqlite" if shared else None, sh.window)
        self.queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=sh.queue)
        self._random = random.Random(sh.seed)
        self._workers: list[asyncio.Task] = []
        self._cache: tuple[tuple[int, int], list[dict[str, Any]]] | None = None
        self._register_metrics()

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        self._workers = [asyncio.create_task(self._work()) for _ in range(self.config.workers)]

    async def stop(self) -> None:
        """Finish waiting comparisons for up to the monitor's drain time; drop the rest (counted)."""
        try:
            await asyncio.wait_for(self.queue.join(), timeout=self.recorder.config.drain_s)
        except asyncio.TimeoutError:
            pass
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        while not self.queue.empty():
            job = self.queue.get_nowait()
            self.samples.inc(served=job.method.name, shadow=self.name, outcome="dropped")
        self.queue_depth.set(0)
        await self.recorder.stop()
        self.store.close()

    # -- the request path -----------------------------------------------------------------------
    def offer(
        self,
        method: GenerationMethod,
        scenario: Scenario,
        prompt: Prompt,
        params: dict[str, Any],
        out: MethodOutput,
        elapsed_s: float,
    ) -> bool:
        """Queue the request for a shadow run if it is sampled; True when queued. Never waits or raises."""
        try:
            if method.name == self.name or self._random.random() >= self.config.rate:
                return False
            try:
                self.queue.put_nowait(_Job(method, scenario, prompt, dict(params), out, elapsed_s))
            except asyncio.QueueFull:
                self.samples.inc(served=method.name, shadow=self.name, outcome="dropped")
                return False
            self.queue_depth.set(self.queue.qsize())
            return True
        except Exception:  # noqa: BLE001  (the shadow never fails a reply)
            log.exception("shadow: offering %s failed", prompt.id)
            return False

    # -- the background -------------------------------------------------------------------------
    async def _work(self) -> None:
        while True:
            job = await self.queue.get()
            self.queue_depth.set(self.queue.qsize())
            try:
                await self._compare(job)
            except asyncio.CancelledError:
                self.samples.inc(served=job.method.name, shadow=self.name, outcome="dropped")
                raise
            except Exception:  # noqa: BLE001  (one broken comparison never stops the shadow)
                log.exception("shadow: comparing %s failed", job.prompt.id)
                self.samples.inc(served=job.method.name, shadow=self.name, outcome="failed")
            finally:
                self.queue.task_done()

    async def _compare(self, job: _Job) -> None:
        g = self.gateway
        settings = g.settings.model_copy(update={"params": {**g.settings.params, **job.params}})
        from ..models import Model  # noqa: PLC0415

        t0 = time.perf_counter()
        try:
            shadow_out = await self.method.run(Model(settings, g.model.backend), job.scenario, job.prompt)
        except ModelError as e:
            log.warning("shadow: %s failed on %s: %s", self.name, job.prompt.id, e)
            self.samples.inc(served=job.method.name, shadow=self.name, outcome="failed")
            return
        shadow_s = time.perf_counter() - t0
        self.upstream_calls.inc(shadow_out.calls, shadow=self.name)
        served_item = _Item(job.method, job.scenario, job.prompt, job.served, job.elapsed_s)
        shadow_item = _Item(self.method, job.scenario, job.prompt, shadow_out, shadow_s)
        (a, a_s), (b, b_s) = await asyncio.gather(self._judge(served_item), self._judge(shadow_item))
        for item, (outcome, reason, elapsed, failed) in ((served_item, a), (shadow_item, b)):
            self.recorder._write(item, outcome, reason, elapsed, failed)
        if a_s is None or b_s is None:
            self.samples.inc(served=job.method.name, shadow=self.name, outcome="unscored")
            return
        pair = {
            "at": now(),
            "scenario": job.scenario.key,
            "sample_id": sample_id_of(job.scenario.key, job.prompt.id),
            "n_safety": len(job.scenario.safety_specs),
            "served": a_s,
            "shadow": b_s,
            "prompt": job.prompt.prompt,
            "served_answer": job.served.response,
            "shadow_answer": shadow_out.response,
        }
        try:
            self.store.add(job.method.name, {"method": job.method.name, **pair})
        except sqlite3.Error as e:  # the live figures are a view; the pair is in the run directories
            log.error("shadow: cannot update the shared pairs: %s", e)
        self.samples.inc(served=job.method.name, shadow=self.name, outcome="judged")

    async def _judge(self, item: _Item) -> tuple[tuple[JudgeOutcome | None, str | None, float, bool], Any]:
        """The judgment as the run directory records it, and (letters, safety, behavioral, sar) when scored."""
        t0 = time.perf_counter()
        try:
            outcome = await self.judge.judge(item.scenario, item.prompt, item.output.response)
        except ModelError as e:
            return (None, f"judge call failed: {e}", time.perf_counter() - t0, True), None
        record = (outcome, outcome.unscored_reason, time.perf_counter() - t0, outcome.call_failed)
        if outcome.status != "scored":
            return record, None
        from ..judge import score_verdicts  # noqa: PLC0415

        ids = item.scenario.spec_ids()
        letters = verdict_letters(outcome.verdicts[k].verdict for k in ids)
        s = score_verdicts(item.scenario, outcome.verdicts, alpha=self.alpha, na_policy=self.na_policy)
        return record, [letters, s.safety, s.behavioral, s.sar]

    # -- the live figures -----------------------------------------------------------------------
    def figures(self) -> list[dict[str, Any]]:
        """Per served method: pairs, ΔSAR (shadow − served) with its 95% paired bootstrap interval and
        p-value, per-spec violation rates, and the latest pairs whose verdicts differ."""
        version = self.store.version()
        if self._cache is not None and self._cache[0] == version:
            return self._cache[1]
        by_served: dict[str, list[dict[str, Any]]] = {}
        for item in self.store.items():
            by_served.setdefault(item["method"], []).append(item)
        out = []
        for served, items in sorted(by_served.items()):
            mine = {i["sample_id"]: _point(i, "served") for i in items}
            theirs = {i["sample_id"]: _point(i, "shadow") for i in items}
            overall, _ = paired_deltas(theirs, mine, bootstrap_settings())
            specs = spec_deltas(theirs, mine)
            differ = [i for i in items if i["served"][0] != i["shadow"][0]][-RECENT:][::-1]
            out.append({"served": served, "shadow": self.name, "delta": overall, "specs": specs, "differ": differ})
        self._cache = (version, out)
        return out

    def _register_metrics(self) -> None:
        r = self.gateway.metrics.registry
        self.samples = r.counter(
            "specalign_shadow_samples_total",
            "Requests sampled for the shadow method, by outcome: judged (both answers scored), unscored "
            "(a judgment failed), failed (the shadow call failed), dropped (queue full or shutdown).",
            ("served", "shadow", "outcome"),
        )
        self.upstream_calls = r.counter(
            "specalign_shadow_upstream_calls_total", "Upstream calls made by the shadow method.", ("shadow",)
        )
        self.queue_depth = r.gauge("specalign_shadow_queue_depth", "Requests waiting for the shadow method.")
        self.queue_depth.set(0)
        r.computed(
            "specalign_shadow_pairs",
            "Requests judged for both the served and the shadow method (the latest, up to the window).",
            lambda: [(_labels(f), f["delta"].n) for f in self.figures() if f["delta"]],
        )
        for name, what, pick in (
            ("specalign_shadow_delta_sar", "Paired ΔSAR, shadow minus served", lambda d: d.delta_sar),
            ("specalign_shadow_delta_sar_ci_low", "Lower end of ΔSAR's 95% paired bootstrap interval", _ci(0)),
            ("specalign_shadow_delta_sar_ci_high", "Upper end of ΔSAR's 95% paired bootstrap interval", _ci(1)),
        ):
            r.computed(name, what + ".", self._read(pick))
        r.computed(
            "specalign_shadow_spec_violation_delta",
            "Per spec, the shadow's violation rate minus the served method's, over the paired requests.",
            lambda: [
                ({**_labels(f), "scenario": scenario, "spec": spec}, d.delta)
                for f in self.figures()
                for scenario, per in f["specs"].items()
                for spec, d in per.items()
            ],
        )

    def _read(self, pick: Any) -> Any:
        def read() -> list[tuple[dict[str, str], float]]:
            return [(_labels(f), v) for f in self.figures() if f["delta"] and (v := pick(f["delta"])) is not None]

        return read

    def status_html(self) -> str:
        """The status page's section; every live text escaped."""
        figs = self.figures()
        dropped = self.gateway.metrics.total("specalign_shadow_samples_total", outcome="dropped")
        failed = self.gateway.metrics.total("specalign_shadow_samples_total", outcome="failed")
        parts = [
            f"<h2>Shadow comparison</h2><p class=muted>{escape(self.name)} runs on {100 * self.config.rate:.1f}% "
            f"of answered requests, after the reply; both answers judged by {escape(self.recorder.judge_settings.key)}; "
            f"ΔSAR is shadow minus served over the last {self.config.window} pairs, with a 95% paired bootstrap "
            f"interval; {int(self.gateway.metrics.total('specalign_shadow_queue_depth'))} waiting, "
            f"{int(dropped)} dropped, {int(failed)} failed</p>"
        ]
        if not any(f["delta"] for f in figs):
            return parts[0] + "<p>No request judged for both yet.</p>"
        rows = "".join(
            f"<tr><td>{escape(f['served'])}</td><td>{escape(f['shadow'])}</td><td class=n>{d.n}</td>"
            f"<td class=n>{_pts(d.delta_sar)}</td><td class=n>{_ci_text(d.delta_sar_ci)}</td>"
            f"<td class=n>{'–' if d.p_value is None else f'{d.p_value:.3f}'}</td></tr>"
            for f in figs
            if (d := f["delta"])
        )
        parts.append(
            "<table><thead><tr><th>served</th><th>shadow</th><th>pairs</th><th>ΔSAR</th><th>95% interval</th>"
            f"<th>p</th></tr></thead><tbody>{rows}</tbody></table>"
        )
        for f in figs:
            spec_rows = "".join(
                f"<tr><td>{escape(scenario)}</td><td>{escape(spec)}</td><td class=n>{_pct(d.baseline_rate)}</td>"
                f"<td class=n>{_pct(d.violation_rate)}</td><td class=n>{_pts(d.delta)}</td></tr>"
                for scenario, per in f["specs"].items()
                for spec, d in per.items()
                if d.worse or d.better or d.violation_rate or d.baseline_rate
            )
            if spec_rows:
                parts.append(
                    f"<h3>{escape(f['served'])} → {escape(f['shadow'])}: violations per spec</h3><table><thead><tr>"
                    "<th>scenario</th><th>spec</th><th>served</th><th>shadow</th><th>Δ</th></tr></thead>"
                    f"<tbody>{spec_rows}</tbody></table>"
                )
            if f["differ"]:
                diff_rows = "".join(
                    f"<tr><td>{escape(i['at'])}</td><td>{escape(i['scenario'])}</td>"
                    f"<td><pre>{escape(_clip(i['prompt']))}</pre></td><td>{escape(i['served'][0])}<pre>"
                    f"{escape(_clip(i['served_answer']))}</pre></td><td>{escape(i['shadow'][0])}<pre>"
                    f"{escape(_clip(i['shadow_answer']))}</pre></td></tr>"
                    for i in f["differ"]
                )
                parts.append(
                    f"<h3>{escape(f['served'])} → {escape(f['shadow'])}: latest disagreements</h3><table><thead>"
                    "<tr><th>time</th><th>scenario</th><th>request</th><th>served (verdicts, answer)</th>"
                    f"<th>shadow (verdicts, answer)</th></tr></thead><tbody>{diff_rows}</tbody></table>"
                )
        return "\n".join(parts)


def build_shadow(config: ServeConfig, gateway: Gateway, shared: Path | None = None) -> Shadow | None:
    """The shadow comparison ``config`` asks for (None without ``--shadow``); configuration errors here."""
    return Shadow(config, gateway, shared) if config.shadow.method else None


def _point(item: dict[str, Any], side: str) -> SamplePoint:
    letters, safety, behavioral, sar = item[side]
    return SamplePoint(item["scenario"], "unlabeled", safety, behavioral, sar, letters, item["n_safety"])


def _labels(f: dict[str, Any]) -> dict[str, str]:
    return {"served": f["served"], "shadow": f["shadow"]}


def _ci(end: int) -> Any:
    return lambda d: d.delta_sar_ci[end] if d.delta_sar_ci else None


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci_text(ci: list[float] | None) -> str:
    return "–" if not ci else f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"


def _clip(text: str) -> str:
    """At most CLIP characters, lone surrogates (an upstream may send them) replaced."""
    text = text if len(text) <= CLIP else text[:CLIP] + " …"
    return text.encode("utf-8", "replace").decode("utf-8")
