"""How long the bootstrap intervals take: 10 runs × 1,500 samples (the official data's shape).

Ten runs' per-sample verdicts are drawn (seeded) over the official data's prompts, labels and specs (or, without
the data, 5 synthetic scenarios of 150 unsafe + 150 safe prompts and 10 + 10 specs). Then, as ``specalign
compare`` and ``report`` do after reading the records: every run's intervals (per scenario, subset, overall and
pooled), and against the first run every other run's paired ΔSAR / Δsafety / Δbehavioral (overall and per
scenario, intervals and p-values) and per-spec exact McNemar tests. Timed in a fresh process (the first pass
includes importing scipy.special), then the median of 5 more passes; also with every run over other prompts,
so that no two share a resample count matrix. Also ``specalign agreement``'s intervals: a run directory of the same
samples judged by two judges that agree on 90 % of the items, read and compared with and without the bootstrap.
Writes a section of docs/benchmarks.md. Usage:

    .venv/bin/python benchmarks/intervals.py [--data ../shared/specbench-data] [--resamples 2000]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from demo import write_section  # noqa: E402

RUNS = 10
DEFAULT_DATA = ROOT.parent / "shared" / "specbench-data"


def layout(data: Path) -> tuple[list[tuple[str, str, str]], dict[str, int], dict[str, int], str]:
    """(sample id, scenario, label) per prompt, safety and behavioral spec counts per scenario, and where from."""
    if data.is_dir():
        from specalign.benchmark import load_benchmark  # noqa: PLC0415

        bench = load_benchmark(str(data))
        prompts = [(f"{s.key}/{p.id}", s.key, p.label) for s in bench.scenarios for p in s.prompts]
        n_s = {s.key: len(s.specs("safety")) for s in bench.scenarios}
        n_b = {s.key: len(s.specs("behavioral")) for s in bench.scenarios}
        return prompts, n_s, n_b, f"the official data's {len(prompts):,} prompts and specs"
    keys = [f"s{i}" for i in range(5)]
    prompts = [(f"{k}/p{i:03d}", k, "unsafe" if i < 150 else "safe") for k in keys for i in range(300)]
    return prompts, dict.fromkeys(keys, 10), dict.fromkeys(keys, 10), "5 synthetic scenarios of 300 prompts"


def draw_runs(prompts, n_s, n_b, seed: int = 0) -> list[dict]:
    """Per run: sample id → SamplePoint, verdicts drawn with a run-specific violation rate."""
    from specalign.runs import SamplePoint  # noqa: PLC0415
    from specalign.scoring import LETTER_VERDICTS, score_sample  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    runs = []
    for r in range(RUNS):
        no = 0.03 + 0.005 * r
        points = {}
        for sid, scenario, label in prompts:
            k = n_s[scenario] + n_b[scenario]
            letters = "".join(rng.choice(["Y", "N", "A"], size=k, p=[0.9 - no, no, 0.1]))
            s = score_sample(
                [LETTER_VERDICTS[x] for x in letters[: n_s[scenario]]],
                [LETTER_VERDICTS[x] for x in letters[n_s[scenario] :]],
            )
            points[sid] = SamplePoint(scenario, label, s.safety, s.behavioral, s.sar, letters, n_s[scenario])
        runs.append(points)
    return runs


def intervals_pass(runs: list[dict], resamples: int) -> float:
    """Every run's intervals, then every run's paired differences and spec tests against the first; seconds."""
    from specalign.runs import attach_intervals, bootstrap_settings, paired_deltas, spec_deltas  # noqa: PLC0415
    from specalign.scoring import Score, ScoredSample, macro_average, subset_metrics  # noqa: PLC0415

    settings = bootstrap_settings(resamples)
    metrics = []
    for points in runs:  # the means and SEs (computed by compute_scores anyway) are made outside the clock
        samples = [
            ScoredSample(p.scenario, p.label, Score(p.safety, p.behavioral, p.sar), k) for k, p in points.items()
        ]
        per = {
            s: subset_metrics([x for x in samples if x.scenario == s])
            for s in sorted({p.scenario for p in points.values()})
        }
        metrics.append((per, macro_average(per), subset_metrics(samples)))
    t0 = time.perf_counter()
    for points, (per, overall, pooled) in zip(runs, metrics, strict=True):
        attach_intervals(points, per, overall, pooled, settings)
    for points in runs[1:]:
        paired_deltas(points, runs[0], settings)
        spec_deltas(points, runs[0])
    return time.perf_counter() - t0


def agreement_dir(prompts, n_s, n_b, folder: Path, seed: int = 0) -> Path:
    """A run directory of ``prompts``, judged by two judges that agree on about 90 % of the items."""
    from specalign.judge import SpecVerdict  # noqa: PLC0415
    from specalign.runs import (  # noqa: PLC0415
        DataInfo,
        GenerationRecord,
        JudgmentRecord,
        Manifest,
        RunDir,
        ScenarioInfo,
        Selection,
    )

    rng = np.random.default_rng(seed)
    scenarios = {
        s: ScenarioInfo(name=s, n_safety=n_s[s], n_behavioral=n_b[s], behavioral_weights=[1.0] * n_b[s]) for s in n_s
    }
    judges = [{"key": f"judge{j}", "model": {"key": f"judge-{j}"}, "mode": "joint"} for j in (1, 2)]
    manifest = Manifest(
        specalign_version="bench",
        generation_key="bench",
        data=DataInfo(source="synthetic", sha256="0", scenarios=scenarios),
        selection=Selection(scenarios=list(scenarios), limit=None, n_samples=len(prompts)),
        model={"key": "model"},
        model_identity={},
        method={"name": "vanilla"},
        judge=judges[1],
        past_judges=[judges[0]],
        alpha=0.3,
        na_policy="official",
    )
    rd = RunDir(folder)
    rd.ensure_writable()
    rd.write_manifest(manifest)
    gens, judged = rd.open_writers()
    verdicts = np.array(["YES", "NO", "NA"])
    for sid, scenario, label in prompts:
        prompt_id = sid.partition("/")[2]
        base = dict(sample_id=sid, scenario=scenario, prompt_id=prompt_id, label=label)
        gens.append(GenerationRecord(**base, status="ok", prompt_sent="q", response=f"answer {sid}"))
        ids = scenarios[scenario].spec_ids()
        first = verdicts[rng.choice(3, size=len(ids), p=[0.85, 0.05, 0.1])]
        second = np.where(rng.random(len(ids)) < 0.9, first, verdicts[rng.choice(3, size=len(ids))])
        for j, v in zip(judges, (first, second), strict=True):
            judged.append(
                JudgmentRecord(
                    **base,
                    judge_key=j["key"],
                    status="scored",
                    verdicts={k: SpecVerdict(verdict=x) for k, x in zip(ids, v, strict=True)},
                )
            )
    gens.close()
    judged.close()
    return folder


def agreement_pass(run_dir: Path, resamples: int) -> float:
    """``specalign agreement``'s numbers for one run directory (read included); seconds."""
    from specalign.runs import judge_agreement  # noqa: PLC0415

    t0 = time.perf_counter()
    judge_agreement([str(run_dir)], bootstrap=resamples)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--resamples", type=int, default=2000)
    args = ap.parse_args()
    prompts, n_s, n_b, source = layout(Path(args.data))
    runs = draw_runs(prompts, n_s, n_b)
    first = intervals_pass(runs, args.resamples)
    warm = statistics.median(intervals_pass(runs, args.resamples) for _ in range(5))
    # every run over other prompts: run r leaves out its first r prompts, so no two runs share a count matrix
    ids = sorted(runs[0])
    apart = [{k: v for k, v in points.items() if k not in ids[:r]} for r, points in enumerate(runs)]
    apart_t = statistics.median(intervals_pass(apart, args.resamples) for _ in range(3))
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = agreement_dir(prompts, n_s, n_b, Path(tmp) / "run")
        agreement_pass(run_dir, args.resamples)  # imports, and the page cache
        bare = statistics.median(agreement_pass(run_dir, 0) for _ in range(3))
        with_ci = statistics.median(agreement_pass(run_dir, args.resamples) for _ in range(3))
    n = len(prompts)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    body = (
        f"`.venv/bin/python benchmarks/intervals.py` on {machine}, numpy {np.__version__}, "
        f"{time.strftime('%Y-%m-%d')}. {RUNS} runs × {n:,} samples ({source}), verdicts drawn at random; "
        f"{args.resamples:,} resamples. Timed: every run's intervals (each scenario × subset, overall, pooled: "
        f"a bootstrap stratified by scenario for each of full, unsafe, safe) and, against the first run, every other run's paired ΔSAR, Δsafety "
        f"and Δbehavioral (overall and per scenario) and exact McNemar tests of every spec "
        f"({sum(n_s.values()) + sum(n_b.values())} specs). Reading the run directories is not included.\n\n"
        "| case | time |\n|---|---:|\n"
        f"| first pass in a fresh process (imports scipy.special, draws the count matrix) | **{first:.2f} s** |\n"
        f"| later passes, median of 5 | {warm:.2f} s |\n"
        f"| every run over other prompts (no shared count matrix), median of 3 | {apart_t:.2f} s |\n"
        f"| `specalign agreement` over the first run's samples judged by 2 judges (reading the run directory "
        f"included), without intervals, median of 3 | {bare:.2f} s |\n"
        f"| the same with the intervals of every pair (overall, kinds, scenarios, specs), median of 3 | "
        f"{with_ci:.2f} s (+{with_ci - bare:.2f} s) |\n\n"
        "Goal: under 2 s. A replicate is a row of a (resamples × prompts) matrix of draw counts, made from an "
        "index matrix with one `bincount`, and every stratum's sum in every replicate is one matrix product; the "
        "count matrix depends only on the strata's sizes and the seed, so runs over the same prompts (and a "
        "paired comparison of two of them) reuse one.\n"
    )
    write_section("Bootstrap intervals (10 runs × 1,500 samples)", body)
    print(body)


if __name__ == "__main__":
    main()
