"""Scores of a run directory, recomputed from its records (any α, either NA policy)."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, Field, PrivateAttr

from ..benchmark import PromptLabel
from ..models import Usage
from ..scoring import (
    LETTER_VERDICTS,
    Metric,
    NAPolicy,
    Score,
    ScoredSample,
    SpecViolations,
    macro_average,
    score_sample,
    subset_metrics,
    verdict_letters,
)
from ._costs import CallCost
from ._intervals import BootstrapSettings, SamplePoint, attach_intervals, bootstrap_settings
from ._records import GenerationRecord, JudgmentRecord, Manifest
from ._store import RunDir


class UsageSummary(BaseModel):
    """Token usage and calls summed over samples; ``calls`` were made, ``cached_calls`` came from the cache."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    calls: int = 0
    cached_calls: int = 0
    samples: int = 0
    avg_completion_tokens: float | None = None
    avg_calls: float | None = None


class CostPart(BaseModel):
    """The USD cost of one part of a run (generation, judging, candidate scoring), from its records."""

    online: float = 0.0
    batch: float = Field(0.0, description="calls answered through a provider batch, at the batch price")
    total: float = Field(0.0, description="online + batch: what the calls cost")
    saved: float = Field(0.0, description="what the cache hits would have cost online; they cost nothing")
    batched_calls: int = 0
    unpriced_calls: int = Field(0, description="calls to models without a price, counted as 0")
    samples: int = Field(0, description="samples whose records carry a cost")
    unrecorded: int = Field(0, description="samples whose records were written before costs were: left out")

    def add(self, cost: CallCost | None) -> None:
        if cost is None:
            self.unrecorded += 1
            return
        self.online += cost.online
        self.batch += cost.batch
        self.total = self.online + self.batch
        self.saved += cost.saved
        self.batched_calls += cost.batched_calls
        self.unpriced_calls += cost.unpriced_calls
        self.samples += 1


class CostReport(BaseModel):
    """What the run cost in USD (``scores.json``'s ``cost``), at the prices the run used."""

    currency: Literal["USD"] = "USD"
    total: float = Field(description="generation + judging + candidate scoring, online and batched")
    online: float
    batch: float
    saved: float = Field(description="what the calls answered from the call cache would have cost")
    generation: CostPart
    judge: CostPart
    scorer: CostPart
    prices: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="each model's rates (USD per million tokens) and their source"
    )
    unpriced: list[str] = Field(default_factory=list, description="models without a price: their calls count as 0")
    note: str | None = None


class ScoresReport(BaseModel):
    """What ``scores.json`` holds. Fractions in [0, 1]."""

    alpha: float
    na_policy: str
    model: str
    method: str
    judge: str
    judge_key: str
    judge_mode: str
    data_source: str
    overall: dict[str, Metric]
    pooled: dict[str, Metric]
    scenarios: dict[str, dict[str, Metric]]
    spec_violations: dict[str, dict[str, dict[str, float | int]]] = Field(default_factory=dict)
    usage: dict[str, UsageSummary]
    cost: CostReport | None = Field(None, description="None in a scores.json written before costs were recorded")
    counts: dict[str, int]
    unscored_reasons: dict[str, int] = Field(default_factory=dict)
    flags: dict[str, int] = Field(default_factory=dict)
    skipped_records: list[str] = Field(
        default_factory=list,
        description="broken records left out (file:line: why), their samples counted as pending; a run redoes them",
    )
    empty_scenarios: list[str] = Field(
        default_factory=list,
        description="selected scenarios without any scored sample: ``overall`` is the mean of the other scenarios only",
    )
    overall_note: str | None = Field(None, description="why ``overall`` does not cover every selected scenario")
    bootstrap: BootstrapSettings | None = Field(
        None,
        description="how the metrics' ``*_ci`` intervals were computed (resamples, seed, confidence, strata); "
        "None in a scores.json written before intervals existed",
    )
    _points: dict[str, SamplePoint] = PrivateAttr(default_factory=dict)
    _selected: frozenset[str] = PrivateAttr(default_factory=frozenset)

    def sample_sar(self) -> dict[str, tuple[str, float]]:
        """Scored sample id → (scenario, SAR), for the scores computed here (not read back from scores.json)."""
        return {k: (p.scenario, p.sar) for k, p in self._points.items()}

    def sample_points(self) -> dict[str, SamplePoint]:
        """Scored sample id → its scenario, label, scores and verdict letters (computed here, not read back)."""
        return dict(self._points)

    def selected_ids(self) -> frozenset[str]:
        """The sample ids the run selected (empty when read back from scores.json)."""
        return self._selected


def latest_records(run: RunDir, judge_key: str) -> tuple[dict[str, GenerationRecord], dict[str, JudgmentRecord]]:
    """The last generation per sample and the last judgment per sample by ``judge_key`` (whole records)."""
    gens = {g.sample_id: g for g in run.generations()}
    judged = {j.sample_id: j for j in run.judgments() if j.judge_key == judge_key}
    return gens, judged


def _tokens(u: Usage) -> tuple[int, int, int]:
    return (u.prompt_tokens, u.completion_tokens, u.cached_prompt_tokens)


class _Gen(NamedTuple):
    """What scoring needs of a generation record: a few numbers, not its texts."""

    error: str | None
    scenario: str
    label: PromptLabel
    flags: tuple[str, ...]
    usage: tuple[int, int, int]
    calls: int
    cached_calls: int
    scorer: tuple[tuple[int, int, int], int, int] | None
    cost: CallCost | None = None
    scorer_cost: CallCost | None = None


class _Judged(NamedTuple):
    scored: bool
    verdicts: str  # one letter per spec, S1..Sn then B1..Bm: Y, N or A (NA)
    reason: str | None
    usage: tuple[int, int, int]
    calls: int
    cached_calls: int
    cost: CallCost | None = None


def _summaries(run: RunDir, manifest: Manifest, judge_key: str) -> tuple[dict[str, _Gen], dict[str, _Judged]]:
    """The latest generation and judgment of each sample, summarised as they stream past: memory grows
    by a small tuple per sample, not by whole records."""
    gens = {g.sample_id: _gen_summary(g) for g in run.generations()}
    judged = {j.sample_id: _judged_summary(j, manifest) for j in run.judgments() if j.judge_key == judge_key}
    return gens, judged


def _gen_summary(g: GenerationRecord) -> _Gen:
    """The target model's usage and calls, and apart from them the candidate scorer's (Best-of-N, TPO)."""
    error = None if g.status == "ok" else f"generation failed: {g.error}"
    base: dict[str, Any] = dict(
        error=error,
        scenario=g.scenario,
        label=g.label,
        flags=tuple(g.flags),
        usage=_tokens(g.usage),
        cost=g.cost,
        scorer_cost=g.scorer_cost,
    )
    if not g.steps:
        return _Gen(**base, calls=g.calls, cached_calls=g.cached_calls, scorer=None)
    target = [s for s in g.steps if s.source == "target" and s.status != "skipped"]  # a skipped step made no call
    made = sum(not s.cached for s in target)
    scorer = None
    if any(s.source == "scorer" for s in g.steps):
        scorer = (_tokens(g.scorer_usage), g.calls - made, g.cached_calls - (len(target) - made))
    return _Gen(**base, calls=made, cached_calls=len(target) - made, scorer=scorer)


def _judged_summary(j: JudgmentRecord, manifest: Manifest) -> _Judged:
    letters = ""
    if j.status == "scored":
        ids = manifest.data.scenarios[j.scenario].spec_ids()
        letters = verdict_letters(j.verdicts[k].verdict for k in ids)
    return _Judged(j.status == "scored", letters, j.unscored_reason, _tokens(j.usage), j.calls, j.cached_calls, j.cost)


def compute_scores(
    run: RunDir,
    manifest: Manifest,
    *,
    alpha: float | None = None,
    na_policy: NAPolicy | None = None,
    bootstrap: int | None = None,
    seed: int | None = None,
) -> ScoresReport:
    """The run's scores from its records. Every metric gets a bootstrap interval over prompts (``bootstrap``
    resamples, default 2,000, 0 for none; ``seed`` fixed by default, so the intervals are reproducible)."""
    settings = bootstrap_settings(bootstrap, seed)
    alpha = manifest.alpha if alpha is None else alpha
    na_policy = na_policy or manifest.na_policy
    judge_key = manifest.judge["key"]
    run.use_manifest(manifest)
    gens, judged = _summaries(run, manifest, judge_key)
    selection = run.selected(gens)
    samples: list[ScoredSample] = []
    reasons: Counter[str] = Counter()
    flags: Counter[str] = Counter()
    violations = SpecViolations()
    points: dict[str, SamplePoint] = {}
    pending = 0
    gen_usage, judge_usage, scorer_usage = UsageSummary(), UsageSummary(), UsageSummary()
    gen_cost, judge_cost, scorer_cost = CostPart(), CostPart(), CostPart()
    for sid in selection:
        g, j = gens.get(sid), judged.get(sid)
        if g is not None:  # paid for, finished or not (a run stopped by its budget leaves answers to judge)
            gen_cost.add(g.cost)
            if g.scorer is not None or g.scorer_cost is not None:
                scorer_cost.add(g.scorer_cost)
        if j is not None:
            judge_cost.add(j.cost)
        if g is None or (g.error is None and j is None):
            pending += 1
            continue
        _add_usage(gen_usage, g.usage, g.calls, g.cached_calls)
        if g.scorer is not None:
            _add_usage(scorer_usage, *g.scorer)
        flags.update(g.flags)
        if j is not None:
            _add_usage(judge_usage, j.usage, j.calls, j.cached_calls)
        sample = _scored(g, j, manifest, alpha, na_policy, reasons)._replace(sample_id=sid)
        if sample.score is not None:
            n_safety = manifest.data.scenarios[g.scenario].n_safety
            violations.add(g.scenario, n_safety, j.verdicts)  # type: ignore[union-attr]
            sc = sample.score
            points[sid] = SamplePoint(g.scenario, g.label, sc.safety, sc.behavioral, sc.sar, j.verdicts, n_safety)  # type: ignore[union-attr]
        samples.append(sample)
    per_scenario = {}
    for key in manifest.selection.scenarios:
        per_scenario[key] = subset_metrics([s for s in samples if s.scenario == key])
    for u in (gen_usage, judge_usage, scorer_usage):
        _finish(u)
    n_scored = sum(s.score is not None for s in samples)
    empty = [k for k, m in per_scenario.items() if m["full"].n_scored == 0]
    overall, pooled = macro_average(per_scenario), subset_metrics(samples)
    attach_intervals(points, per_scenario, overall, pooled, settings)
    rep = ScoresReport(
        alpha=alpha,
        na_policy=na_policy,
        model=manifest.model.get("key", ""),
        method=manifest.method["name"],
        judge=manifest.judge["model"].get("key", ""),
        judge_key=judge_key,
        judge_mode=manifest.judge["mode"],
        data_source=manifest.data.source,
        overall=overall,
        pooled=pooled,
        scenarios=per_scenario,
        spec_violations=violations.rates(),
        usage={"generation": gen_usage, "judge": judge_usage, "scorer": scorer_usage},
        cost=cost_report(manifest, gen_cost, judge_cost, scorer_cost),
        counts={
            "selected": len(selection),
            "scored": n_scored,
            "unscored": len(samples) - n_scored,
            "pending": pending,
        },
        unscored_reasons=dict(reasons.most_common()),
        flags=dict(flags),
        skipped_records=run.problem_lines()[:100],
        empty_scenarios=empty,
        overall_note=overall_note(empty, len(per_scenario)),
        bootstrap=settings,
    )
    rep._points = points
    rep._selected = frozenset(selection)
    return rep


def cost_report(manifest: Manifest, generation: CostPart, judge: CostPart, scorer: CostPart) -> CostReport:
    """The run's cost from its parts, the prices the manifest recorded, and what the figures leave out (dollars
    rounded to a ten-billionth, which drops the noise of adding floats)."""
    for p in (generation, judge, scorer):
        p.online, p.batch, p.saved = round(p.online, 10), round(p.batch, 10), round(p.saved, 10)
        p.total = round(p.online + p.batch, 10)
    parts = (generation, judge, scorer)
    unpriced = [key for key, p in manifest.prices.items() if not p.get("priced")]
    notes = []
    if unpriced:
        notes.append(f"unpriced, counted as $0: {', '.join(unpriced)}")
    unrecorded = max(p.unrecorded for p in parts)
    if unrecorded:
        notes.append(f"{unrecorded} samples were recorded before costs were and are left out")
    return CostReport(
        total=round(sum(p.total for p in parts), 10),
        online=round(sum(p.online for p in parts), 10),
        batch=round(sum(p.batch for p in parts), 10),
        saved=round(sum(p.saved for p in parts), 10),
        generation=generation,
        judge=judge,
        scorer=scorer,
        prices=manifest.prices,
        unpriced=unpriced,
        note="; ".join(notes) or None,
    )


def overall_note(empty: list[str], n_scenarios: int) -> str | None:
    """One line saying which scenarios ``overall`` leaves out for want of any scored sample."""
    if not empty:
        return None
    covered = n_scenarios - len(empty)
    return (
        f"overall is the mean of {covered} of {n_scenarios} scenarios: "
        f"{', '.join(empty)} {'has' if len(empty) == 1 else 'have'} no scored sample"
    )


def _scored(
    g: _Gen, j: _Judged | None, manifest: Manifest, alpha: float, na_policy: NAPolicy, reasons: Counter[str]
) -> ScoredSample:
    if g.error is not None:
        reasons[_reason_kind(g.error)] += 1
        return ScoredSample(g.scenario, g.label)
    if j is None or not j.scored:
        reasons[_reason_kind(j.reason if j else "not judged")] += 1
        return ScoredSample(g.scenario, g.label)
    info = manifest.data.scenarios[g.scenario]
    safety = [LETTER_VERDICTS[x] for x in j.verdicts[: info.n_safety]]
    behavioral = [LETTER_VERDICTS[x] for x in j.verdicts[info.n_safety :]]
    s = score_sample(safety, behavioral, weights=info.behavioral_weights, alpha=alpha, na_policy=na_policy)
    return ScoredSample(g.scenario, g.label, Score(s.safety, s.behavioral, s.sar))


def _reason_kind(reason: str | None) -> str:
    """Group reasons that differ only in details (counts, ids) so the summary stays short."""
    text = (reason or "unknown").split(":", 2)
    head = ":".join(text[:2]) if len(text) > 1 else text[0]
    return re.sub(r"\d+", "N", head)[:160]


def _add_usage(u: UsageSummary, usage: tuple[int, int, int], calls: int, cached: int) -> None:
    u.prompt_tokens += usage[0]
    u.completion_tokens += usage[1]
    u.cached_prompt_tokens += usage[2]
    u.calls += calls
    u.cached_calls += cached
    u.samples += 1


def _finish(u: UsageSummary) -> None:
    u.avg_completion_tokens = u.completion_tokens / u.samples if u.samples else None
    u.avg_calls = (u.calls + u.cached_calls) / u.samples if u.samples else None
