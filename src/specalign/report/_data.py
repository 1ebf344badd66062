"""What a report shows, read from run directories into pydantic models (no model calls)."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, Field

from ..benchmark import SPEC_KINDS, PromptLabel
from ..errors import InputError, RunDirError
from ..runs import (
    AgreementReport,
    BootstrapSettings,
    ComparisonRow,
    Manifest,
    PairedDelta,
    RunDir,
    SampleStatus,
    ScoresReport,
    SpecDelta,
    comparison_warnings,
    compute_scores,
    delta_note,
    interval_note,
    judge_agreement,
    latest_records,
    overall_notes,
    row_of,
    run_benchmark,
    sample_outcome,
    set_deltas,
)
from ..scoring import Metric, NAPolicy

#: how many contested samples the agreement section lists
CONTESTED_TOP = 25
#: Okabe–Ito: distinguishable with the common colour-vision deficiencies
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]


class SpecInfo(BaseModel):
    id: str
    kind: Literal["safety", "behavioral"]
    text: str | None = Field(None, description="None when the run's data has moved or changed")


class ScenarioEntry(BaseModel):
    key: str = Field(description="unique in the report: the scenario key, suffixed when runs used different data")
    name: str
    specs: list[SpecInfo]


class SpecCounts(BaseModel):
    no: int = 0
    na: int = 0
    n: int = 0

    @property
    def rate(self) -> float | None:
        return self.no / self.n if self.n else None


class RunEntry(BaseModel):
    """One run: its comparison row, SAR per scenario and per-spec verdict counts."""

    index: int
    label: str = Field(description="unique in the report")
    color: str
    row: ComparisonRow
    overall: dict[str, Metric] = Field(description="subset (full, unsafe, safe) → mean of scenarios")
    data_source: str
    scenario_sar: dict[str, float | None]
    scenario_sar_ci: dict[str, list[float] | None] = Field(
        default_factory=dict, description="report scenario key → SAR's 95% bootstrap interval"
    )
    scenario_deltas: dict[str, PairedDelta] = Field(
        default_factory=dict, description="report scenario key → paired differences to the baseline"
    )
    spec_deltas: dict[str, dict[str, SpecDelta]] = Field(
        default_factory=dict, description="report scenario key → spec id → violation rate against the baseline's"
    )
    spec_counts: dict[str, dict[str, SpecCounts]] = Field(description="report scenario key → spec id → counts")
    unscored_reasons: dict[str, int]
    judge_key: str | None = Field(None, description="the key of the judge whose verdicts the run shows")


class SampleRun(BaseModel):
    """One sample as one run answered and the judge saw it."""

    status: SampleStatus
    reason: str | None = None
    safety: float | None = None
    behavioral: float | None = None
    sar: float | None = None
    prompt_sent: str | None = None
    thought: str = ""
    response: str = ""
    flags: list[str] = Field(default_factory=list)
    completion_tokens: int = 0
    calls: int = 0
    verdicts: dict[str, tuple[str, str]] = Field(default_factory=dict, description="spec id → (verdict, reason)")

    @property
    def violated(self) -> list[str]:
        return [k for k, (v, _) in self.verdicts.items() if v == "NO"]


class SampleEntry(BaseModel):
    id: str = Field(description="report scenario key / prompt id")
    scenario: str
    prompt_id: str
    label: PromptLabel | None
    prompt: str = ""
    original_prompt: str | None = None
    runs: dict[int, SampleRun] = Field(default_factory=dict, description="run index → the run's sample")


class ContestedLink(BaseModel):
    """A contested sample of the agreement section, and where the sample browser holds it."""

    run: str = Field(description="the agreement's run label")
    sample_id: str = Field(description="scenario / prompt id, as judge_agreement names it")
    scenario: str
    disagreements: int
    comparisons: int
    specs: dict[str, dict[str, str]] = Field(description="each disputed spec: judge → verdict")
    report_sample: str | None = Field(None, description="the report's sample id; None when the report lacks it")
    report_runs: list[int] = Field(default_factory=list, description="the report runs that hold these answers")


class AgreementSection(BaseModel):
    """What the report's "Judge agreement" section shows: judge_agreement's report, placed in this report."""

    report: AgreementReport
    scenario_keys: dict[str, str] = Field(
        default_factory=dict, description="judge_agreement's scenario key → the report's scenario key"
    )
    run_indices: dict[str, list[int]] = Field(
        default_factory=dict, description="the agreement's run label → the report runs of its directories"
    )
    contested: list[ContestedLink] = Field(default_factory=list)


class ReportData(BaseModel):
    title: str
    created_at: str
    specalign_version: str
    alpha_note: str
    runs: list[RunEntry]
    scenarios: list[ScenarioEntry]
    samples: list[SampleEntry]
    notices: list[str] = Field(
        default_factory=list,
        description="what makes the runs' scores not comparable as "
        "they stand: other prompts or data versions, scenarios left out of overall",
    )
    delta_note: str | None = Field(None, description="which prompts ΔSAR covers, when not every scored one")
    interval_note: str | None = Field(None, description="what the intervals are and what marks a difference in noise")
    bootstrap: BootstrapSettings | None = None
    agreement: AgreementSection | None = Field(
        None, description="the judges' agreement, when the runs hold two judges' verdicts on the same answers"
    )


def collect_report(
    run_dirs: list[str],
    *,
    title: str | None = None,
    baseline: str | None = None,
    alpha: float | None = None,
    na_policy: NAPolicy | None = None,
    bootstrap: int | None = None,
) -> ReportData:
    """Read ``run_dirs`` into a :class:`ReportData`; intervals from ``bootstrap`` resamples (default 2,000)."""
    from .. import __version__  # noqa: PLC0415

    if not run_dirs:
        raise RunDirError("no run directories given")
    loaded = [_load(d, alpha, na_policy, bootstrap) for d in run_dirs]
    rows = [row for _, _, _, row in loaded]
    set_deltas(rows, baseline)
    shas = {m.data.sha256 for _, m, _, _ in loaded}
    builder = _Builder(multi_data=len(shas) > 1)
    runs = [builder.add_run(i, rd, m, rep, row) for i, (rd, m, rep, row) in enumerate(loaded)]
    _unique_labels(runs)
    named = [r.row.model_copy(update={"label": r.label}) for r in runs]  # notices name runs by their report label
    return ReportData(
        title=title or _default_title(runs),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        specalign_version=__version__,
        alpha_note=_alpha_note(rows),
        runs=runs,
        scenarios=list(builder.scenarios.values()),
        samples=list(builder.samples.values()),
        notices=comparison_warnings(named) + overall_notes(named),
        delta_note=delta_note(named),
        interval_note=interval_note(named),
        bootstrap=rows[0].bootstrap,
        agreement=_agreement(run_dirs, loaded, builder, runs, alpha, na_policy, bootstrap),
    )


def _load(
    run_dir: str, alpha: float | None, na_policy: NAPolicy | None, bootstrap: int | None = None
) -> tuple[RunDir, Manifest, ScoresReport, ComparisonRow]:
    rd = RunDir(run_dir)
    manifest = rd.read_manifest()
    rep = compute_scores(rd, manifest, alpha=alpha, na_policy=na_policy, bootstrap=bootstrap)
    if alpha is not None or na_policy is not None:  # per-sample scores follow the report's α and policy too
        manifest = manifest.model_copy(update={"alpha": rep.alpha, "na_policy": rep.na_policy})
    return rd, manifest, rep, row_of(rd, manifest, rep)


def _agreement(
    run_dirs: list[str],
    loaded: list[tuple[RunDir, Manifest, ScoresReport, ComparisonRow]],
    builder: _Builder,
    runs: list[RunEntry],
    alpha: float | None,
    na_policy: NAPolicy | None,
    bootstrap: int | None,
) -> AgreementSection | None:
    """judge_agreement over the report's runs (intervals from ``bootstrap`` resamples), its runs and samples
    mapped onto the report's; None with fewer than two judges over the same answers."""
    try:
        rep = judge_agreement(run_dirs, alpha=alpha, na_policy=na_policy, top=CONTESTED_TOP, bootstrap=bootstrap)
    except InputError:
        return None
    by_path: dict[str, list[int]] = {}
    for r in runs:
        by_path.setdefault(os.path.realpath(r.row.run_dir), []).append(r.index)
    run_indices = {
        a.label: sorted({i for d in a.run_dirs for i in by_path.get(os.path.realpath(d), [])}) for a in rep.runs
    }
    scenario_keys: dict[str, str] = {}
    for _, manifest, _, _ in loaded:
        for key in manifest.selection.scenarios:
            scenario_keys.setdefault(key, builder.scenario_key(manifest, key))
    contested = []
    for c in rep.contested_samples:
        indices = run_indices.get(c.run, [])
        link = ContestedLink(
            run=c.run,
            sample_id=c.sample_id,
            scenario=c.scenario,
            disagreements=c.disagreements,
            comparisons=c.comparisons,
            specs=c.specs,
            report_runs=indices,
        )
        if indices:
            prompt_id = c.sample_id.removeprefix(f"{c.scenario}/")
            sid = f"{builder.scenario_key(loaded[indices[0]][1], c.scenario)}/{prompt_id}"
            if sid in builder.samples:
                link.report_sample = sid
                link.report_runs = [i for i in indices if i in builder.samples[sid].runs]
        contested.append(link)
    return AgreementSection(report=rep, scenario_keys=scenario_keys, run_indices=run_indices, contested=contested)


class _Builder:
    """Accumulates scenarios and samples across runs, keyed the same way for every run."""

    def __init__(self, *, multi_data: bool):
        self.multi_data = multi_data
        self.scenarios: dict[str, ScenarioEntry] = {}
        self.samples: dict[str, SampleEntry] = {}

    def scenario_key(self, manifest: Manifest, key: str) -> str:
        return f"{key}@{manifest.data.sha256[:7]}" if self.multi_data else key

    def add_run(self, index: int, rd: RunDir, manifest: Manifest, rep: ScoresReport, row: ComparisonRow) -> RunEntry:
        bench = run_benchmark(manifest)
        self._add_scenarios(manifest, bench)
        prompts = {f"{s.key}/{p.id}": p for s in bench.scenarios for p in s.prompts} if bench else {}
        gens, judged = latest_records(rd, manifest.judge["key"])
        counts: dict[str, dict[str, SpecCounts]] = {}
        for sid in rd.selected(gens):
            scenario, _, prompt_id = sid.partition("/")
            key = self.scenario_key(manifest, scenario)
            entry = self._sample(key, prompt_id, prompts.get(sid), gens.get(sid))
            run = _sample_run(manifest, gens.get(sid), judged.get(sid))
            if run.prompt_sent == entry.prompt:
                run.prompt_sent = None
            entry.runs[index] = run
            _count(counts.setdefault(key, {}), run)
        return RunEntry(
            index=index,
            label=row.label,
            color=PALETTE[index % len(PALETTE)],
            row=row,
            overall=rep.overall,
            data_source=manifest.data.source,
            scenario_sar={self.scenario_key(manifest, k): m["full"].sar for k, m in rep.scenarios.items()},
            scenario_sar_ci={self.scenario_key(manifest, k): m["full"].sar_ci for k, m in rep.scenarios.items()},
            scenario_deltas={self.scenario_key(manifest, k): d for k, d in row.scenario_deltas.items()},
            spec_deltas={self.scenario_key(manifest, k): d for k, d in row.spec_deltas.items()},
            spec_counts=counts,
            unscored_reasons=rep.unscored_reasons,
            judge_key=manifest.judge.get("key"),
        )

    def _add_scenarios(self, manifest: Manifest, bench) -> None:  # noqa: ANN001
        by_key = {s.key: s for s in bench.scenarios} if bench else {}
        for key in manifest.selection.scenarios:
            rkey = self.scenario_key(manifest, key)
            if rkey in self.scenarios:
                continue
            info, s = manifest.data.scenarios[key], by_key.get(key)
            specs = [
                SpecInfo(id=sid, kind=kind, text=s.specs(kind)[i].text if s else None)
                for kind in SPEC_KINDS
                for i, sid in enumerate(info.spec_ids(kind))
            ]
            self.scenarios[rkey] = ScenarioEntry(key=rkey, name=info.name, specs=specs)

    def _sample(self, key: str, prompt_id: str, prompt, gen) -> SampleEntry:  # noqa: ANN001
        sid = f"{key}/{prompt_id}"
        entry = self.samples.get(sid)
        if entry is None:
            entry = self.samples[sid] = SampleEntry(id=sid, scenario=key, prompt_id=prompt_id, label=None)
        if entry.label is None:
            entry.label = prompt.label if prompt else (gen.label if gen else None)
        if not entry.prompt:
            entry.prompt = prompt.prompt if prompt else (gen.prompt_sent if gen else "")
        if entry.original_prompt is None and prompt is not None and prompt.original_prompt != prompt.prompt:
            entry.original_prompt = prompt.original_prompt
        return entry


def _sample_run(manifest: Manifest, g, j) -> SampleRun:  # noqa: ANN001
    status, reason, score = sample_outcome(manifest, g, j)
    run = SampleRun(status=status, reason=reason)
    if score is not None:
        run.safety, run.behavioral, run.sar = score.safety, score.behavioral, score.sar
    if g is not None:
        run.prompt_sent, run.thought, run.response, run.flags = g.prompt_sent, g.thought, g.response, list(g.flags)
        run.completion_tokens, run.calls = g.usage.completion_tokens, g.calls + g.cached_calls
    if j is not None and j.status == "scored":
        run.verdicts = {k: (v.verdict, v.reason) for k, v in j.verdicts.items()}
    return run


def _count(counts: dict[str, SpecCounts], run: SampleRun) -> None:
    if run.status != "scored":
        return
    for spec_id, (verdict, _) in run.verdicts.items():
        c = counts.setdefault(spec_id, SpecCounts())
        c.n += 1
        c.no += verdict == "NO"
        c.na += verdict == "NA"


def _unique_labels(runs: list[RunEntry]) -> None:
    """Runs of different models or judges with one method get the model (then the directory) in their label."""
    for extra in (
        lambda r: r.row.model.split("@", 1)[0],
        lambda r: r.row.judge.split("@", 1)[0],
        lambda r: RunDir(r.row.run_dir).path.name,
    ):
        seen: dict[str, int] = {}
        for r in runs:
            seen[r.label] = seen.get(r.label, 0) + 1
        clashing = [r for r in runs if seen[r.label] > 1]
        if not clashing:
            return
        for r in clashing:
            r.label = f"{r.label} · {extra(r)}"
    labels = [r.label for r in runs]
    for i, r in enumerate(runs):  # still equal (the same directory twice): number them
        if labels.count(r.label) > 1:
            r.label = f"{r.label} #{i + 1}"


def _default_title(runs: list[RunEntry]) -> str:
    models = sorted({r.row.model.split("@", 1)[0] for r in runs})
    return f"specalign report: {', '.join(models)}" if len(models) <= 3 else f"specalign report: {len(runs)} runs"


def _alpha_note(rows: list[ComparisonRow]) -> str:
    pairs = sorted({(r.alpha, r.na_policy) for r in rows})
    return "; ".join(f"α = {a:g}, NA policy {p}" for a, p in pairs)
