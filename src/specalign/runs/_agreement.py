"""Judge agreement: how far two or more judges agree on the same answers (``specalign agreement``).

An *item* is one spec of one judged answer; a judge rates it ``YES``, ``NO`` or ``NA``. Agreement is computed
per pair of judges over the items both rated (Cohen's κ, percent agreement, the 3 × 3 confusion matrix) and
over all judges at once (Krippendorff's α, nominal). The kernel (:func:`agreement_stats`, :func:`cohen_kappa`,
:func:`krippendorff_alpha`, :func:`rank_correlation`) takes plain per-judge verdict tables, so that judge panels
can reuse it; :func:`judge_agreement` reads run directories into such tables.

Conventions (docs/report.md, "Judge agreement"):
- κ is undefined (``None``, with the reason in ``kappa_undefined``) when the two judges share no item, or when
  both gave every shared item one and the same label: expected agreement is then 1 and κ is 0/0. α likewise
  (``alpha_undefined``) when no item has two ratings or every rating is one label.
- with more than two judges ``kappa`` is the mean of the pairs' defined κ (Light's κ) and
  ``percent_agreement`` the mean of the pairs' agreements; ``pairs`` holds each pair's values.
- intervals: a percentile bootstrap over *clusters* (the samples: every spec of one answer is drawn together),
  seeded. Per pair, a clusters × 9 matrix of confusion counts times a resamples × clusters matrix of draw
  counts gives every resample's confusion matrix at once; a resample whose κ is undefined is left out of
  κ's percentiles and counted in ``kappa_ci_dropped``.
- people: the labels of ``specalign review RUN --label`` (``labels.jsonl``) are raters named ``human:NAME``
  beside the judges.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from itertools import combinations
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from ..benchmark import PromptLabel
from ..errors import InputError, RunDirError
from ..scoring import (
    LETTER_VERDICTS,
    NAPolicy,
    Score,
    ScoredSample,
    macro_average,
    score_sample,
    subset_metrics,
    verdict_letters,
)
from ._compare import non_default_params
from ._intervals import BootstrapSettings, bootstrap_settings, percentile_interval, resample_counts
from ._labels import current_labels, rater_name, read_labels
from ._records import Manifest, ScenarioInfo
from ._store import RunDir

#: the verdicts a judge gives one spec, in the order confusion matrices list them
LABELS: tuple[str, ...] = ("YES", "NO", "NA")
#: how many sample ids a contested spec lists
MAX_LISTED_SAMPLES = 20
#: how many skipped samples the report names one by one
MAX_LISTED_SKIPPED = 100

Row = tuple[str | None, ...]  # one item: each judge's verdict, None where that judge did not rate it
#: a verdict's code in the bootstrap's count matrices (-1: not rated)
_CODE: dict[str | None, int] = {None: -1, "YES": 0, "NO": 1, "NA": 2}


# -- the kernel: per-judge verdict tables ----------------------------------------------------------------------------


class PairAgreement(BaseModel):
    """Two judges over the items both rated."""

    judges: tuple[str, str]
    n: int = Field(description="items both judges rated")
    percent_agreement: float | None = Field(description="share of those items given the same verdict")
    kappa: float | None = Field(description="Cohen's κ; None when undefined (see kappa_undefined)")
    kappa_undefined: str | None = None
    confusion: dict[str, dict[str, int]] = Field(
        description="first judge's verdict → second judge's verdict → items (YES, NO, NA)"
    )
    percent_agreement_ci: list[float] | None = Field(None, description="95% bootstrap interval over samples")
    kappa_ci: list[float] | None = Field(None, description="95% bootstrap interval over samples (defined κ only)")
    kappa_ci_dropped: int | None = Field(
        None, description="resamples whose κ was undefined, left out of kappa_ci (None: no interval computed)"
    )


class AgreementStats(BaseModel):
    """Agreement over a set of items: every pair of judges, and all judges together."""

    n_items: int = Field(description="items rated by two judges or more")
    percent_agreement: float | None = Field(description="mean over the pairs of judges that share an item")
    kappa: float | None = Field(description="Cohen's κ (two judges) or the mean of the pairs' defined κ (more)")
    kappa_undefined: str | None = None
    krippendorff_alpha: float | None = Field(description="nominal, over all judges; None when undefined")
    alpha_undefined: str | None = None
    unanimous: float | None = Field(description="share of the items on which every judge that rated them agrees")
    percent_agreement_ci: list[float] | None = Field(None, description="two judges: the pair's interval")
    kappa_ci: list[float] | None = Field(None, description="two judges: the pair's interval")
    kappa_ci_dropped: int | None = None
    pairs: list[PairAgreement] = Field(default_factory=list)


def confusion_matrix(first: Iterable[str | None], second: Iterable[str | None]) -> dict[str, dict[str, int]]:
    """Counts of (first judge's verdict, second judge's verdict) over the positions both rated (not None)."""
    counts = Counter((a, b) for a, b in zip(first, second, strict=True) if a is not None and b is not None)
    _check_labels(label for pair in counts for label in pair)
    return {a: {b: counts[(a, b)] for b in LABELS} for a in LABELS}


def cohen_kappa(confusion: Mapping[str, Mapping[str, int]]) -> tuple[float | None, str | None]:
    """Cohen's κ of a square confusion matrix (label → label → count): (κ, None), or (None, why undefined).

    κ = (p_o − p_e) / (1 − p_e), p_o the observed agreement, p_e = Σ_k p(first = k) · p(second = k). Undefined
    with no item, and when p_e = 1: both judges gave every item the same single label (then p_o = 1 too)."""
    labels = list(confusion)
    n = sum(confusion[a][b] for a in labels for b in labels)
    if n == 0:
        return None, "no item rated by both judges"
    rows = {k: sum(confusion[k][b] for b in labels) for k in labels}
    cols = {k: sum(confusion[a][k] for a in labels) for k in labels}
    single = [k for k in labels if rows[k] == n and cols[k] == n]
    if single:
        return None, f"both judges gave all {n} items the same verdict ({single[0]}): expected agreement is 1, κ is 0/0"
    observed = sum(confusion[k][k] for k in labels) / n
    expected = sum(rows[k] * cols[k] for k in labels) / (n * n)
    return (observed - expected) / (1 - expected), None


def krippendorff_alpha(rows: Iterable[Sequence[str | None]]) -> tuple[float | None, str | None]:
    """Krippendorff's α (nominal) of items × judges verdicts (None: not rated), with the ``krippendorff``
    package: (α, None), or (None, why undefined): no item rated twice, or one label throughout."""
    counts = []
    for row in rows:
        rated = [v for v in row if v is not None]
        if len(rated) >= 2:
            _check_labels(rated)
            counts.append([rated.count(k) for k in LABELS])
    if not counts:
        return None, "no item rated by two judges"
    used = [k for i, k in enumerate(LABELS) if any(c[i] for c in counts)]
    if len(used) == 1:
        return None, f"every judge gave every item the same verdict ({used[0]}): expected disagreement is 0, α is 0/0"
    import krippendorff  # noqa: PLC0415  (numpy: loaded only when agreement is computed)

    return float(
        krippendorff.alpha(value_counts=counts, value_domain=list(range(len(LABELS))), level_of_measurement="nominal")
    ), None


def agreement_stats(
    tables: Mapping[str, Mapping[Hashable, str]],
    *,
    clusters: Mapping[Hashable, Hashable] | None = None,
    bootstrap: BootstrapSettings | None = None,
) -> AgreementStats:
    """Agreement of judges from their verdict tables: judge name → item → ``YES``/``NO``/``NA``. An item a
    judge did not rate (unscored) is absent from its table; it is left out of that judge's pairs.

    With ``bootstrap``, every pair gets intervals from a bootstrap over ``clusters`` (item → its cluster,
    e.g. its sample: the items of one cluster are drawn together; each item its own cluster by default).
    Clusters are numbered in their sorted order (first-seen order when they do not sort), so that resamples
    depend on the items, not on the order they came in."""
    judges = list(tables)
    items: dict[Hashable, None] = {}
    for table in tables.values():
        items.update(dict.fromkeys(table))
    rows = [tuple(tables[j].get(item) for j in judges) for item in items]
    stats = _stats(rows, judges)
    if bootstrap is not None and bootstrap.resamples > 0 and stats.pairs and rows:
        keys = [clusters[item] if clusters is not None else item for item in items]
        distinct: list[Any] = list(dict.fromkeys(keys))
        try:
            distinct.sort()
        except TypeError:
            pass
        number = {c: i for i, c in enumerate(distinct)}
        numbered = np.fromiter((number[c] for c in keys), dtype=np.int64, count=len(keys))
        pairs = list(combinations(range(len(judges)), 2))
        [found] = group_intervals(verdict_codes(rows, len(judges)), numbered, [np.arange(len(rows))], pairs, bootstrap)
        _attach(stats, found)
    return stats


def _stats(rows: Sequence[Row], judges: Sequence[str]) -> AgreementStats:
    pairs = []
    for i, k in combinations(range(len(judges)), 2):
        confusion = confusion_matrix((r[i] for r in rows), (r[k] for r in rows))
        n = sum(sum(c.values()) for c in confusion.values())
        kappa, why = cohen_kappa(confusion)
        agreed = sum(confusion[x][x] for x in LABELS)
        pairs.append(
            PairAgreement(
                judges=(judges[i], judges[k]),
                n=n,
                percent_agreement=agreed / n if n else None,
                kappa=kappa,
                kappa_undefined=why,
                confusion=confusion,
            )
        )
    rated = [{v for v in r if v is not None} for r in rows if sum(v is not None for v in r) >= 2]
    alpha, alpha_why = krippendorff_alpha(rows)
    kappas = [p.kappa for p in pairs if p.kappa is not None]
    agreements = [p.percent_agreement for p in pairs if p.percent_agreement is not None]
    kappa_why = None
    if not pairs:
        kappa_why = "one judge: no pair to compare"
    elif not kappas:
        kappa_why = pairs[0].kappa_undefined if len(pairs) == 1 else "no pair of judges has a defined κ"
    return AgreementStats(
        n_items=len(rated),
        percent_agreement=sum(agreements) / len(agreements) if agreements else None,
        kappa=sum(kappas) / len(kappas) if kappas else None,
        kappa_undefined=kappa_why,
        krippendorff_alpha=alpha,
        alpha_undefined=alpha_why,
        unanimous=sum(len(s) == 1 for s in rated) / len(rated) if rated else None,
        pairs=pairs,
    )


_Interval = tuple[list[float] | None, list[float] | None, int]  # agreement's, κ's, resamples with κ undefined


def _attach(stats: AgreementStats, found: list[_Interval]) -> None:
    """Set each pair's intervals (none where its value is undefined), and the stats' own for a single pair."""
    for pair, (share_ci, kappa_ci, dropped) in zip(stats.pairs, found, strict=True):
        pair.percent_agreement_ci = share_ci if pair.percent_agreement is not None else None
        if pair.kappa is not None:
            pair.kappa_ci, pair.kappa_ci_dropped = kappa_ci, dropped
    if len(stats.pairs) == 1:
        [one] = stats.pairs
        stats.percent_agreement_ci, stats.kappa_ci = one.percent_agreement_ci, one.kappa_ci
        stats.kappa_ci_dropped = one.kappa_ci_dropped


def verdict_codes(rows: Sequence[Row], raters: int) -> np.ndarray:
    """Items × raters verdict codes: 0, 1, 2 for YES, NO, NA; -1 where the rater did not rate the item."""
    table = np.array(rows, dtype=object).reshape(len(rows), raters)
    codes = np.full(table.shape, -1, dtype=np.int64)
    for label, code in _CODE.items():
        if label is not None:
            codes[table == label] = code
    return codes


def group_intervals(
    codes: np.ndarray,
    clusters: np.ndarray,
    groups: Sequence[np.ndarray],
    pairs: Sequence[tuple[int, int]],
    settings: BootstrapSettings,
) -> list[list[_Interval]]:
    """For each group of items (row indices into ``codes``, items × raters, and ``clusters``, each item's
    cluster number), each pair's percentile intervals of percent agreement and κ, and how many resamples had
    an undefined κ (left out of κ's percentiles).

    The bootstrap draws clusters: a resample of a group draws as many of its clusters as it has, uniformly
    with replacement (:func:`resample_counts`, seeded), and takes all their items. Per pair, a clusters × 9
    matrix counts each cluster's (first verdict, second verdict) items; the resamples × clusters matrix of draw
    counts times it gives every resample's confusion matrix at once. Groups over the same clusters (a scenario
    and its specs) share one product. A pair with fewer than two clusters in common gets no interval."""
    out: list[list[_Interval]] = [[] for _ in groups]
    own = [np.unique(clusters[g]) for g in groups]
    batches: dict[bytes, list[int]] = {}
    for g, u in enumerate(own):
        batches.setdefault(u.tobytes(), []).append(g)
    n_p = len(pairs)
    for members in batches.values():
        universe = own[members[0]]
        n_c, width = len(universe), len(members) * n_p * 9
        flat = []
        for j, g in enumerate(members):
            at = groups[g]
            c_of = np.searchsorted(universe, clusters[at])
            for p, (i, k) in enumerate(pairs):
                a, b = codes[at, i], codes[at, k]
                both = (a >= 0) & (b >= 0)
                flat.append(c_of[both] * width + (j * n_p + p) * 9 + a[both] * 3 + b[both])
        counts = np.concatenate(flat) if flat else np.zeros(0, dtype=np.int64)
        cells = np.bincount(counts, minlength=n_c * width).reshape(n_c, width).astype(np.float64)
        shared = (cells.reshape(n_c, len(members), n_p, 9).sum(axis=3) > 0).sum(axis=0)
        totals = np.concatenate([w @ cells for w in resample_counts((n_c,), settings.resamples, settings.seed)])
        totals = totals.reshape(-1, len(members), n_p, 3, 3)
        n = totals.sum(axis=(3, 4))
        agreed = np.trace(totals, axis1=3, axis2=4)
        chance = (totals.sum(axis=4) * totals.sum(axis=3)).sum(axis=3)  # n² · p_e: exact, the counts are integers
        with np.errstate(divide="ignore", invalid="ignore"):
            share = agreed / n
            kappa = (agreed * n - chance) / (n * n - chance)
        rated = n > 0
        defined = rated & (chance < n * n)
        for j, g in enumerate(members):
            for p in range(n_p):
                if shared[j, p] < 2:
                    out[g].append((None, None, 0))
                    continue
                out[g].append(
                    (
                        _interval(share[rated[:, j, p], j, p], settings),
                        _interval(kappa[defined[:, j, p], j, p], settings),
                        int(len(n) - defined[:, j, p].sum()),
                    )
                )
    return out


def _interval(values: np.ndarray, settings: BootstrapSettings) -> list[float] | None:
    if not len(values):
        return None
    low, high = percentile_interval(values, settings.confidence)
    return [float(low), float(high)]


def _check_labels(labels: Iterable[str]) -> None:
    bad = sorted({str(x) for x in labels if x not in LABELS})
    if bad:
        raise ValueError(f"verdicts must be YES, NO or NA, got {', '.join(bad)}")


class RankCorrelation(BaseModel):
    """How two judges rank the runs by SAR: Kendall's τ (τ-b) and Spearman's ρ, with their p-values."""

    judges: tuple[str, str]
    runs: list[str] = Field(description="the runs scored under both judges, in the order of sar")
    sar: dict[str, list[float]] = Field(description="judge → each run's SAR (over its shared samples)")
    kendall_tau: float | None = None
    kendall_p: float | None = None
    spearman_rho: float | None = None
    spearman_p: float | None = None
    undefined: str | None = None


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    """Kendall's τ-b and Spearman's ρ of two score lists (scipy.stats), with p-values; undefined (None, with
    ``undefined`` saying why) with fewer than two values or when a list has a single value throughout."""
    if len(x) != len(y):
        raise ValueError(f"{len(x)} scores against {len(y)}")
    none: dict[str, Any] = {"kendall_tau": None, "kendall_p": None, "spearman_rho": None, "spearman_p": None}
    if len(x) < 2:
        return {**none, "undefined": f"needs two runs or more ({len(x)} here)"}
    if len(set(x)) == 1 or len(set(y)) == 1:
        return {**none, "undefined": "one judge gives every run the same SAR: no ranking to correlate"}
    stats = importlib.import_module("scipy.stats")  # loaded only here (and typed as Any: scipy ships no types)
    tau = stats.kendalltau(x, y)
    rho = stats.spearmanr(x, y)
    return {
        "kendall_tau": _finite(tau.statistic),
        "kendall_p": _finite(tau.pvalue),
        "spearman_rho": _finite(rho.statistic),
        "spearman_p": _finite(rho.pvalue),
        "undefined": None,
    }


def _finite(x: Any) -> float | None:
    value = float(x)
    return value if math.isfinite(value) else None


# -- run directories -------------------------------------------------------------------------------------------------


class JudgeInfo(BaseModel):
    """One rater: a judge, and what it made of the samples of the runs it judged; or a person (``kind``
    ``human``, named ``human:NAME``), whose ``scored`` samples are those with a label that counts."""

    name: str
    key: str = Field(description="the judge's key; a person's labeler name")
    kind: Literal["judge", "human"] = "judge"
    mode: str | None = None
    samples: int = Field(0, description="samples of the runs this judge judged (skipped samples left out)")
    scored: int = 0
    unscored: int = Field(0, description="judged but unscored: left out of this judge's pairs")
    not_judged: int = Field(0, description="no judgment by this judge (no label by this person): left out of its pairs")
    labels: int | None = Field(None, description="a person's labels that count (items)")
    stale_labels: int | None = Field(
        None, description="a person's labeled items whose answer has changed since: left out"
    )


class JudgeScores(BaseModel):
    """A judge's overall scores (mean over scenarios, as in the paper) over a run's shared samples."""

    safety: float | None
    behavioral: float | None
    sar: float | None
    n: int


class ScoreDifference(BaseModel):
    """First judge's score minus the second's, over the run's shared samples."""

    judges: tuple[str, str]
    safety: float | None
    behavioral: float | None
    sar: float | None


class RunAgreement(BaseModel):
    """One run (one set of generations: one generation key) and the judges that judged it."""

    label: str
    run_dirs: list[str]
    generation_key: str
    judges: list[str]
    humans: list[str] = Field(default_factory=list, description="the people who labelled this run's answers")
    samples: int = Field(description="generated samples compared (skipped ones left out)")
    skipped: int = Field(0, description="samples whose responses differ between the run's directories")
    shared: int = Field(0, description="samples scored by every judge of the run: what scores are over")
    alpha: float
    na_policy: str
    scores: dict[str, JudgeScores] = Field(default_factory=dict)
    differences: list[ScoreDifference] = Field(default_factory=list)


class RankCorrelations(BaseModel):
    """How the judges rank the runs by SAR: the mean over pairs of judges, and each pair's values."""

    n_runs: int
    kendall_tau: float | None = None
    spearman_rho: float | None = None
    undefined: str | None = None
    pairs: list[RankCorrelation] = Field(default_factory=list)


class ContestedSample(BaseModel):
    run: str
    sample_id: str
    scenario: str
    disagreement: float = Field(description="share of the sample's (spec, pair of judges) comparisons that differ")
    disagreements: int
    comparisons: int
    specs: dict[str, dict[str, str]] = Field(description="each disputed spec: judge → verdict")


class ContestedSpec(BaseModel):
    scenario: str
    spec_id: str
    n_items: int
    disagreements: int = Field(description="samples on which the judges' verdicts differ")
    percent_agreement: float | None
    kappa: float | None
    sample_ids: list[str] = Field(description=f"samples in dispute (the first {MAX_LISTED_SAMPLES})")


class SkippedSample(BaseModel):
    run: str
    sample_id: str
    reason: str


class RaterComparison(BaseModel):
    """The pairs of one kind over every item: a judge against a person, or two people."""

    n_pairs: int
    n: int = Field(description="items compared, summed over the pairs")
    percent_agreement: float | None = Field(description="mean over the pairs")
    kappa: float | None = Field(description="mean of the pairs' defined κ")
    pairs: list[PairAgreement]


class AgreementReport(BaseModel):
    """What ``specalign agreement --json`` prints."""

    judges: list[JudgeInfo] = Field(description="every rater: the judges, then the people (kind human)")
    humans: list[str] = Field(default_factory=list, description="the raters who are people: human:NAME")
    bootstrap: BootstrapSettings | None = Field(None, description="how the intervals were computed")
    judge_vs_human: RaterComparison | None = Field(None, description="each judge against each person, overall")
    human_vs_human: RaterComparison | None = Field(None, description="each pair of people, overall")
    runs: list[RunAgreement]
    overall: AgreementStats
    kinds: dict[str, AgreementStats] = Field(description="safety specs, behavioral specs")
    scenarios: dict[str, AgreementStats]
    specs: dict[str, dict[str, AgreementStats]] = Field(description="scenario → spec id → agreement")
    rank_correlation: RankCorrelations
    contested_samples: list[ContestedSample]
    contested_specs: list[ContestedSpec]
    skipped: list[SkippedSample] = Field(default_factory=list, description=f"the first {MAX_LISTED_SKIPPED}")
    warnings: list[str] = Field(default_factory=list)


class _Sample:
    """A generated sample of one run directory: what matching and scoring need, not its texts."""

    __slots__ = ("label", "response", "scenario")

    def __init__(self, scenario: str, label: PromptLabel, response: str):
        self.scenario, self.label = scenario, label
        self.response = hashlib.sha256(response.encode("utf-8", "surrogatepass")).digest()


class _Dir:
    """One run directory, read: its manifest, its selected generated samples and each judge's latest verdicts
    (letters, S1..Sn then B1..Bm; None: unscored)."""

    def __init__(self, path: str):
        rd = RunDir(path)
        if not rd.path.is_dir():
            raise RunDirError(f"{path}: no such directory")
        self.path = path
        self.manifest: Manifest = rd.read_manifest()
        gens = {g.sample_id: g for g in rd.generations()}
        self.samples = {
            sid: _Sample(g.scenario, g.label, g.response)
            for sid in rd.selected(gens)
            if (g := gens.get(sid)) is not None and g.status == "ok"
        }
        del gens
        self.judged: dict[str, dict[str, str | None]] = {}
        panels = {p["key"] for p in _described(self.manifest) if "panel" in p}
        for j in rd.judgments():
            if j.judge_key in panels:
                continue  # a panel's verdicts are its members' combined: the members are compared instead
            letters = None
            if j.status == "scored":
                ids = self.manifest.data.scenarios[j.scenario].spec_ids()
                letters = verdict_letters(j.verdicts[k].verdict for k in ids)
            self.judged.setdefault(j.judge_key, {})[j.sample_id] = letters
        self.problems: list[str] = []
        specs = {k: info.spec_ids() for k, info in self.manifest.data.scenarios.items()}
        self.human, self.stale = current_labels(
            read_labels(path, self.problems),
            {sid: s.response.hex() for sid, s in self.samples.items()},
            {sid: specs[s.scenario] for sid, s in self.samples.items()},
        )


class _Run:
    """Directories with one generation key: one run's answers, judged by each directory's judges. A sample whose
    response differs between the directories is skipped; a judge's verdicts come from the first directory that
    holds them."""

    def __init__(self, dirs: list[_Dir]):
        self.dirs = dirs
        self.label = ""
        self.items: dict[str, _Sample] = {}
        self.skipped: dict[str, str] = {}
        self.verdicts: dict[str, dict[str, str | None]] = {}  # judge key → sample id → letters (None: unscored)
        self.human: dict[str, dict[tuple[str, str], str]] = {}  # labeler → (sample id, spec) → label
        for sid in sorted({s for d in dirs for s in d.samples}):
            holders = [d for d in dirs if sid in d.samples]
            if len({d.samples[sid].response for d in holders}) > 1:
                first = holders[0]
                other = next(d for d in holders if d.samples[sid].response != first.samples[sid].response)
                self.skipped[sid] = f"the response differs between {first.path} and {other.path}"
                continue
            self.items[sid] = holders[0].samples[sid]
            for d in holders:
                for key, judged in d.judged.items():
                    if sid in judged:
                        self.verdicts.setdefault(key, {}).setdefault(sid, judged[sid])
        for d in dirs:  # a person's label of an item: from the first directory that holds one
            for who, labels in d.human.items():
                mine = self.human.setdefault(who, {})
                for item, label in labels.items():
                    if item[0] in self.items:
                        mine.setdefault(item, label)
        self.human = {who: labels for who, labels in sorted(self.human.items()) if labels}
        self.judges = list(self.verdicts)

    @property
    def raters(self) -> int:
        return len(self.judges) + len(self.human)

    def scenario_info(self, scenario: str) -> ScenarioInfo:
        return next(d.manifest.data.scenarios[scenario] for d in self.dirs if scenario in d.manifest.data.scenarios)


_Item = tuple[int, str, str, str]  # run index, sample id, scenario, spec id


def judge_agreement(
    run_dirs: Sequence[str],
    *,
    alpha: float | None = None,
    na_policy: NAPolicy | None = None,
    top: int = 10,
    bootstrap: int | None = None,
    seed: int | None = None,
) -> AgreementReport:
    """The agreement of the judges whose records ``run_dirs`` hold: one directory judged again by other judges,
    several directories over the same generations (one generation key), or several runs (other methods, other
    models), each judged by the same judges. People's labels (``labels.jsonl``) join as raters
    ``human:NAME``. Scores use each run's α and NA policy unless given; ``top``: how many contested samples
    and specs to list; ``bootstrap``: resamples for the intervals (default 2000, 0: none), ``seed`` their
    generator's seed. No model calls."""
    if not run_dirs:
        raise InputError("give one run directory or more")
    settings = agreement_bootstrap(bootstrap, seed)
    dirs: list[_Dir] = []
    seen: set[str] = set()
    warnings: list[str] = []
    for path in run_dirs:
        real = os.path.realpath(path)
        if real in seen:
            warnings.append(f"{path} is given twice: read once")
            continue
        seen.add(real)
        dirs.append(_Dir(path))
        warnings += dirs[-1].problems
    groups: dict[str, list[_Dir]] = {}
    for d in dirs:
        groups.setdefault(d.manifest.generation_key, []).append(d)
    runs = [_Run(group) for group in groups.values()]
    _label_runs(runs)
    keys, names, modes = _judges(dirs, runs)
    people = sorted({who for r in runs for who in r.human})
    if not any(r.raters >= 2 for r in runs):
        found = "; ".join(
            f"{r.label}: {', '.join([*(names[k] for k in r.judges), *map(rater_name, r.human)]) or 'no judgment'}"
            for r in runs
        )
        raise InputError(
            f"agreement needs two judges or more (or a judge and a person's labels) over the same answers, and each "
            f"run here has one at most ({found}): judge a run again with `specalign run --out DIR --judge OTHER`, "
            "give directories over the same generations, or label answers with `specalign review DIR --label`"
        )
    for r in runs:
        if r.raters < 2:
            warnings.append(
                f"run {r.label} has {'one rater only' if r.raters else 'no judgment'}: it adds nothing to the agreement"
            )
        if r.skipped:
            sid, why = next(iter(r.skipped.items()))
            warnings.append(
                f"run {r.label}: {len(r.skipped)} sample{'s' if len(r.skipped) != 1 else ''} skipped because "
                f"{why} (e.g. {sid})"
            )
        if len({(d.manifest.alpha, d.manifest.na_policy) for d in r.dirs}) > 1 and (alpha is None or na_policy is None):
            warnings.append(f"run {r.label}: its directories differ in α or NA policy; scores use {r.dirs[0].path}'s")
    for who in people:
        stale = sum(d.stale.get(who, 0) for d in dirs)
        if stale:
            warnings.append(
                f"{rater_name(who)}: {stale} labelled item{'s' if stale != 1 else ''} left out: the answer has changed "
                "since it was labelled"
            )
    judge_names = [names[k] for k in keys]
    rater_names = judge_names + [rater_name(who) for who in people]
    ratings = _ratings(runs, keys, people)
    position = {item: n for n, item in enumerate(ratings)}
    measured: list[tuple[AgreementStats, Sequence[_Item]]] = []

    def stats(items: Sequence[_Item]) -> AgreementStats:
        out = _stats([ratings[item] for item in items], rater_names)
        measured.append((out, items))
        return out

    all_items = list(ratings)
    overall = stats(all_items)
    if overall.n_items == 0:
        raise InputError(
            "no sample is scored by two judges or more: nothing to compare (the judges left the shared samples "
            "unscored, or judged different samples)"
        )
    by_kind: dict[str, list[_Item]] = {"safety": [], "behavioral": []}
    by_scenario: dict[str, list[_Item]] = {}
    by_spec: dict[tuple[str, str], list[_Item]] = {}
    for item in all_items:
        by_kind["safety" if item[3].startswith("S") else "behavioral"].append(item)
        by_scenario.setdefault(item[2], []).append(item)
        by_spec.setdefault((item[2], item[3]), []).append(item)
    specs: dict[str, dict[str, AgreementStats]] = {}
    for (scenario, spec), items in by_spec.items():
        specs.setdefault(scenario, {})[spec] = stats(items)
    kinds = {k: stats(items) for k, items in by_kind.items()}
    scenarios = {s: stats(items) for s, items in by_scenario.items()}
    if settings.resamples > 0 and len(rater_names) >= 2:
        # the bootstrap's clusters: a run's sample, numbered in sorted order
        numbers = {c: n for n, c in enumerate(sorted({(i, sid) for i, sid, _, _ in ratings}))}
        clusters = np.fromiter((numbers[item[:2]] for item in ratings), dtype=np.int64, count=len(ratings))
        at = [np.fromiter((position[x] for x in items), dtype=np.intp, count=len(items)) for _, items in measured]
        intervals = group_intervals(
            verdict_codes(list(ratings.values()), len(rater_names)),
            clusters,
            at,
            list(combinations(range(len(rater_names)), 2)),
            settings,
        )
        for (out, _), each in zip(measured, intervals, strict=True):
            _attach(out, each)
    run_infos = [_run_info(r, names, alpha, na_policy) for r in runs]
    labels = [r.label for r in runs]
    humans = [rater_name(who) for who in people]
    return AgreementReport(
        judges=_judge_infos(runs, keys, names, modes) + _human_infos(runs, dirs, people),
        humans=humans,
        bootstrap=settings,
        judge_vs_human=_comparison([p for p in overall.pairs if (p.judges[0] in humans) != (p.judges[1] in humans)]),
        human_vs_human=_comparison([p for p in overall.pairs if p.judges[0] in humans and p.judges[1] in humans]),
        runs=run_infos,
        overall=overall,
        kinds=kinds,
        scenarios=scenarios,
        specs=specs,
        rank_correlation=_rank_correlations(run_infos, judge_names),
        contested_samples=_contested_samples(ratings, labels, rater_names, top),
        contested_specs=_contested_specs(
            {k: {item: ratings[item] for item in items} for k, items in by_spec.items()}, specs, labels, top
        ),
        skipped=[SkippedSample(run=r.label, sample_id=s, reason=why) for r in runs for s, why in r.skipped.items()][
            :MAX_LISTED_SKIPPED
        ],
        warnings=warnings,
    )


def agreement_bootstrap(resamples: int | None = None, seed: int | None = None) -> BootstrapSettings:
    """The bootstrap settings of agreement intervals: defaults where None, samples as the unit."""
    base = bootstrap_settings(resamples, seed)
    return base.model_copy(
        update={
            "method": "percentile",
            "strata": "none",
            "unit": "sample: every spec of one answer is drawn together (cluster bootstrap)",
        }
    )


def _comparison(pairs: list[PairAgreement]) -> RaterComparison | None:
    if not pairs:
        return None
    kappas = [p.kappa for p in pairs if p.kappa is not None]
    shares = [p.percent_agreement for p in pairs if p.percent_agreement is not None]
    return RaterComparison(
        n_pairs=len(pairs),
        n=sum(p.n for p in pairs),
        percent_agreement=sum(shares) / len(shares) if shares else None,
        kappa=sum(kappas) / len(kappas) if kappas else None,
        pairs=pairs,
    )


def _label_runs(runs: list[_Run]) -> None:
    """Each run's label: its method and the parameters that differ from their defaults, its model as well
    when the runs' models differ, its first directory as well when that still leaves two alike."""
    methods = []
    for r in runs:
        m = r.dirs[0].manifest
        methods.append(m.method["name"] + "".join(f" {k}={json.dumps(v)}" for k, v in non_default_params(m).items()))
    models = [str(r.dirs[0].manifest.model.get("key", "")) for r in runs]
    labels = [f"{model} · {method}" for model, method in zip(models, methods, strict=True)]
    if len(set(models)) == 1:
        labels = methods
    counts = Counter(labels)
    for r, label in zip(runs, labels, strict=True):
        r.label = f"{label} ({r.dirs[0].path})" if counts[label] > 1 else label


def _judges(dirs: list[_Dir], runs: list[_Run]) -> tuple[list[str], dict[str, str], dict[str, str | None]]:
    """The judges with records, oldest first as the manifests list them (then any other), and each one's name:
    its model's key, its mode when not joint, and the start of its key when two would read alike."""
    described: dict[str, dict[str, Any]] = {}
    for d in dirs:
        for j in _described(d.manifest):
            described.setdefault(j["key"], j)
    present = {k for r in runs for k in r.judges}
    keys = [k for k in described if k in present]
    for r in runs:
        keys += [k for k in r.judges if k not in keys]
    names = {}
    for k in keys:
        j = described.get(k, {})
        model = j.get("model")
        name = str(model.get("key", "") if isinstance(model, dict) else "") or f"judge {k[:8]}"
        template = j.get("template")
        if isinstance(template, dict) and isinstance(template.get("name"), str):
            name += f" [template {template['name']}]"  # the user's own judge prompt (docs/judge.md)
        names[k] = name if j.get("mode", "joint") == "joint" else f"{name} ({j.get('mode')})"
    counts = Counter(names.values())
    modes = {k: described[k].get("mode") if k in described else None for k in keys}
    return keys, {k: f"{n} #{k[:8]}" if counts[n] > 1 else n for k, n in names.items()}, modes


def _described(manifest: Manifest) -> list[dict[str, Any]]:
    """The judges a manifest describes, oldest first: past judges, the run's judge, and a panel's members
    after the panel."""
    out = []
    for j in [*manifest.past_judges, manifest.judge]:
        out.append(j)
        panel = j.get("panel")
        if isinstance(panel, dict):
            out += [m for m in panel.get("judges", []) if isinstance(m, dict) and isinstance(m.get("key"), str)]
    return out


def _ratings(runs: list[_Run], keys: list[str], people: list[str]) -> dict[_Item, Row]:
    """Every item (a spec of a sample of a run) and each rater's verdict on it (None: not rated): the judges
    of ``keys``, then the labelers of ``people``."""
    out: dict[_Item, Row] = {}
    for i, r in enumerate(runs):
        labelled = [r.human.get(who, {}) for who in people]
        for sid, sample in r.items.items():
            letters = [r.verdicts[k].get(sid) if k in r.verdicts else None for k in keys]
            specs = r.scenario_info(sample.scenario).spec_ids()
            if all(x is None for x in letters) and not any((sid, spec) in h for h in labelled for spec in specs):
                continue
            for pos, spec in enumerate(specs):
                out[(i, sid, sample.scenario, spec)] = tuple(
                    None if x is None else LETTER_VERDICTS[x[pos]] for x in letters
                ) + tuple(h.get((sid, spec)) for h in labelled)
    return out


def _run_info(r: _Run, names: dict[str, str], alpha: float | None, na_policy: NAPolicy | None) -> RunAgreement:
    """The run, and each judge's scores over the samples every judge of the run scored."""
    manifest = r.dirs[0].manifest
    alpha = manifest.alpha if alpha is None else alpha
    na_policy = na_policy or manifest.na_policy
    shared = [sid for sid in r.items if r.judges and all(r.verdicts[k].get(sid) is not None for k in r.judges)]
    scores: dict[str, JudgeScores] = {}
    for k in r.judges:
        per: dict[str, list[ScoredSample]] = {}
        for sid in shared:
            sample, letters = r.items[sid], r.verdicts[k][sid]
            assert letters is not None
            info = r.scenario_info(sample.scenario)
            verdicts = [LETTER_VERDICTS[x] for x in letters]
            s = score_sample(
                verdicts[: info.n_safety],
                verdicts[info.n_safety :],
                weights=info.behavioral_weights,
                alpha=alpha,
                na_policy=na_policy,
            )
            per.setdefault(sample.scenario, []).append(
                ScoredSample(sample.scenario, sample.label, Score(s.safety, s.behavioral, s.sar))
            )
        full = macro_average({scenario: subset_metrics(samples) for scenario, samples in per.items()})["full"]
        scores[names[k]] = JudgeScores(safety=full.safety, behavioral=full.behavioral, sar=full.sar, n=len(shared))
    differences = [
        ScoreDifference(
            judges=(names[a], names[b]),
            **{
                m: _minus(getattr(scores[names[a]], m), getattr(scores[names[b]], m))
                for m in ("safety", "behavioral", "sar")
            },
        )
        for a, b in combinations(r.judges, 2)
    ]
    return RunAgreement(
        label=r.label,
        run_dirs=[d.path for d in r.dirs],
        generation_key=manifest.generation_key,
        judges=[names[k] for k in r.judges],
        humans=[rater_name(who) for who in r.human],
        samples=len(r.items),
        skipped=len(r.skipped),
        shared=len(shared),
        alpha=alpha,
        na_policy=na_policy,
        scores=scores,
        differences=differences,
    )


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _judge_infos(
    runs: list[_Run], keys: list[str], names: dict[str, str], modes: dict[str, str | None]
) -> list[JudgeInfo]:
    out = []
    for k in keys:
        info = JudgeInfo(name=names[k], key=k, mode=modes[k])
        for r in runs:
            if k not in r.verdicts:
                continue
            judged = r.verdicts[k]
            scored = sum(judged.get(sid) is not None for sid in r.items)
            unscored = sum(sid in judged and judged[sid] is None for sid in r.items)
            info.samples += len(r.items)
            info.scored += scored
            info.unscored += unscored
            info.not_judged += len(r.items) - scored - unscored
        out.append(info)
    return out


def _human_infos(runs: list[_Run], dirs: list[_Dir], people: list[str]) -> list[JudgeInfo]:
    out = []
    for who in people:
        info = JudgeInfo(name=rater_name(who), key=who, kind="human", labels=0)
        info.stale_labels = sum(d.stale.get(who, 0) for d in dirs)
        for r in runs:
            labels = r.human.get(who, {})
            labelled = len({sid for sid, _ in labels})
            info.samples += len(r.items)
            info.scored += labelled
            info.not_judged += len(r.items) - labelled
            info.labels = (info.labels or 0) + len(labels)
        out.append(info)
    return out


def _rank_correlations(runs: list[RunAgreement], judges: list[str]) -> RankCorrelations:
    """For each pair of judges, the correlation of the runs' SAR under one with their SAR under the other."""
    if len(runs) < 2:
        return RankCorrelations(
            n_runs=len(runs),
            undefined="one run: ranking runs needs two or more (several methods or models, each judged by the judges)",
        )
    pairs = []
    for a, b in combinations(judges, 2):
        both = [r for r in runs if _sar(r, a) is not None and _sar(r, b) is not None]
        x, y = [_sar(r, a) for r in both], [_sar(r, b) for r in both]
        pairs.append(
            RankCorrelation(
                judges=(a, b),
                runs=[r.label for r in both],
                sar={a: x, b: y},  # type: ignore[dict-item]
                **rank_correlation(x, y),  # type: ignore[arg-type]
            )
        )
    taus = [p.kendall_tau for p in pairs if p.kendall_tau is not None]
    rhos = [p.spearman_rho for p in pairs if p.spearman_rho is not None]
    why = None
    if not taus:
        why = pairs[0].undefined if len(pairs) == 1 else "no pair of judges ranks two runs or more"
    return RankCorrelations(
        n_runs=len(runs),
        kendall_tau=sum(taus) / len(taus) if taus else None,
        spearman_rho=sum(rhos) / len(rhos) if rhos else None,
        undefined=why,
        pairs=pairs,
    )


def _sar(run: RunAgreement, judge: str) -> float | None:
    s = run.scores.get(judge)
    return None if s is None else s.sar


def _contested_samples(
    ratings: dict[_Item, Row], runs: list[str], judges: list[str], top: int
) -> list[ContestedSample]:
    """The samples on which the judges disagree most: the largest share of differing (spec, pair) comparisons."""
    found: dict[tuple[int, str], ContestedSample] = {}
    for (i, sid, scenario, spec), row in ratings.items():
        rated = [(j, v) for j, v in zip(judges, row, strict=True) if v is not None]
        if len(rated) < 2:
            continue
        c = found.get((i, sid))
        if c is None:
            c = found[(i, sid)] = ContestedSample(
                run=runs[i],
                sample_id=sid,
                scenario=scenario,
                disagreement=0.0,
                disagreements=0,
                comparisons=0,
                specs={},
            )
        differ = sum(x != y for (_, x), (_, y) in combinations(rated, 2))
        c.comparisons += len(rated) * (len(rated) - 1) // 2
        c.disagreements += differ
        if differ:
            c.specs[spec] = dict(rated)
    contested = [c for c in found.values() if c.disagreements]
    for c in contested:
        c.disagreement = c.disagreements / c.comparisons
    order = {key: n for n, key in enumerate(found)}
    contested.sort(key=lambda c: (-c.disagreement, -c.disagreements, order[(runs.index(c.run), c.sample_id)]))
    return contested[:top]


def _contested_specs(
    by_spec: dict[tuple[str, str], dict[_Item, Row]],
    specs: dict[str, dict[str, AgreementStats]],
    runs: list[str],
    top: int,
) -> list[ContestedSpec]:
    """The specs the judges agree on least: lowest percent agreement, then lowest κ, then most disputed samples."""
    out = []
    for (scenario, spec), rows in by_spec.items():
        disputed = [item for item, row in rows.items() if len({v for v in row if v is not None}) > 1]
        if not disputed:
            continue
        stats = specs[scenario][spec]
        out.append(
            ContestedSpec(
                scenario=scenario,
                spec_id=spec,
                n_items=stats.n_items,
                disagreements=len(disputed),
                percent_agreement=stats.percent_agreement,
                kappa=stats.kappa,
                sample_ids=[
                    f"{runs[i]}: {sid}" if len(runs) > 1 else sid for i, sid, _, _ in disputed[:MAX_LISTED_SAMPLES]
                ],
            )
        )
    out.sort(
        key=lambda c: (
            1.0 if c.percent_agreement is None else c.percent_agreement,
            math.inf if c.kappa is None else c.kappa,
            -c.disagreements,
        )
    )
    return out[:top]
