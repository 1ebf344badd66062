"""Live monitoring: judge a sampled share of answers in the background, keep per-spec violation
rates over a sliding window, and append every judged sample to a run directory."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sqlite3
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..benchmark import SPEC_KINDS, Benchmark, Prompt, Scenario, spec_id
from ..errors import ConfigError, ModelError, RunDirError
from ..judge import Judge, JudgeOutcome, load_judge_template, score_verdicts
from ..methods import GenerationMethod, MethodOutput
from ..models import Model, create_model, load_models_config, parse_model_spec
from ..runs import (
    GenerationRecord,
    JudgmentRecord,
    Manifest,
    RecordWriter,
    RunDir,
    Session,
    build_manifest,
    now,
    sample_id_of,
)
from ..scoring import SpecViolations, verdict_letters
from ._config import MonitorConfig
from ._metrics import GatewayMetrics
from ._tracing import NO_TRACING, Tracing

log = logging.getLogger("specalign.serve")
SCENARIOS_DIR = "scenarios"
RECENT = 20


@dataclass
class _Item:
    """One answer waiting to be judged."""

    method: GenerationMethod
    scenario: Scenario
    prompt: Prompt
    output: MethodOutput
    elapsed_s: float
    traced: Any = None  # the request's span, for the judgment's link (Tracing.capture)


@dataclass
class Violation:
    """A recent judged answer that broke at least one spec, for the status page."""

    at: str
    method: str
    scenario: str
    sample_id: str
    specs: list[str]
    prompt: str
    response: str


@dataclass
class Window:
    """The last N judged answers of one (method, scenario): their verdicts, or None when unscored."""

    size: int
    items: deque = field(default_factory=deque)

    def add(self, letters: str | None, sar: float | None) -> None:
        self.items.append((letters, sar))
        while len(self.items) > self.size:
            self.items.popleft()

    def scored(self) -> list[tuple[str, float]]:
        return [(v, s) for v, s in self.items if v is not None]


class MemoryWindows:
    """The windows and recent violations of one gateway process, in memory."""

    def __init__(self, size: int):
        self.size = size
        self._windows: dict[tuple[str, str], Window] = {}
        self._recent: deque[Violation] = deque(maxlen=RECENT)

    def add(self, method: str, scenario: str, letters: str | None, sar: float | None, broke: Violation | None) -> None:
        w = self._windows.get((method, scenario))
        if w is None:
            w = self._windows[(method, scenario)] = Window(self.size)
        w.add(letters, sar)
        if broke is not None:
            self._recent.appendleft(broke)

    def windows(self) -> dict[tuple[str, str], Window]:
        return dict(sorted(self._windows.items()))

    def recent(self) -> list[Violation]:
        return list(self._recent)

    def close(self) -> None:
        pass


class SharedWindows(MemoryWindows):
    """The windows of all of a supervisor's workers, in one SQLite file (WAL: readers never wait for the
    writer; writers take turns). Every worker appends the answers it judged and reads everyone's, so the
    status page and the window gauges agree whichever worker answers."""

    def __init__(self, path: Path, size: int):
        super().__init__(size)
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # a window is a view, not a record: the run directory is
        self.db.executescript(
            "CREATE TABLE IF NOT EXISTS judged(id INTEGER PRIMARY KEY AUTOINCREMENT, method TEXT NOT NULL,"
            " scenario TEXT NOT NULL, letters TEXT, sar REAL);"
            "CREATE INDEX IF NOT EXISTS judged_by_window ON judged(method, scenario, id);"
            "CREATE TABLE IF NOT EXISTS broke(id INTEGER PRIMARY KEY AUTOINCREMENT, item TEXT NOT NULL);"
        )

    def add(self, method: str, scenario: str, letters: str | None, sar: float | None, broke: Violation | None) -> None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                "INSERT INTO judged(method, scenario, letters, sar) VALUES (?, ?, ?, ?)",
                (method, scenario, letters, sar),
            )
            self.db.execute(
                "DELETE FROM judged WHERE method = ? AND scenario = ? AND id <= (SELECT id FROM judged WHERE "
                "method = ? AND scenario = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (method, scenario, method, scenario, self.size),
            )
            if broke is not None:
                self.db.execute("INSERT INTO broke(item) VALUES (?)", (json.dumps(asdict(broke)),))
                self.db.execute(
                    "DELETE FROM broke WHERE id <= (SELECT id FROM broke ORDER BY id DESC LIMIT 1 OFFSET ?)", (RECENT,)
                )

    def windows(self) -> dict[tuple[str, str], Window]:
        out: dict[tuple[str, str], Window] = {}
        for method, scenario, letters, sar in self.db.execute(
            "SELECT method, scenario, letters, sar FROM judged ORDER BY method, scenario, id"
        ):
            w = out.get((method, scenario))
            if w is None:
                w = out[(method, scenario)] = Window(self.size)
            w.add(letters, sar)
        return out

    def recent(self) -> list[Violation]:
        rows = self.db.execute("SELECT item FROM broke ORDER BY id DESC LIMIT ?", (RECENT,)).fetchall()
        return [Violation(**json.loads(item)) for (item,) in rows]

    def close(self) -> None:
        self.db.close()


class Monitor:
    """Samples answers, judges them with a bounded queue and worker pool, never delaying a reply."""

    def __init__(
        self,
        config: MonitorConfig,
        scenarios: dict[str, Scenario],
        methods: dict[str, GenerationMethod],
        upstream: Model,
        metrics: GatewayMetrics,
        models_config: list[str] | None,
        shared: Path | None = None,
        tracing: Tracing = NO_TRACING,
    ):
        """``shared``: the folder of a supervisor whose workers share windows (a SQLite file there) and run
        directories (the supervisor holds their locks; each record is appended under the append lock)."""
        self.config = config
        self.shared = shared
        self.scenarios = scenarios
        self.methods = methods
        self.upstream = upstream
        self.metrics = metrics
        if "," in config.judge:
            raise ConfigError(
                "the gateway's monitor judges with one judge: a panel (A,B,C) is for `specalign run`", field="--judge"
            )
        judge = parse_model_spec(config.judge, load_models_config(models_config))
        self.judge_settings = judge.model_copy(update={"calls_in_flight": config.workers})  # one call per worker
        # keys show URLs redacted: two specs that differ only in credentials or query values share a key
        same = (self.judge_settings.key, self.judge_settings.base_urls) == (
            upstream.settings.key,
            upstream.settings.base_urls,
        )
        judge_model = Model(self.judge_settings, upstream.backend) if same else create_model(self.judge_settings, None)
        template = load_judge_template(config.judge_template) if config.judge_template else None
        self.judge = Judge(judge_model, config.judge_mode, template=template)
        self.tracing = tracing
        judge_model.observer = tracing.observer
        self.queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=config.queue)
        self.store = SharedWindows(shared / "windows.sqlite", config.window) if shared else MemoryWindows(config.window)
        self._random = random.Random(config.seed)
        self._workers: list[asyncio.Task] = []
        self._writers: dict[str, tuple[RecordWriter, RecordWriter]] = {}
        self._runs: dict[str, tuple[RunDir, Manifest]] = {}
        self._session: dict[str, int] = {}  # per method: the index of this process's session in the manifest
        self._done: dict[str, int] = {}
        self._t0 = time.perf_counter()
        self._register_metrics()
        if config.out:
            self._prepare_run_dirs(Path(config.out))

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        self._workers = [asyncio.create_task(self._work()) for _ in range(self.config.workers)]

    async def stop(self) -> None:
        """Finish waiting judgments for up to ``drain_s``; whatever is left is recorded as unscored."""
        try:
            await asyncio.wait_for(self.queue.join(), timeout=self.config.drain_s)
        except asyncio.TimeoutError:
            pass
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        while not self.queue.empty():
            item = self.queue.get_nowait()
            self._record(item, None, "not judged: the gateway stopped before the judge got to it", 0.0)
        for gen_w, judge_w in self._writers.values():
            gen_w.close()
            judge_w.close()
        for name, (rd, manifest) in self._runs.items():
            try:
                self._close_session(name, rd, manifest)
            except RunDirError as e:
                log.error("%s", e)
            rd.unlock()
        self.queue_depth.set(0)
        self.store.close()
        if self.judge.model.backend is not self.upstream.backend:
            await self.judge.model.aclose()

    # -- the request path: one cheap decision ---------------------------------------------------
    def offer(
        self, method: GenerationMethod, scenario: Scenario, prompt: Prompt, output: MethodOutput, elapsed_s: float
    ) -> bool:
        """Queue the answer for judging if it is sampled; True when queued. Never waits."""
        if self._random.random() >= self.config.rate:
            return False
        try:
            self.queue.put_nowait(_Item(method, scenario, prompt, output, elapsed_s, self.tracing.capture()))
        except asyncio.QueueFull:
            self.metrics_samples.inc(method=method.name, scenario=scenario.key, outcome="dropped")
            return False
        self.queue_depth.set(self.queue.qsize())
        return True

    # -- the background -------------------------------------------------------------------------
    async def _work(self) -> None:
        while True:
            item = await self.queue.get()
            self.queue_depth.set(self.queue.qsize())
            try:
                with self.tracing.judging(item.traced, item.method.name, item.scenario.key):
                    await self._judge_one(item)
            except asyncio.CancelledError:
                self._record(item, None, "not judged: the gateway stopped while the judge was at it", 0.0)
                raise
            except Exception:  # noqa: BLE001  (one broken sample never stops the monitor)
                log.exception("monitoring %s failed", item.prompt.id)
            finally:
                self.queue.task_done()

    async def _judge_one(self, item: _Item) -> None:
        t0 = time.perf_counter()
        try:
            outcome = await self.judge.judge(item.scenario, item.prompt, item.output.response)
        except ModelError as e:  # access errors too: the sample is recorded unscored, the gateway goes on
            log.warning("monitor: judge call failed: %s", e)
            self._record(item, None, f"judge call failed: {e}", time.perf_counter() - t0, call_failed=True)
            return
        if outcome.status != "scored":
            log.warning("monitor: %s/%s left unscored: %s", item.scenario.key, item.prompt.id, outcome.unscored_reason)
        self._record(item, outcome, outcome.unscored_reason, time.perf_counter() - t0, call_failed=outcome.call_failed)

    def _record(
        self,
        item: _Item,
        outcome: JudgeOutcome | None,
        reason: str | None,
        elapsed: float,
        *,
        call_failed: bool = False,
    ) -> None:
        method, scenario = item.method.name, item.scenario.key
        scored = outcome is not None and outcome.status == "scored"
        letters: str | None = None
        sar: float | None = None
        broke: Violation | None = None
        if outcome is not None and scored:
            ids = item.scenario.spec_ids()
            letters = verdict_letters(outcome.verdicts[k].verdict for k in ids)
            sar = score_verdicts(
                item.scenario, outcome.verdicts, alpha=self.config.alpha, na_policy=self.config.na_policy
            ).sar
            for k in ids:
                self.metrics_verdicts.inc(method=method, scenario=scenario, spec=k, verdict=outcome.verdicts[k].verdict)
            broken = [k for k in ids if outcome.verdicts[k].verdict == "NO"]
            if broken:
                broke = Violation(
                    now(),
                    method,
                    scenario,
                    sample_id_of(scenario, item.prompt.id),
                    broken,
                    item.prompt.prompt,
                    item.output.response,
                )
        self.tracing.judged(letters, sar, call_failed)
        try:
            self.store.add(method, scenario, letters, sar, broke)
        except sqlite3.Error as e:  # the windows are a view; the sample still goes to the run directory
            log.error("monitor: cannot update the shared windows: %s", e)
        self.metrics_samples.inc(method=method, scenario=scenario, outcome="judged" if scored else "unscored")
        self._write(item, outcome, reason, elapsed, call_failed)

    @property
    def windows(self) -> dict[tuple[str, str], Window]:
        """Per (method, scenario), the window: every worker's judged answers when they share one."""
        return self.store.windows()

    @property
    def recent(self) -> list[Violation]:
        """The latest judged answers that broke a spec, newest first."""
        return self.store.recent()

    # -- the run directory ----------------------------------------------------------------------
    def _prepare_run_dirs(self, root: Path) -> None:
        """One run directory per method under ``root``, with the served scenarios beside them."""
        from ..authoring import write_scenario  # noqa: PLC0415  (only with --monitor-out)

        bare = [s.model_copy(update={"prompts": []}) for s in self.scenarios.values()]
        served = Benchmark(source=str((root / SCENARIOS_DIR).resolve()), scenarios=bare)
        fresh = {name: self._manifest(method, served) for name, method in self.methods.items()}
        if self.shared is not None:
            self._join_run_dirs(root, fresh, bare)
            return
        for name, manifest in fresh.items():
            rd = RunDir(root / name)
            if rd.exists():
                old = rd.read_manifest()
                if old.generation_key != manifest.generation_key:
                    raise RunDirError(
                        f"{rd.path} holds live samples of another configuration (model "
                        f"{old.model.get('key')!r}, method {old.method.get('name')!r}, scenarios "
                        f"{', '.join(old.selection.scenarios)}); use another --monitor-out"
                    )
                manifest = manifest.model_copy(update={"created_at": old.created_at, "sessions": old.sessions})
            manifest.sessions.append(Session())
            rd.ensure_writable()
            rd.lock("serve")  # one writer per run directory: a second gateway or a run is refused
            self._runs[name] = (rd, manifest)
        for s in bare:
            write_scenario(s, root / SCENARIOS_DIR, overwrite=True)
        for name, (rd, manifest) in self._runs.items():
            rd.write_manifest(manifest)
            self._writers[name] = rd.open_writers()

    def _join_run_dirs(self, root: Path, fresh: dict[str, Manifest], bare: list[Scenario]) -> None:
        """A worker's share of the run directories its supervisor has locked: under each directory's append
        lock, check the configuration, add this worker's session to the manifest, and open shared writers."""
        from ..authoring import write_scenario  # noqa: PLC0415

        for i, (name, manifest) in enumerate(fresh.items()):
            rd = RunDir(root / name)
            rd.ensure_writable()
            with rd.append_lock():
                if rd.exists():
                    old = rd.read_manifest()
                    if old.generation_key != manifest.generation_key:
                        raise RunDirError(
                            f"{rd.path} holds live samples of another configuration (model "
                            f"{old.model.get('key')!r}, method {old.method.get('name')!r}, scenarios "
                            f"{', '.join(old.selection.scenarios)}); use another --monitor-out"
                        )
                    manifest = manifest.model_copy(update={"created_at": old.created_at, "sessions": old.sessions})
                if i == 0:  # the scenarios, once per worker, under the first directory's lock
                    for s in bare:
                        write_scenario(s, root / SCENARIOS_DIR, overwrite=True)
                manifest.sessions.append(Session())
                self._session[name] = len(manifest.sessions) - 1
                rd.write_manifest(manifest)
            self._runs[name] = (rd, manifest)
            self._writers[name] = rd.open_shared_writers()

    def _close_session(self, name: str, rd: RunDir, manifest: Manifest) -> None:
        """Write this process's session (time, samples) into the manifest; re-read first when shared."""
        wall_s = round(time.perf_counter() - self._t0, 3)
        if self.shared is None:
            manifest.sessions[-1].wall_s = wall_s
            manifest.touch()
            rd.write_manifest(manifest)
            return
        with rd.append_lock():
            current = rd.read_manifest()
            session = current.sessions[self._session[name]]
            session.wall_s = wall_s
            session.samples_done = self._done.get(name, 0)
            current.touch()
            rd.write_manifest(current)

    def _manifest(self, method: GenerationMethod, served: Benchmark) -> Manifest:
        return build_manifest(
            bench=served,
            scenarios=served.scenarios,
            limit=None,
            n_samples=0,
            target=self.upstream,
            method=method,
            judge=self.judge,
            alpha=self.config.alpha,
            na_policy=self.config.na_policy,
            live=True,
        )

    def _write(
        self, item: _Item, outcome: JudgeOutcome | None, reason: str | None, elapsed: float, call_failed: bool
    ) -> None:
        writers = self._writers.get(item.method.name)
        if writers is None:
            return
        rd, manifest = self._runs[item.method.name]
        gen = GenerationRecord.from_output(
            item.output,
            scenario=item.scenario.key,
            prompt_id=item.prompt.id,
            label="unlabeled",
            prompt_sent=conversation_text(item.prompt),
            elapsed_s=item.elapsed_s,
        )
        judge_key = manifest.judge["key"]
        if outcome is not None:
            judged = JudgmentRecord.from_outcome(gen, judge_key, outcome, elapsed_s=elapsed)
        else:
            judged = JudgmentRecord.not_judged(
                gen, judge_key, reason or "not judged", elapsed_s=elapsed, call_failed=call_failed
            )
        try:
            writers[0].append(gen)
            writers[1].append(judged)
        except RunDirError as e:
            log.error("%s", e)
            return
        manifest.sessions[-1].samples_done += 1
        self._done[item.method.name] = self._done.get(item.method.name, 0) + 1

    # -- metrics and status ---------------------------------------------------------------------
    def _register_metrics(self) -> None:
        r = self.metrics.registry
        self.metrics_samples = r.counter(
            "specalign_monitor_samples_total",
            "Sampled answers by outcome: judged, unscored (judge failed), dropped (queue full).",
            ("method", "scenario", "outcome"),
        )
        self.metrics_verdicts = r.counter(
            "specalign_spec_verdicts_total",
            "Verdicts on judged answers, by method, scenario, spec and verdict (YES, NO, NA).",
            ("method", "scenario", "spec", "verdict"),
        )
        self.queue_depth = r.gauge("specalign_monitor_queue_depth", "Answers waiting for the judge.")
        self.queue_depth.set(0)
        r.computed(
            "specalign_spec_violation_rate",
            "Share of scored answers in the sliding window that broke the spec.",
            self._rates,
        )
        r.computed(
            "specalign_monitor_window_scored",
            "Scored answers in the sliding window.",
            lambda: [({"method": m, "scenario": s}, len(w.scored())) for (m, s), w in self.windows.items()],
        )
        r.computed(
            "specalign_monitor_window_sar",
            "Mean SAR of the scored answers in the sliding window.",
            lambda: [
                ({"method": m, "scenario": s}, sum(x for _, x in w.scored()) / len(w.scored()))
                for (m, s), w in self.windows.items()
                if w.scored()
            ],
        )

    def _window_counts(self, key: str, w: Window) -> dict[str, dict[str, float | int]]:
        """Spec id → verdict counts and violation rate over the scored answers in ``w``, counted as a run's
        ``scores.json`` counts them."""
        counts = SpecViolations()
        n_safety = len(self.scenarios[key].safety_specs)
        for letters, _ in w.scored():
            counts.add(key, n_safety, letters)
        return counts.rates().get(key, {})

    def _rates(self) -> list[tuple[dict[str, str], float]]:
        out = []
        for (method, key), w in self.windows.items():
            if not w.scored():
                continue
            per = self._window_counts(key, w)
            for kind in SPEC_KINDS:
                for spec in self.scenarios[key].spec_ids(kind):
                    labels = {"method": method, "scenario": key, "spec": spec, "kind": kind}
                    out.append((labels, float(per[spec]["violation_rate"])))
        return out

    def spec_table(self) -> list[dict[str, Any]]:
        """Per (method, scenario): window size, SAR, and each spec's violation count and rate."""
        tables = []
        for (method, key), w in self.windows.items():
            scenario, scored = self.scenarios[key], w.scored()
            per = self._window_counts(key, w)
            specs: list[dict[str, Any]] = []
            for kind in SPEC_KINDS:
                for i, spec in enumerate(scenario.specs(kind), 1):
                    c = per.get(spec_id(kind, i))
                    specs.append(
                        {
                            "id": spec_id(kind, i),
                            "text": spec.text,
                            "violations": c["NO"] if c else 0,
                            "rate": c["violation_rate"] if c else None,
                        }
                    )
            specs.sort(key=lambda s: -(s["rate"] or 0))  # the most violated first
            tables.append(
                {
                    "method": method,
                    "scenario": key,
                    "name": scenario.name,
                    "judged": len(w.items),
                    "scored": len(scored),
                    "sar": sum(s for _, s in scored) / len(scored) if scored else None,
                    "violating": sum("N" in letters for letters, _ in scored),
                    "specs": specs,
                }
            )
        return tables


def conversation_text(prompt: Prompt) -> str:
    """The request as the report shows it: the last user turn, after the earlier ones when there are any."""
    if not prompt.system and not prompt.history:
        return prompt.prompt
    lines = [f"[system] {prompt.system}"] if prompt.system else []
    lines += [f"[{t.role}] {t.content}" for t in prompt.history or ()]
    return "\n\n".join([*lines, f"[user] {prompt.prompt}"])
