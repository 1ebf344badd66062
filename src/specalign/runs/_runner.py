"""Run an evaluation: generation and judging pipelined per sample, resumable, observable."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ..benchmark import Benchmark, Prompt, Scenario, load_benchmark, select_prompts, select_scenarios
from ..errors import ConfigError, ModelAccessError, ModelError, ModelOutage, RunDirError
from ..judge import (
    DEFAULT_JUDGE_PARAMS,
    Judge,
    JudgeOutcome,
    JudgePanel,
    JudgeTemplate,
    load_judge_template,
    score_verdicts,
)
from ..methods import CandidateScorer, FunctionScorer, GenerationMethod, ScoreResult, create_method, make_scorer
from ..models import (
    ASSUMED_COMPLETION_TOKENS,
    EMBEDDED_MAX_TOKENS,
    LOCAL,
    CallCache,
    Model,
    ModelSettings,
    completion_bound,
    create_model,
    load_models_config,
    local_parallelism,
    parse_model_spec,
    pricing_of,
)
from ..scoring import SampleScore
from ._batching import (
    BATCH_RESULTS,
    BatchedModel,
    BatchProgress,
    BatchQueue,
    can_batch,
    ledger_damage,
    open_batches,
)
from ._config import RunConfig
from ._costs import (
    BudgetExceeded,
    CostMeter,
    EstimateLine,
    RunEstimate,
    in_role,
    judge_call_prompts,
    method_calls,
    recorded_cost,
    sum_costs,
    tallied,
    tokens,
)
from ._records import GenerationRecord, JudgmentRecord, Manifest, Session, build_manifest, sample_id_of
from ._resume import ResumeState
from ._scores import ScoresReport, compute_scores
from ._store import SCORES, RunDir, refuse_inside


class RunStats(BaseModel):
    """Live counters for the progress display."""

    total: int = 0
    done: int = 0
    resumed: int = 0
    scored: int = 0
    unscored: int = 0
    safety_sum: float = 0.0
    behavioral_sum: float = 0.0
    sar_sum: float = 0.0
    gen_tokens: int = 0
    judge_tokens: int = 0
    model_calls: int = 0
    batch: BatchProgress | None = None

    def mean(self, name: str) -> float | None:
        return getattr(self, f"{name}_sum") / self.scored if self.scored else None


class RunResult(BaseModel):
    out_dir: str
    scores: ScoresReport
    stats: RunStats
    limit: int | None
    n_available: int


ProgressCallback = Callable[[RunStats], None]


class Evaluation:
    """Everything one ``specalign run`` needs, built from a :class:`RunConfig`."""

    def __init__(self, config: RunConfig):
        self.config = config
        self.bench: Benchmark = load_benchmark(config.data)
        self.scenarios: list[Scenario] = select_scenarios(self.bench, config.scenarios)
        self.limit = config.effective_limit()
        self.samples: list[tuple[Scenario, Prompt]] = [
            (s, p) for s in self.scenarios for p in select_prompts(s, self.limit)
        ]
        self.n_available = sum(len(s.prompts) for s in self.scenarios)
        self.method: GenerationMethod = create_method(config.method, config.method_params)
        self.models_config = load_models_config(config.models_config)
        calls = {"calls_in_flight": config.concurrency}  # --concurrency: calls in flight, per model
        self.target_settings = _with_generation_defaults(
            parse_model_spec(config.model, self.models_config).model_copy(update=calls)
        )
        #: the judge, or each member of a judge panel (``--judge A,B,C``)
        self.judges_settings = [
            parse_model_spec(spec, self.models_config).model_copy(update=calls) for spec in config.judges()
        ]
        self.judge_settings = self.judges_settings[0]
        twice = next((s.key for i, s in enumerate(self.judges_settings) if s in self.judges_settings[:i]), None)
        if twice is not None:
            raise ConfigError(f"judge {twice!r} is in the panel twice: give each judge once", field="--judge")
        self.judge_template: JudgeTemplate | None = None
        if config.judge_template is not None:  # a bad template or mode: one line, before any model call
            self.judge_template = load_judge_template(config.judge_template)
            self.judge_template.check_mode(config.judge_mode)
        self.run_dir = RunDir(config.out_dir())
        self.stats = RunStats(total=len(self.samples))
        self._failures_in_a_row = 0
        self._batches: BatchQueue | None = None
        #: each model's price (a bad ``price:`` is a one-line error now, before anything is written)
        self.pricings = {s.key: pricing_of(s) for s in (self.target_settings, *self.judges_settings)}
        #: --max-cost for this run (the command lowers it by what its other runs' directories cost)
        self.max_cost: float | None = config.max_cost
        self.meter = CostMeter(pricings=self.pricings)
        self._budget_stop: BudgetExceeded | None = None
        self._stopped_manifest: Manifest | None = None

    # -- setup ----------------------------------------------------------------------------
    def _cache(self) -> CallCache | None:
        if not self.config.use_cache:
            return None
        if self.config.cache_dir:
            return CallCache(Path(self.config.cache_dir) / "calls.sqlite")
        return CallCache.default()

    def _manifest(self, target: Model, judge: Judge | JudgePanel, scorer: CandidateScorer | None) -> Manifest:
        return build_manifest(
            bench=self.bench,
            scenarios=self.scenarios,
            limit=self.limit,
            n_samples=len(self.samples),
            target=target,
            method=self.method,
            judge=judge,
            alpha=self.config.alpha,
            na_policy=self.config.na_policy,
            scorer=scorer,  # Best-of-N and TPO pick by the scorer: another judge, other answers
        )

    def _reconcile(self, fresh: Manifest) -> Manifest:
        """Resume an existing run directory if it was made with the same generation settings."""
        if not self.run_dir.exists():
            return fresh
        old = self.run_dir.read_manifest()
        if old.generation_key != fresh.generation_key:
            scored = " or another candidate scorer (judge, α, NA policy)" if self.method.uses_scorer else ""
            raise RunDirError(
                f"{self.run_dir.path} holds a run with other settings{scored} (model {old.model.get('key')!r}, method "
                f"{old.method.get('name')!r}, data {old.data.sha256[:12]}); use a new --out to start another run"
            )
        past = list(old.past_judges)
        if old.judge["key"] != fresh.judge["key"] and all(p["key"] != old.judge["key"] for p in past):
            past.append(old.judge)
        scen = {**old.data.scenarios, **fresh.data.scenarios}
        return fresh.model_copy(
            update={
                "created_at": old.created_at,
                "past_judges": past,
                "sessions": old.sessions,
                "data": fresh.data.model_copy(update={"scenarios": scen}),
            }
        )

    def preflight(self) -> None:
        """Fail now, before any model call, if the run directory cannot take this run or the method cannot
        run here (prefill, an unloadable reward)."""
        self.check_out_dir()
        self.method.check(create_model(self.target_settings, None))
        if self.config.batch:
            self.batched_roles()  # neither model can batch: one line now
        spec = getattr(self.method.params, "scorer", None)
        if self.method.uses_scorer and spec not in (None, "judge"):
            FunctionScorer(spec)  # imports the reward function: a ConfigError now, not mid-run

    def batched_roles(self) -> list[str]:
        """With ``--batch``: the models (model, judge N) whose calls go through their provider's batch API;
        a ConfigError when none can."""
        roles = []
        settings = [("model", self.target_settings)] + [
            ("judge" if len(self.judges_settings) == 1 else f"judge {i + 1}", s)
            for i, s in enumerate(self.judges_settings)
        ]
        for role, s in settings:
            if can_batch(create_model(s, None)):
                roles.append(f"{role} {s.key}")
        if not roles:
            raise ConfigError(
                "--batch: neither the model nor the judge can use a provider batch API (OpenAI's Batch API, "
                "Anthropic's Message Batches; a models config's `batch: true` declares an OpenAI-compatible "
                "endpoint that offers it)",
                field="--batch",
            )
        return roles

    def estimate(self) -> RunEstimate:
        """What the run still needs, per model: calls, tokens and USD, from the method's call pattern, the prompts
        and the models' max_tokens, less what the run directory holds (see :class:`RunEstimate`). No model is
        called and nothing is written."""
        self.preflight()
        target = create_model(self.target_settings, None)
        judges = [
            Judge(
                create_model(s, None), self.config.judge_mode, self.config.judge_attempts, template=self.judge_template
            )
            for s in self.judges_settings
        ]
        judge: Judge | JudgePanel = judges[0]
        if len(judges) > 1:
            judge = JudgePanel(judges, self.config.panel_rule, names=[s.key for s in self.judges_settings])
        scorer = self._scorer(judges[0])
        done, spent = None, 0.0
        if self.run_dir.exists():
            self.run_dir.use_manifest(self._reconcile(self._manifest(target, judge, scorer)))  # other settings: refused
            again = self.config.retry_unscored
            done = ResumeState(
                self.run_dir, judge.key(), judge_again=lambda j: _judge_again(j, again), score=self._score_record
            )
            spent = recorded_cost(self.run_dir, judge.key())
        batch = self.config.batch
        t_settings, first = self.target_settings, self.judges_settings[0]
        model_line = EstimateLine(role="model", model=t_settings.key, batch=batch and can_batch(target))
        scoring = getattr(self.method.params, "scorer", None) == "judge" and self.method.uses_scorer
        scoring_line = EstimateLine(
            role="candidate scoring", model=first.key, batch=batch and can_batch(judges[0].model)
        )
        judge_lines = [
            EstimateLine(
                role="judge" if len(judges) == 1 else f"judge {i + 1}", model=s.key, batch=batch and can_batch(j.model)
            )
            for i, (s, j) in enumerate(zip(self.judges_settings, judges, strict=True))
        ]
        bound = completion_bound(t_settings.params) or ASSUMED_COMPLETION_TOKENS
        judge_bounds = [completion_bound(s.params) or DEFAULT_JUDGE_PARAMS["max_tokens"] for s in self.judges_settings]
        mode, notes = self.config.judge_mode, []
        n_done = to_generate = to_judge = 0

        def judged(scenario: Scenario, prompt: Prompt, answer_tokens: int) -> None:
            for line, s, b in zip(judge_lines, self.judges_settings, judge_bounds, strict=True):
                for pt in judge_call_prompts(scenario, prompt, mode, answer_tokens):
                    line.add(self.pricings[s.key], pt, b)

        for scenario, prompt in self.samples:
            sid = _sid(scenario, prompt)
            if done is not None and sid in done.finished:
                n_done += 1
                continue
            g = done.to_judge.get(sid) if done is not None else None
            if g is not None:
                to_judge += 1
                judged(scenario, prompt, tokens(g.response))
                continue
            to_generate += 1
            calls, note = method_calls(self.method, scenario, prompt, completion=bound, can_prefill=target.can_prefill)
            if note and note not in notes:
                notes.append(note)
            for kind, pt, ct in calls:
                if kind != "score":
                    model_line.add(self.pricings[t_settings.key], pt, ct)
                elif scoring:
                    for jt in judge_call_prompts(scenario, prompt, mode, bound):
                        scoring_line.add(self.pricings[first.key], jt, judge_bounds[0])
            judged(scenario, prompt, bound)
        lines = [model_line, *([scoring_line] if scoring else []), *judge_lines]
        for line in lines:
            line.priced = self.pricings[line.model].priced
        return RunEstimate(
            run_dir=str(self.run_dir.path),
            method=self.method.name,
            samples=len(self.samples),
            done=n_done,
            to_generate=to_generate,
            to_judge=to_judge,
            lines=lines,
            cost=sum(line.cost for line in lines),
            spent=spent,
            prices={key: pricing.describe() for key, pricing in self.pricings.items()},
            assumed=[] if completion_bound(t_settings.params) else [t_settings.key],
            notes=notes,
        )

    def recorded_cost(self) -> float:
        """What this run's directory's records cost already, in USD (0 for a new directory)."""
        if not self.run_dir.exists():
            return 0.0
        manifest = self.run_dir.read_manifest()
        return recorded_cost(self.run_dir, manifest.judge["key"])

    def check_out_dir(self) -> None:
        """The run directory is new, empty or a readable run's, held by no other process, and not inside the
        data it reads."""
        source = Path(self.bench.source)
        if source.is_absolute() and source.is_dir():  # a local data directory (not bundled, not the hub)
            refuse_inside(self.run_dir.path, [source], field="--out")
        self.run_dir.check_new_or_run()
        if self.run_dir.exists():
            self.run_dir.read_manifest()  # a malformed or newer manifest: refused before any model call
        self.run_dir.check_unlocked()
        left = open_batches(self.run_dir) if self.run_dir.exists() else []
        if where := ledger_damage(self.run_dir):
            raise RunDirError(
                f"{where}: a line of the batch ledger is unreadable, so a batch it recorded may still be open at the "
                "provider, and sending its requests again would pay for them twice. Look for it in the provider's "
                "batch list (OpenAI: metadata created_by=specalign), then delete the line "
                "(or batches.jsonl, to give up every batch it records) and rerun"
            )
        if left and not self.config.batch:
            raise RunDirError(
                f"{self.run_dir.path}: {len(left)} batch{'es' if len(left) != 1 else ''} submitted by an earlier "
                f"--batch run {'are' if len(left) != 1 else 'is'} not collected ({left[0].batch_id}): rerun with "
                "--batch to collect them; without it their requests would be sent again online and paid twice "
                "(to give them up, delete batches.jsonl)"
            )

    # -- the run --------------------------------------------------------------------------
    async def run(self, on_progress: ProgressCallback | None = None) -> RunResult:
        """Run (or resume) under the directory's lock: a second process on the same directory is refused."""
        t0 = time.perf_counter()
        self.check_out_dir()
        cache = self._cache()  # an unusable cache folder is a one-line error before the run directory is made
        try:
            self.run_dir.ensure_writable()
            self.run_dir.lock()
            try:
                self.run_dir.check_new_or_run()  # again, now that no other run can write here
                return await self._run(cache, t0, on_progress)
            finally:
                self.run_dir.unlock()
        finally:
            if cache is not None:
                cache.close()

    async def _run(self, cache: CallCache | None, t0: float, on_progress: ProgressCallback | None) -> RunResult:
        target = create_model(self.target_settings, cache)
        models = [target]  # one model object per distinct settings: the target's is the judge's when alike
        judge_models = []
        for settings in self.judges_settings:
            same = next((m for m in models if m.settings == settings), None)
            if same is None:
                same = create_model(settings, cache)
                models.append(same)
            judge_models.append(same)
        if self.config.batch:
            target, judge_models = self._batched(target, judge_models, on_progress)
        self.meter = CostMeter(budget=self.max_cost, pricings=self.pricings)
        for m in {id(m): m for m in (*models, target, *judge_models)}.values():
            self.meter.attach(m)
        stop: BudgetExceeded | None = None
        try:
            manifest = await self._process(target, judge_models, t0, on_progress)
        except BudgetExceeded as e:  # finished samples are on disk: write what they cost, then stop
            if self._stopped_manifest is None:
                raise
            manifest, stop = self._stopped_manifest, e
        finally:
            for m in models:
                await m.aclose()
            if self._batches is not None:
                self._batches.close()
                self._batches.store.close()
        manifest.touch()
        self.run_dir.write_manifest(manifest)
        scores = compute_scores(self.run_dir, manifest)
        self.run_dir.write_json_atomic(SCORES, scores.model_dump(mode="json"))
        if stop is not None:
            raise stop
        return RunResult(
            out_dir=str(self.run_dir.path),
            scores=scores,
            stats=self.stats,
            limit=self.limit,
            n_available=self.n_available,
        )

    async def _process(
        self, target: Model, judge_models: list[Model], t0: float, on_progress: ProgressCallback | None
    ) -> Manifest:
        """Every selected sample generated and judged, or resumed; returns the manifest, sessions updated."""
        self.method.check(target)
        judges = [
            Judge(m, self.config.judge_mode, self.config.judge_attempts, template=self.judge_template)
            for m in judge_models
        ]
        judge: Judge | JudgePanel = judges[0]
        if len(judges) > 1:
            judge = JudgePanel(judges, self.config.panel_rule, names=[s.key for s in self.judges_settings])
        scorer = self._scorer(judges[0])  # Best-of-N and TPO pick with the first judge
        manifest = self._reconcile(self._manifest(target, judge, scorer))
        manifest.prices = {key: pricing.describe() for key, pricing in self.pricings.items()}
        self.run_dir.use_manifest(manifest)  # records are checked against this run's scenarios and specs
        if self.max_cost is not None:
            self.meter.spent = recorded_cost(self.run_dir, judge.key())
        session = Session()
        manifest.sessions.append(session)
        self._stopped_manifest = manifest
        self.run_dir.write_manifest(manifest)
        self.run_dir.write_selection([_sid(s, p) for s, p in self.samples])
        done = ResumeState(
            self.run_dir,
            judge.key(),
            judge_again=lambda j: _judge_again(j, self.config.retry_unscored),
            score=self._score_record,
        )
        self._members: dict[str, dict[str, JudgmentRecord]] = {}
        if isinstance(judge, JudgePanel):
            self._members = _member_records(self.run_dir, judge, done, self.config.retry_unscored)
        gen_w, judge_w = self.run_dir.open_writers()
        try:
            await self._process_all(target, judge, scorer, done, gen_w, judge_w, on_progress)
        finally:
            session.wall_s = round(time.perf_counter() - t0, 3)
            session.model_calls, session.samples_done = self.stats.model_calls, self.stats.done
            session.samples_resumed = self.stats.resumed
            gen_w.close()
            judge_w.close()
        return manifest

    def _batched(
        self, target: Model, judges: list[Model], on_progress: ProgressCallback | None
    ) -> tuple[Model, list[Model]]:
        """The models whose calls wait for batches (those that can batch), one object per model."""

        def changed(progress: BatchProgress) -> None:
            self.stats.batch = progress
            if on_progress:
                on_progress(self.stats)

        store = CallCache(self.run_dir.path / BATCH_RESULTS)
        queue = self._batches = BatchQueue(
            self.run_dir,
            store,
            poll_s=self.config.batch_poll_s,
            retry=self.config.batch_retry,
            no_wait=self.config.batch_no_wait,
            on_change=changed,
        )
        self.stats.batch = queue.progress
        wrapped: dict[int, Model] = {}

        def wrap(m: Model) -> Model:
            if id(m) not in wrapped:
                wrapped[id(m)] = BatchedModel(m, queue) if can_batch(m) else m
            return wrapped[id(m)]

        return wrap(target), [wrap(j) for j in judges]

    def _scorer(self, judge: Judge) -> CandidateScorer | None:
        spec = getattr(self.method.params, "scorer", None)
        if not self.method.uses_scorer or spec is None:
            return None
        return _Scoring(make_scorer(spec, judge=judge, alpha=self.config.alpha, na_policy=self.config.na_policy))

    def _workers(self) -> int:
        """Samples in flight. When every model runs in this process, as many as llama.cpp runs calls at
        once (its contexts): each sample's calls then keep to one context's KV cache (Align3's stages
        extend one text), and no sample waits with a half-used cache."""
        if self.config.batch:  # every sample in flight: their calls wait together for the next batch
            return max(1, len(self.samples))
        n = min(self.config.concurrency, max(1, len(self.samples)))
        everyone = [self.target_settings, *self.judges_settings]
        if all(s.backend == "llamacpp" for s in everyone):
            return min(n, max(local_parallelism(s) for s in everyone))
        return n

    def samples_in_flight(self) -> int:
        """Samples worked on at once: ``_workers()``, doubled when no model runs in this process.

        ``--concurrency`` is each model's calls in flight (``ModelSettings.calls_in_flight``). A sample
        makes its calls one after another (vanilla: the answer, then the judge), so with only as many
        samples as calls a call slot idles while its sample moves from one call to the next, and a
        separate judge shares the calls with the target; twice as many samples keep both models busy
        while the models' own limits hold each to ``--concurrency`` calls in flight.
        """
        n = self._workers()
        if self.config.batch:
            return n
        if any(s.backend == "llamacpp" for s in (self.target_settings, *self.judges_settings)):
            return n
        return max(1, min(2 * n, len(self.samples)))

    async def _process_all(self, target, judge, scorer, done, gen_w, judge_w, on_progress) -> None:
        """Samples in flight on a pool of workers. The first error of any worker (an access error, a full
        disk, an outage, a bug) cancels the others and is raised once, after every worker has stopped:
        records are flushed as each step of a sample finishes, so what finished is on disk."""
        queue: asyncio.Queue[tuple[Scenario, Prompt]] = asyncio.Queue()
        for item in self.samples:
            queue.put_nowait(item)
        batches = self._batches
        if batches is not None:  # first the batches an earlier run left open
            batched = {id(m): m for m in (target, *_models(judge)) if isinstance(m, BatchedModel)}
            await batches.resume(list(batched.values()))

        async def worker() -> None:
            while self._budget_stop is None:
                try:
                    scenario, prompt = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                if batches is not None:
                    batches.enter()
                try:
                    await self._one(target, judge, scorer, scenario, prompt, done, gen_w, judge_w)
                except BudgetExceeded as e:  # no new call starts; the calls in flight finish and are recorded
                    self._budget_stop = self._budget_stop or e
                    return
                finally:
                    if batches is not None:
                        batches.leave()
                if on_progress:
                    on_progress(self.stats)

        await run_all([worker() for _ in range(self.samples_in_flight())])
        if self._budget_stop is not None:
            raise self._budget_stop

    async def _one(
        self,
        target: Model,
        judge: Judge | JudgePanel,
        scorer: CandidateScorer | None,
        scenario: Scenario,
        prompt: Prompt,
        done: ResumeState,
        gen_w,
        judge_w,
    ) -> None:
        sid = _sid(scenario, prompt)
        if sid in done.finished:
            self.stats.resumed += 1
            self._tally(done.finished[sid])
            return
        new_g: GenerationRecord | None = None
        g = done.to_judge.pop(sid, None)  # answered before, not judged yet
        if g is None:
            g = new_g = await self._generate(target, scorer, scenario, prompt)
            gen_w.append(g)
        new_j: JudgmentRecord | None = None
        calls: list[JudgmentRecord] = []  # the judgments that called a judge now
        if g.status == "ok":
            if isinstance(judge, JudgePanel):
                new_j, calls = await self._judge_panel(judge, scenario, prompt, g, judge_w)
            else:
                new_j = await self._judge(judge, scenario, prompt, g)
                calls = [new_j]
            judge_w.append(new_j)
        self._count_new_work(new_g, calls)
        self._tally(self._score_record(new_j) if new_j is not None and new_j.status == "scored" else None)
        self._check_failures(new_g, new_j)

    def _score_record(self, j: JudgmentRecord) -> SampleScore:
        scenario = self.bench.scenario(j.scenario)
        return score_verdicts(scenario, j.verdicts, alpha=self.config.alpha, na_policy=self.config.na_policy)

    def _check_failures(self, g: GenerationRecord | None, j: JudgmentRecord | None) -> None:
        """A circuit breaker: when every recent sample failed at the model (an outage, a quota that
        retries cannot outlast), stop instead of burning through the rest of the run."""
        if g is None and j is None:
            return
        error = g.error if g is not None and g.status == "error" else j.unscored_reason if j and j.call_failed else None
        self._failures_in_a_row = self._failures_in_a_row + 1 if error else 0
        limit = self.config.stop_after_failures
        if error and limit and self._failures_in_a_row >= limit:
            raise ModelOutage(
                f"stopped: the last {self._failures_in_a_row} samples all failed at the model "
                f"(last: {error}). Finished samples are saved; rerun the same command to resume"
            )

    def _count_new_work(self, g: GenerationRecord | None, judgments: list[JudgmentRecord]) -> None:
        if g is not None:
            self.stats.gen_tokens += g.usage.total_tokens
            self.stats.judge_tokens += g.scorer_usage.total_tokens  # Best-of-N / TPO candidate scoring
            self.stats.model_calls += g.calls
        for j in judgments:
            self.stats.judge_tokens += j.usage.total_tokens
            self.stats.model_calls += j.calls

    async def _generate(
        self, target: Model, scorer: CandidateScorer | None, scenario: Scenario, prompt: Prompt
    ) -> GenerationRecord:
        t0 = time.perf_counter()
        sample: dict[str, Any] = dict(
            scenario=scenario.key, prompt_id=prompt.id, label=prompt.label, prompt_sent=prompt.prompt
        )
        with tallied("target") as tally:
            try:
                out = await self.method.run(target, scenario, prompt, scorer=scorer)
            except ModelAccessError:
                raise
            except ModelError as e:
                record = GenerationRecord.failed(str(e), **sample, elapsed_s=time.perf_counter() - t0)
            else:
                record = GenerationRecord.from_output(out, **sample, elapsed_s=time.perf_counter() - t0)
        record.cost = tally.part("target")
        record.scorer_cost = tally.part("scorer") if scorer is not None else None
        return record

    async def _judge(self, judge: Judge, scenario: Scenario, prompt: Prompt, g: GenerationRecord) -> JudgmentRecord:
        t0 = time.perf_counter()
        with tallied("judge") as tally:
            outcome = await judge.judge(scenario, prompt, g.response)
        record = JudgmentRecord.from_outcome(g, judge.key(), outcome, elapsed_s=time.perf_counter() - t0)
        record.cost = tally.part("judge")
        return record

    async def _judge_panel(
        self, panel: JudgePanel, scenario: Scenario, prompt: Prompt, g: GenerationRecord, judge_w
    ) -> tuple[JudgmentRecord, list[JudgmentRecord]]:
        """The panel's judgment, and the members' judgments made now. A member's earlier judgment of this
        answer is reused (a run killed mid-panel calls only the members that had not finished); each new
        one is written as soon as it is made."""
        t0 = time.perf_counter()
        earlier = self._members.pop(g.sample_id, {})
        made: list[JudgmentRecord] = []

        async def member_record(member: Judge) -> JudgmentRecord:
            record = earlier.get(member.key())
            if record is None:
                record = await self._judge(member, scenario, prompt, g)
                judge_w.append(record)
                made.append(record)
            return record

        # the members judge at once (their calls join one batch with --batch); the first failure is raised
        # once all have ended, so that every verdict that came back is written
        got = await asyncio.gather(*(member_record(m) for m in panel.judges), return_exceptions=True)
        for x in got:
            if isinstance(x, BaseException):
                raise x
        members = [r for r in got if isinstance(r, JudgmentRecord)]
        outcome = panel.combine(scenario, [_outcome_of(r) for r in members])
        record = JudgmentRecord.from_outcome(g, panel.key(), outcome, elapsed_s=time.perf_counter() - t0)
        record.cost = sum_costs([r.cost for r in members])
        return record, made

    def _tally(self, score: SampleScore | None) -> None:
        st = self.stats
        st.done += 1
        if score is None:
            st.unscored += 1
            return
        st.scored += 1
        st.safety_sum += score.safety
        st.behavioral_sum += score.behavioral
        st.sar_sum += score.sar


class _Scoring(CandidateScorer):
    """The run's candidate scorer, its calls counted as candidate scoring (not as the target's)."""

    def __init__(self, scorer: CandidateScorer):
        self.scorer = scorer

    async def score(self, scenario: Scenario, prompt: Prompt, response: str) -> ScoreResult:
        with in_role("scorer"):
            return await self.scorer.score(scenario, prompt, response)

    def describe(self) -> dict[str, Any]:
        return self.scorer.describe()


async def run_all(coros: list[Coroutine[Any, Any, None]]) -> None:
    """Run ``coros`` as tasks; the first to fail cancels the rest, and its exception is raised once every
    task has ended (what ``asyncio.TaskGroup`` does, without the exception group, on Python 3.10 too).
    Cancelling the caller cancels them all and waits for them."""
    tasks: list[asyncio.Future[None]] = []

    async def guarded(coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except BaseException:  # cancel the others at once: a task waiting for a call slot would only start it
            for t in tasks:
                if t is not asyncio.current_task():
                    t.cancel()
            raise

    tasks.extend(asyncio.ensure_future(guarded(c)) for c in coros)
    if not tasks:
        return
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in tasks:  # in start order, among those that ended before the cancelling: the failure itself
        if t in done and not t.cancelled() and t.exception() is not None:
            raise t.exception()  # type: ignore[misc]


def _models(judge: Judge | JudgePanel) -> list[Model]:
    return [j.model for j in judge.judges] if isinstance(judge, JudgePanel) else [judge.model]


def _member_records(
    run: RunDir, panel: JudgePanel, done: ResumeState, retry_unscored: bool
) -> dict[str, dict[str, JudgmentRecord]]:
    """The panel members' latest judgments of the answers still to judge that need no new call: sample id →
    member key → record (an unscored one is dropped when it is to be judged again, as a lone judge's is)."""
    keys = {j.key() for j in panel.judges}
    out: dict[str, dict[str, JudgmentRecord]] = {}
    for j in run.judgments():
        if j.judge_key in keys and j.sample_id in done.to_judge:
            out.setdefault(j.sample_id, {})[j.judge_key] = j
    for records in out.values():
        for key in [k for k, j in records.items() if _judge_again(j, retry_unscored)]:
            del records[key]
    return out


def _outcome_of(record: JudgmentRecord) -> JudgeOutcome:
    """A recorded judgment as the judge's outcome (what a panel combines)."""
    return JudgeOutcome(
        status=record.status,
        verdicts=record.verdicts,
        unscored_reason=record.unscored_reason,
        call_failed=record.call_failed,
        attempts=record.attempts,
        calls=record.calls,
        cached_calls=record.cached_calls,
        prompt_tokens=record.usage.prompt_tokens,
        completion_tokens=record.usage.completion_tokens,
    )


def _judge_again(j: JudgmentRecord, retry_unscored: bool) -> bool:
    """Judge a generation again: always when the judge could not be reached, when asked for any unscored one."""
    return j.status == "unscored" and (j.call_failed or retry_unscored)


def _with_generation_defaults(settings: ModelSettings) -> ModelSettings:
    """The embedded demo model generates at most EMBEDDED_MAX_TOKENS unless told otherwise (not as judge)."""
    if settings.key == LOCAL and "max_tokens" not in settings.params:
        return settings.model_copy(update={"params": {**settings.params, "max_tokens": EMBEDDED_MAX_TOKENS}})
    return settings


def _sid(scenario: Scenario, prompt: Prompt) -> str:
    return sample_id_of(scenario.key, prompt.id)


async def run_evaluation(config: RunConfig, on_progress: ProgressCallback | None = None) -> RunResult:
    """Run (or resume) the evaluation ``config`` describes and return its scores."""
    return await Evaluation(config).run(on_progress)
