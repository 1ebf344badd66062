"""Scores of a run directory, recomputed from its records (any α, either NA policy)."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from pydantic import BaseModel, Field

from ..models import Usage
from ..scoring import Metric, NAPolicy, ScoredSample, macro_average, score_sample, spec_violation_rates, subset_metrics
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
    counts: dict[str, int]
    unscored_reasons: dict[str, int] = Field(default_factory=dict)
    flags: dict[str, int] = Field(default_factory=dict)


def latest_records(run: RunDir, judge_key: str) -> tuple[dict[str, GenerationRecord], dict[str, JudgmentRecord]]:
    """The last generation per sample and the last judgment per sample by ``judge_key``."""
    gens = {g.sample_id: g for g in run.generations()}
    judged = {j.sample_id: j for j in run.judgments() if j.judge_key == judge_key}
    return gens, judged


def compute_scores(run: RunDir, manifest: Manifest, *, alpha: float | None = None,
                   na_policy: NAPolicy | None = None) -> ScoresReport:
    alpha = manifest.alpha if alpha is None else alpha
    na_policy = na_policy or manifest.na_policy  # type: ignore[assignment]
    judge_key = manifest.judge["key"]
    gens, judged = latest_records(run, judge_key)
    selection = run.read_selection() or sorted(gens)
    samples: list[ScoredSample] = []
    reasons: Counter[str] = Counter()
    flags: Counter[str] = Counter()
    pending = 0
    gen_usage, judge_usage, scorer_usage = UsageSummary(), UsageSummary(), UsageSummary()
    for sid in selection:
        g, j = gens.get(sid), judged.get(sid)
        if g is None or (g.status == "ok" and j is None):
            pending += 1
            continue
        _add_generation_usage(gen_usage, scorer_usage, g)
        flags.update(g.flags)
        if j is not None:
            _add_usage(judge_usage, j.usage, j.calls, j.cached_calls)
        samples.append(_scored(g, j, manifest, alpha, na_policy, reasons))
    per_scenario = {}
    for key in manifest.selection.scenarios:
        per_scenario[key] = subset_metrics([s for s in samples if s.scenario == key])
    for u in (gen_usage, judge_usage, scorer_usage):
        _finish(u)
    n_scored = sum(s.score is not None for s in samples)
    return ScoresReport(
        alpha=alpha, na_policy=na_policy, model=manifest.model.get("key", ""), method=manifest.method["name"],
        judge=manifest.judge["model"].get("key", ""), judge_key=judge_key, judge_mode=manifest.judge["mode"],
        data_source=manifest.data.source, overall=macro_average(per_scenario), pooled=subset_metrics(samples),
        scenarios=per_scenario, spec_violations=spec_violation_rates(samples),
        usage={"generation": gen_usage, "judge": judge_usage, "scorer": scorer_usage},
        counts={"selected": len(selection), "scored": n_scored, "unscored": len(samples) - n_scored, "pending": pending},
        unscored_reasons=dict(reasons.most_common()), flags=dict(flags),
    )


def _scored(g: GenerationRecord, j: JudgmentRecord | None, manifest: Manifest, alpha: float,
            na_policy: NAPolicy, reasons: Counter[str]) -> ScoredSample:
    base: dict[str, Any] = {"scenario": g.scenario, "label": g.label}
    if g.status != "ok":
        reasons[_reason_kind(f"generation failed: {g.error}")] += 1
        return ScoredSample(**base)
    if j is None or j.status != "scored":
        reasons[_reason_kind(j.unscored_reason if j else "not judged")] += 1
        return ScoredSample(**base)
    info = manifest.data.scenarios[g.scenario]
    safety = [j.verdicts[f"S{i}"].verdict for i in range(1, info.n_safety + 1)]
    behavioral = [j.verdicts[f"B{i}"].verdict for i in range(1, info.n_behavioral + 1)]
    score = score_sample(safety, behavioral, weights=info.behavioral_weights, alpha=alpha, na_policy=na_policy)
    return ScoredSample(**base, score=score, verdicts={k: v.verdict for k, v in j.verdicts.items()})


def _reason_kind(reason: str | None) -> str:
    """Group reasons that differ only in details (counts, ids) so the summary stays short."""
    text = (reason or "unknown").split(":", 2)
    head = ":".join(text[:2]) if len(text) > 1 else text[0]
    return re.sub(r"\d+", "N", head)[:160]


def _add_generation_usage(gen: UsageSummary, scorer: UsageSummary, g: GenerationRecord) -> None:
    """The target model's usage and calls, and apart from them the candidate scorer's (Best-of-N, TPO)."""
    if not g.steps:
        _add_usage(gen, g.usage, g.calls, g.cached_calls)
        return
    target = [s for s in g.steps if s.source == "target"]
    made = sum(not s.cached for s in target)
    _add_usage(gen, g.usage, made, len(target) - made)
    scoring = [s for s in g.steps if s.source == "scorer"]
    if scoring:
        _add_usage(scorer, g.scorer_usage, g.calls - made, g.cached_calls - (len(target) - made))


def _add_usage(u: UsageSummary, usage: Usage, calls: int, cached: int) -> None:
    u.prompt_tokens += usage.prompt_tokens
    u.completion_tokens += usage.completion_tokens
    u.cached_prompt_tokens += usage.cached_prompt_tokens
    u.calls += calls
    u.cached_calls += cached
    u.samples += 1


def _finish(u: UsageSummary) -> None:
    u.avg_completion_tokens = u.completion_tokens / u.samples if u.samples else None
    u.avg_calls = (u.calls + u.cached_calls) / u.samples if u.samples else None
