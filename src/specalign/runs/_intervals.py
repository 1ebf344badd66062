"""Uncertainty of scores: bootstrap intervals over prompts, paired differences between runs, per-spec exact tests.

Every interval comes from a percentile bootstrap over prompts, stratified by scenario: a replicate draws each
scenario's prompts with replacement from that scenario only, as many as it has, so every replicate keeps the
benchmark's design, and the overall score (the mean of the scenario means) is recomputed from the same replicate
as the scenario scores. The unsafe and safe subsets are bootstrapped the same way over their own prompts.
Resampling is vectorised: a replicate is a row of an index matrix, never a Python loop.

Small strata. The plain bootstrap of a mean of n prompts has (n − 1)/n times the variance that the standard
error estimates, which matters with a few prompts per scenario (at n = 2, half). Each stratum's replicate
deviations from its sample mean are therefore scaled by √(n / (n − 1)) (the rescaled bootstrap for stratified
samples, after Rao and Wu), so that the intervals' spread matches the standard errors'. A scenario with a single
scored prompt carries no information on its own spread: such scenarios are resampled together as one stratum
(collapsed strata) and get no interval of their own.

A comparison pairs the two runs' scores prompt by prompt over the prompts both scored: the difference of
their means is the mean of the per-prompt differences, so the paired bootstrap resamples those differences.
Its p-value is the two-sided percentile-bootstrap one, ``2 × min(#replicates ≤ 0 + 1, #replicates ≥ 0 + 1) /
(resamples + 1)``, at most 1: below 1 − confidence when the percentile interval leaves 0 out (up to ties and
rounding). Identical runs get a zero-width interval at 0 and p = 1.

Per-spec violation rates of two runs are compared with the exact McNemar test: of the prompts scored in both,
those where only this run violated the spec against those where only the baseline did, a two-sided exact
binomial test with p = ½ on these discordant pairs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from pydantic import BaseModel, Field

from ..benchmark import PromptLabel, spec_id
from ..scoring import SUBSETS, Metric

#: resamples when none is asked for; 0 turns intervals off
DEFAULT_RESAMPLES = 2000
#: the generator's seed when none is asked for: every interval is reproducible as it stands
DEFAULT_SEED = 20240917
DEFAULT_CONFIDENCE = 0.95
#: draws per block of replicates (8 bytes each, a few times over), so large runs do not allocate gigabytes
_BLOCK = 500_000
#: a resample count matrix this small (resamples × prompts; 8 bytes each) is kept for the next run over the
#: same prompts
_KEEP = 4_000_000
METRICS: tuple[str, ...] = ("safety", "behavioral", "sar")
#: the key of the stratum that holds the prompts of every single-prompt stratum
COLLAPSED = "\x00collapsed"


class BootstrapSettings(BaseModel):
    """How the intervals were computed: what ``scores.json`` and a comparison record next to them."""

    resamples: int = Field(DEFAULT_RESAMPLES, ge=0, description="bootstrap resamples; 0: no intervals")
    seed: int = Field(DEFAULT_SEED, description="numpy.random.default_rng seed")
    confidence: float = Field(DEFAULT_CONFIDENCE, gt=0, lt=1)
    method: str = Field(
        "percentile, rescaled", description="percentiles of the bootstrap distribution; deviations × √(n/(n−1))"
    )
    strata: str = Field(
        "scenario", description="prompts are resampled within their scenario (within the subset for unsafe, safe)"
    )
    unit: str = Field("prompt", description="what is resampled")


def bootstrap_settings(resamples: int | None = None, seed: int | None = None) -> BootstrapSettings:
    """The settings for ``resamples`` and ``seed``, defaults where None."""
    return BootstrapSettings(
        resamples=DEFAULT_RESAMPLES if resamples is None else resamples, seed=DEFAULT_SEED if seed is None else seed
    )


class SamplePoint(NamedTuple):
    """A scored sample as the intervals and paired tests need it."""

    scenario: str
    label: PromptLabel
    safety: float
    behavioral: float
    sar: float
    verdicts: str = ""  # verdict letters, S1..Sn then B1..Bm (scoring.verdict_letters)
    n_safety: int = 0


# -- the engine: stratified resampling, vectorised -------------------------------------------------------------------


class Strata:
    """Prompts sorted into strata: ``codes[i]`` is prompt i's stratum, ``counts[c]`` the size of stratum c,
    ``keys[c]`` its key. Strata are numbered in the sorted order of their keys, so the numbering (and with it
    every replicate) depends only on the prompts, not on the order they came in. With ``collapse``, the
    prompts of every stratum that has only one go into one stratum, keyed :data:`COLLAPSED` (last)."""

    def __init__(self, keys: Sequence[str], *, collapse: bool = True):
        sizes = Counter(keys)
        single = {k for k, n in sizes.items() if n == 1} if collapse else set()
        if len(single) < 2:
            single = set()
        self.collapsed: frozenset[str] = frozenset(single)
        own = [COLLAPSED if k in single else k for k in keys]
        self.keys: list[str] = sorted(set(own) - {COLLAPSED}) + ([COLLAPSED] if single else [])
        index = {k: c for c, k in enumerate(self.keys)}
        self.codes = np.array([index[k] for k in own], dtype=np.intp)
        self.counts = np.bincount(self.codes, minlength=len(self.keys))


class Resampled(NamedTuple):
    """Stratum sums of a stratified bootstrap. Kept as deviations from an anchor per stratum (its first value):
    a stratum whose values are all equal has deviations exactly 0, so what depends on it alone has exactly
    zero width."""

    deviations: np.ndarray  # (resamples, strata, k): each stratum's sum of (value − anchor) over a replicate's draws
    original: np.ndarray  # (strata, k): the same over the sample itself
    anchor: np.ndarray  # (strata, k)
    counts: np.ndarray  # (strata,): prompts per stratum

    def scale(self) -> np.ndarray:
        """√(n/(n−1)) per stratum (1 for a stratum of one prompt, whose replicates never move)."""
        n = self.counts
        return np.sqrt(n / np.maximum(n - 1, 1))

    def sums(self) -> np.ndarray:
        """Each stratum's sum of values per replicate, rescaled, (resamples, strata, k)."""
        point = self.counts[:, None] * self.anchor + self.original
        return point[None] + self.scale()[None, :, None] * (self.deviations - self.original[None])

    def totals(self, weights: np.ndarray) -> np.ndarray:
        """Weighted totals of the strata sums, ``weights`` (strata, statistics): (resamples, statistics, k)."""
        return self.point(weights)[None] + self.shifts(weights)

    def shifts(self, weights: np.ndarray) -> np.ndarray:
        """How far each replicate's weighted totals lie from the sample's, (resamples, statistics, k): exactly 0
        for a statistic whose strata's values are all equal."""
        moved = self.scale()[None, :, None] * (self.deviations - self.original[None])  # (B, strata, k)
        return np.swapaxes(np.tensordot(moved, weights, axes=([1], [0])), 1, 2)

    def point(self, weights: np.ndarray) -> np.ndarray:
        """The same weighted totals over the sample itself: (statistics, k)."""
        return ((self.counts[:, None] * self.anchor + self.original).T @ weights).T


def resample(values: np.ndarray, strata: Strata, resamples: int, seed: int) -> Resampled:
    """Resample prompts within each stratum: each stratum's sum of ``values`` (shape (n, k)) per replicate.

    Replicate b draws, for a stratum of m prompts, m prompts uniformly with replacement from it: a row of an
    index matrix, turned into a row of counts (how often each prompt was drawn, :func:`resample_counts`), so
    that every stratum's sum in every replicate is one matrix product."""
    values = np.asarray(values, dtype=np.float64).reshape(len(strata.codes), -1)
    order = np.argsort(strata.codes, kind="stable")
    v, codes = values[order], strata.codes[order]
    n, k = v.shape
    cells = len(strata.counts)
    starts = np.concatenate(([0], np.cumsum(strata.counts)[:-1])).astype(np.intp)
    anchor = v[starts] if n else np.zeros((0, k))
    dev = v - anchor[codes]
    spread = np.zeros((n, cells * k))  # prompt i's deviations in its own stratum's k columns: counts @ spread
    for j in range(k):
        spread[np.arange(n), codes * k + j] = dev[:, j]
    original = (np.ones(n) @ spread).reshape(cells, k)
    out = np.empty((resamples, cells, k))
    b0 = 0
    for counts in resample_counts(tuple(int(c) for c in strata.counts), resamples, seed):
        out[b0 : b0 + len(counts)] = (counts @ spread).reshape(len(counts), cells, k)
        b0 += len(counts)
    return Resampled(out, original, anchor, strata.counts.astype(np.float64))


def resample_counts(sizes: tuple[int, ...], resamples: int, seed: int) -> Iterator[np.ndarray]:
    """How often each prompt is drawn, per replicate: blocks of rows of a (resamples, n) matrix, prompts in
    cell order (``sizes``: the cells' prompt counts). It depends only on ``sizes``, ``resamples`` and
    ``seed``, so runs over the same prompts (and a comparison of two of them) share one; a small one is
    kept and reused."""
    n = sum(sizes)
    if resamples * n <= _KEEP:
        yield _kept_counts(sizes, resamples, seed)
    else:
        yield from _draw_counts(sizes, resamples, seed)


@lru_cache(maxsize=4)
def _kept_counts(sizes: tuple[int, ...], resamples: int, seed: int) -> np.ndarray:
    counts = np.concatenate(list(_draw_counts(sizes, resamples, seed))) if resamples else np.zeros((0, sum(sizes)))
    counts.flags.writeable = False
    return counts


def _draw_counts(sizes: tuple[int, ...], resamples: int, seed: int) -> Iterator[np.ndarray]:
    n = sum(sizes)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.intp)
    low = np.repeat(starts, sizes)
    size = np.repeat(np.asarray(sizes, dtype=np.float64), sizes)
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK // max(n, 1))
    for b0 in range(0, resamples, block):
        rows = min(resamples, b0 + block) - b0
        draw = rng.random((rows, n))
        draw *= size
        idx = draw.astype(np.intp)  # uniform within each prompt's cell: an index matrix, one row per replicate
        idx += low
        idx += (np.arange(rows) * n)[:, None]
        yield np.bincount(idx.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float64)


def percentile_interval(replicates: np.ndarray, confidence: float = DEFAULT_CONFIDENCE) -> np.ndarray:
    """The percentile interval of each column: (2, ...) rows low and high."""
    tail = (1 - confidence) / 2
    return np.quantile(replicates, [tail, 1 - tail], axis=0)


def bootstrap_p_value(replicates: np.ndarray) -> np.ndarray:
    """Two-sided percentile-bootstrap p-value of "no difference", per column of ``replicates`` (resamples, ...):
    ``2 × min(#≤0 + 1, #≥0 + 1) / (B + 1)``, at most 1."""
    b = replicates.shape[0]
    below = (replicates <= 0).sum(axis=0)
    above = (replicates >= 0).sum(axis=0)
    return np.minimum(1.0, 2 * (np.minimum(below, above) + 1) / (b + 1))


def mcnemar_exact(worse: np.ndarray | Sequence[int], better: np.ndarray | Sequence[int]) -> np.ndarray:
    """Exact McNemar p-values: two-sided binomial test (p = ½) of ``worse`` successes in ``worse + better``
    discordant pairs, elementwise; 1 where there is no discordant pair. Equals ``scipy.stats.binomtest``'s."""
    from scipy.special import bdtr  # noqa: PLC0415  (the binomial CDF; scipy.stats takes three times as long to import)

    w, b = np.asarray(worse, dtype=np.int64), np.asarray(better, dtype=np.int64)
    n = w + b
    p = 2 * bdtr(np.minimum(w, b), n, 0.5)
    return np.where(n == 0, 1.0, np.minimum(p, 1.0))


def _pair(a: np.ndarray) -> list[float]:
    return [float(a[0]), float(a[1])]


# -- means over scenarios, with their replicates -------------------------------------------------------------------

#: keys of :func:`stratified_means`'s results besides the scenarios'
OVERALL, POOLED = "\x00overall", "\x00pooled"


def stratified_means(
    scenarios: Sequence[str], values: np.ndarray, settings: BootstrapSettings
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Means of ``values`` (n, k) per scenario, their mean (key :data:`OVERALL`, the macro mean) and the mean
    of all (key :data:`POOLED`); and how far each replicate of one bootstrap stratified by scenario puts each
    of them from the sample's value, (resamples, k): add them to the estimate for the replicates. A scenario
    of one prompt has no replicates of its own; there are none at all for a single prompt or without
    resamples. (A lone scenario of one prompt beside larger ones adds nothing to the overall's spread.)"""
    values = np.asarray(values, dtype=np.float64).reshape(len(scenarios), -1)
    names = sorted(set(scenarios))
    by = np.array([names.index(s) for s in scenarios]) if scenarios else np.zeros(0, dtype=np.intp)
    sizes = np.bincount(by, minlength=len(names))
    means = np.vstack([values[by == j].mean(axis=0) for j in range(len(names))])
    points = {name: means[j] for j, name in enumerate(names)}
    points[OVERALL], points[POOLED] = means.mean(axis=0), values.mean(axis=0)
    if settings.resamples <= 0 or not len(values):
        return points, {}
    strata = Strata(list(scenarios))
    if strata.counts.max() < 2:  # a single prompt: nothing to resample
        return points, {}
    drawn = resample(values, strata, settings.resamples, settings.seed)
    own = [k for k in strata.keys if k != COLLAPSED and sizes[names.index(k)] > 1]
    weights = np.zeros((len(strata.keys), len(own) + 2))
    for c, key in enumerate(strata.keys):
        n = 1 if key == COLLAPSED else sizes[names.index(key)]  # every collapsed scenario has one prompt
        weights[c, len(own)] = 1 / (len(names) * n)  # the mean of scenario means
        weights[c, len(own) + 1] = 1 / len(values)
        if key in own:
            weights[c, own.index(key)] = 1 / n
    shifts = drawn.shifts(weights)  # (B, statistics, k)
    out = {key: shifts[:, g] for g, key in enumerate(own)}
    out[OVERALL], out[POOLED] = shifts[:, len(own)], shifts[:, len(own) + 1]
    return points, out


# -- one run: an interval for every score ----------------------------------------------------------------------------


def attach_intervals(
    points: Mapping[str, SamplePoint],
    scenarios: dict[str, dict[str, Metric]],
    overall: dict[str, Metric],
    pooled: dict[str, Metric],
    settings: BootstrapSettings,
) -> None:
    """Set ``safety_ci``, ``behavioral_ci`` and ``sar_ci`` of every metric, from a bootstrap stratified by
    scenario of ``points`` (sample id → scored sample) per subset: per scenario (not for a scenario with one
    scored prompt in the subset), overall (the mean of the scenarios that have scored prompts in the subset,
    as :func:`specalign.scoring.macro_average`) and pooled."""
    if settings.resamples <= 0 or not points:
        return
    ids = sorted(points)
    for subset in SUBSETS:
        chosen = [i for i in ids if subset == "full" or points[i].label == subset]
        if not chosen:
            continue
        values = np.array([[points[i].safety, points[i].behavioral, points[i].sar] for i in chosen])
        _, shifts = stratified_means([points[i].scenario for i in chosen], values, settings)
        for scenario, metrics in scenarios.items():
            if scenario in shifts:
                _set_ci(metrics[subset], shifts[scenario], settings)
        if shifts:
            _set_ci(overall[subset], shifts[OVERALL], settings)
            _set_ci(pooled[subset], shifts[POOLED], settings)


def _set_ci(metric: Metric, shifts: np.ndarray, settings: BootstrapSettings) -> None:
    """The metric's intervals: its own values plus the percentiles of the replicates' shifts (so that an
    interval of all-equal samples is exactly [value, value]), within [0, 1] (rescaling may overshoot)."""
    tails = percentile_interval(shifts, settings.confidence)  # (2, 3)
    for j, name in enumerate(METRICS):
        v = getattr(metric, name)
        if v is not None:
            setattr(metric, f"{name}_ci", [min(max(v + float(t), 0.0), 1.0) for t in tails[:, j]])


# -- two runs: paired differences ------------------------------------------------------------------------------------


class PairedDelta(BaseModel):
    """A run's scores minus the baseline's over the prompts both scored, with paired bootstrap intervals and
    p-values (two-sided, "no difference"). Fractions: ``delta_sar`` 0.05 is 5 SAR points. No interval for a
    scenario with one shared prompt."""

    n: int = Field(description="prompts scored in both runs that the difference is over")
    delta_sar: float
    delta_sar_ci: list[float] | None = None
    p_value: float | None = Field(None, description="of ΔSAR")
    delta_safety: float
    delta_safety_ci: list[float] | None = None
    p_value_safety: float | None = None
    delta_behavioral: float
    delta_behavioral_ci: list[float] | None = None
    p_value_behavioral: float | None = None


def paired_deltas(
    run: Mapping[str, SamplePoint], base: Mapping[str, SamplePoint], settings: BootstrapSettings
) -> tuple[PairedDelta | None, dict[str, PairedDelta]]:
    """``run`` minus ``base`` over the prompts both scored: overall (the mean over scenarios of each
    scenario's mean difference) and per scenario. (None, {}) when they share no prompt."""
    ids = sorted(run.keys() & base.keys())
    if not ids:
        return None, {}
    diffs = np.array(
        [
            [run[i].safety - base[i].safety, run[i].behavioral - base[i].behavioral, run[i].sar - base[i].sar]
            for i in ids
        ]
    )
    scenarios = [run[i].scenario for i in ids]
    points, shifts = stratified_means(scenarios, diffs, settings)
    n_of = Counter(scenarios)
    per = {s: _delta(n_of[s], points[s], shifts.get(s), settings) for s in sorted(n_of)}
    return _delta(len(ids), points[OVERALL], shifts.get(OVERALL), settings), per


def _delta(n: int, point: np.ndarray, shifts: np.ndarray | None, settings: BootstrapSettings) -> PairedDelta:
    d = PairedDelta(n=n, delta_safety=float(point[0]), delta_behavioral=float(point[1]), delta_sar=float(point[2]))
    if shifts is None:
        return d
    ci = np.clip(point[None] + percentile_interval(shifts, settings.confidence), -1.0, 1.0)
    p = bootstrap_p_value(point[None] + shifts)
    d.delta_safety_ci, d.delta_behavioral_ci, d.delta_sar_ci = (_pair(ci[:, j]) for j in range(3))
    d.p_value_safety, d.p_value_behavioral, d.p_value = (float(p[j]) for j in range(3))
    return d


class SpecDelta(BaseModel):
    """One spec's violation rate in a run against the baseline's, over the prompts both scored."""

    n: int = Field(description="prompts scored in both runs")
    violation_rate: float = Field(description="share of them this run violates the spec on (NO)")
    baseline_rate: float
    delta: float = Field(description="violation_rate − baseline_rate")
    worse: int = Field(description="prompts violated here and not in the baseline")
    better: int = Field(description="prompts violated in the baseline and not here")
    p_value: float = Field(description="exact McNemar test on the discordant prompts (worse against better)")


def spec_deltas(run: Mapping[str, SamplePoint], base: Mapping[str, SamplePoint]) -> dict[str, dict[str, SpecDelta]]:
    """Per scenario and spec id: the violation rates of ``run`` and ``base`` over the prompts both scored,
    and the exact McNemar test of their difference. Prompts whose specs differ between the runs (other data
    versions) are left out."""
    by_scenario: dict[str, list[str]] = {}
    for i in sorted(run.keys() & base.keys()):
        r, b = run[i], base[i]
        if r.verdicts and len(r.verdicts) == len(b.verdicts) and r.n_safety == b.n_safety:
            by_scenario.setdefault(r.scenario, []).append(i)
    out: dict[str, dict[str, SpecDelta]] = {}
    for scenario, ids in sorted(by_scenario.items()):
        here = _violations(run[i].verdicts for i in ids)
        there = _violations(base[i].verdicts for i in ids)
        worse, better = (here & ~there).sum(axis=0), (~here & there).sum(axis=0)
        p = mcnemar_exact(worse, better)
        rate, base_rate = here.mean(axis=0), there.mean(axis=0)
        n_s = run[ids[0]].n_safety
        out[scenario] = {
            (spec_id("safety", k + 1) if k < n_s else spec_id("behavioral", k - n_s + 1)): SpecDelta(
                n=len(ids),
                violation_rate=float(rate[k]),
                baseline_rate=float(base_rate[k]),
                delta=float(rate[k] - base_rate[k]),
                worse=int(worse[k]),
                better=int(better[k]),
                p_value=float(p[k]),
            )
            for k in range(here.shape[1])
        }
    return out


def _violations(letters: Iterable[str]) -> np.ndarray:
    """Samples × specs, True where the verdict is NO."""
    rows = [np.frombuffer(x.encode("ascii"), dtype=np.uint8) for x in letters]
    return np.vstack(rows) == ord("N")


def spans_zero(ci: Sequence[float] | None) -> bool:
    """Whether an interval of a difference contains 0 (the difference is within noise)."""
    return ci is not None and ci[0] <= 0 <= ci[1]
