"""Issue 17 §1: every score with a 95% bootstrap interval over prompts; ΔSAR with a paired interval and p-value;
per-spec violation-rate differences with an exact test; the markers for differences within noise."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from rich.console import Console
from scipy.stats import binomtest

from run_world import run_cli, runs_in
from specalign._cli.display import comparison_table, scores_table
from specalign.report import collect_report, render_report
from specalign.runs import (
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    OVERALL,
    BootstrapSettings,
    RunDir,
    SamplePoint,
    Strata,
    attach_intervals,
    bootstrap_p_value,
    compare_runs,
    compute_scores,
    format_comparison,
    mcnemar_exact,
    paired_deltas,
    resample,
    spec_deltas,
    stratified_means,
)
from specalign.runs._intervals import COLLAPSED
from specalign.scoring import SUBSETS, macro_average, subset_metrics
from specbench_world import all_unsafe, one_unsafe, world

B = BootstrapSettings()


def _point(scenario: str, label: str, sar: float, safety: float | None = None, verdicts: str = "") -> SamplePoint:
    safety = (1.0 if sar > 0 else 0.0) if safety is None else safety
    return SamplePoint(scenario, label, safety, sar, sar, verdicts, 1)  # type: ignore[arg-type]


def _metrics(points: dict[str, SamplePoint], settings: BootstrapSettings = B):
    """Scenario, overall and pooled metrics of ``points`` as compute_scores makes them, intervals attached."""
    from specalign.scoring import Score, ScoredSample

    samples = [ScoredSample(p.scenario, p.label, Score(p.safety, p.behavioral, p.sar), k) for k, p in points.items()]
    per = {
        s: subset_metrics([x for x in samples if x.scenario == s])
        for s in sorted({p.scenario for p in points.values()})
    }
    overall, pooled = macro_average(per), subset_metrics(samples)
    attach_intervals(points, per, overall, pooled, settings)
    return per, overall, pooled


# -- one run's intervals --------------------------------------------------------------------------------------------


def test_all_equal_samples_have_a_zero_width_interval():
    points = {f"a/{i}": _point("a", "unsafe" if i % 2 else "safe", 0.65) for i in range(40)}
    per, overall, pooled = _metrics(points)
    for m in (per["a"]["full"], per["a"]["unsafe"], overall["full"], overall["safe"], pooled["full"]):
        lo, hi = m.sar_ci
        assert lo == hi == pytest.approx(0.65) and m.safety_ci == [1.0, 1.0]


def test_bernoulli_interval_matches_the_normal_approximation_for_large_n():
    rng = np.random.default_rng(7)
    n = 4000
    values = (rng.random(n) < 0.3).astype(float)
    points = {f"a/{i:05d}": _point("a", "unsafe", v, safety=v) for i, v in enumerate(values)}
    _, overall, _ = _metrics(points)
    p = values.mean()
    half = 1.959964 * math.sqrt(p * (1 - p) / n)
    lo, hi = overall["full"].safety_ci
    assert lo == pytest.approx(p - half, abs=0.1 * half) and hi == pytest.approx(p + half, abs=0.1 * half)
    assert overall["full"].safety == pytest.approx(p)  # the point estimate and the SE stay as they were
    assert overall["full"].safety_se == pytest.approx(math.sqrt(p * (1 - p) / (n - 1)), rel=1e-6)


def test_the_stratified_overall_interval_is_the_loop_computation_over_the_same_draws():
    """Two scenarios of different sizes and spreads: the vectorised overall interval equals a plain loop over the
    replicates (the mean of the scenarios' rescaled resampled means) on the same draws, and its spread is the
    stratified standard error, sqrt(Σ s²_h / n_h) / S."""
    rng = np.random.default_rng(3)
    points = {}
    for s, n, p in (("a", 30, 0.9), ("b", 90, 0.4)):
        for i in range(n):
            v = float(rng.random() < p)
            points[f"{s}/{i:03d}"] = _point(s, "unsafe" if i % 3 else "safe", v, safety=v)
    _, overall, _ = _metrics(points)

    ids = sorted(points)
    strata = Strata([points[i].scenario for i in ids])
    assert strata.keys == ["a", "b"] and list(strata.counts) == [30, 90]
    drawn = resample(np.array([[points[i].sar] for i in ids]), strata, B.resamples, B.seed)
    replicates = []
    for b in range(B.resamples):  # by hand, one replicate at a time
        means = []
        for h, n in enumerate(strata.counts):
            mean = (n * drawn.anchor[h, 0] + drawn.original[h, 0]) / n  # the scenario's own mean
            drawn_mean = (n * drawn.anchor[h, 0] + drawn.deviations[b, h, 0]) / n  # over this replicate's draws
            means.append(mean + math.sqrt(n / (n - 1)) * (drawn_mean - mean))
        replicates.append(sum(means) / len(means))
    lo, hi = np.quantile(replicates, [0.025, 0.975])
    assert overall["full"].sar_ci == pytest.approx([lo, hi], abs=1e-12)
    by = {k: [p.sar for p in points.values() if p.scenario == k] for k in "ab"}
    sums = [n * drawn.anchor[h, 0] + drawn.original[h, 0] for h, n in enumerate(strata.counts)]
    assert sums == pytest.approx([sum(by["a"]), sum(by["b"])])
    se = math.sqrt(np.var(by["a"], ddof=1) / 30 + np.var(by["b"], ddof=1) / 90) / 2
    assert np.std(replicates) == pytest.approx(se, rel=0.08)


def test_small_scenarios_get_honest_intervals():
    """Two prompts per scenario (as a 10-sample run): the rescaled bootstrap's spread is the standard error's,
    where the plain bootstrap's would be √½ of it. One prompt per scenario (the unsafe subset of such a run):
    the scenarios are resampled together, overall gets an interval, a single prompt gets none."""
    values = [0.0, 1.0, 0.3, 1.0, 0.0, 0.0, 1.0, 1.0, 0.3, 0.0]
    points = {f"s{i // 2}/{i}": _point(f"s{i // 2}", "unsafe" if i % 2 else "safe", v) for i, v in enumerate(values)}
    per, overall, _ = _metrics(points)
    ids = sorted(points)
    _, shifts = stratified_means([points[i].scenario for i in ids], np.array([[points[i].sar] for i in ids]), B)
    s2 = [np.var([points[i].sar for i in ids if points[i].scenario == f"s{h}"], ddof=1) / 2 for h in range(5)]
    assert np.std(shifts[OVERALL]) == pytest.approx(math.sqrt(sum(s2)) / 5, rel=0.1)
    lo, hi = overall["full"].sar_ci
    assert 0 <= lo < overall["full"].sar < hi <= 1
    assert per["s0"]["full"].sar_ci is not None and per["s0"]["unsafe"].sar_ci is None  # one unsafe prompt
    lo, hi = overall["unsafe"].sar_ci  # five unsafe prompts, one per scenario: resampled as one stratum
    assert lo < overall["unsafe"].sar < hi
    assert Strata(["a", "b", "c", "c"]).keys == ["c", COLLAPSED] and Strata(["a", "c", "c"]).keys == ["a", "c"]
    _, alone, _ = _metrics({"a/1": _point("a", "safe", 0.5)})
    assert alone["full"].sar == 0.5 and alone["full"].sar_ci is None  # one scored prompt: no interval


def test_prompts_are_resampled_within_their_stratum():
    """A replicate draws each stratum's prompts from that stratum only: a stratum of ones and one of zeros keep
    their sums whatever the draw."""
    strata = Strata(["a"] * 5 + ["b"] * 7)
    values = np.array([[1.0]] * 5 + [[0.0]] * 7)
    sums = resample(values, strata, 300, 1).sums()
    assert (sums[:, 0, 0] == 5).all() and (sums[:, 1, 0] == 0).all()


def test_intervals_are_reproducible_and_follow_the_seed():
    rng = np.random.default_rng(11)
    points = {f"{s}/{i}": _point(s, "safe", float(rng.random())) for s in "ab" for i in range(50)}
    first = _metrics(points)[1]["full"].sar_ci
    assert _metrics(dict(reversed(points.items())))[1]["full"].sar_ci == first  # order does not matter
    assert _metrics(points, BootstrapSettings(seed=5))[1]["full"].sar_ci != first
    assert (
        _metrics(points, BootstrapSettings(seed=5))[1]["full"].sar_ci
        == _metrics(points, BootstrapSettings(seed=5))[1]["full"].sar_ci
    )
    none = _metrics(points, BootstrapSettings(resamples=0))[1]["full"]
    assert none.sar_ci is None and none.sar is not None
    assert (DEFAULT_RESAMPLES, DEFAULT_SEED) == (B.resamples, B.seed) == (2000, B.seed)


# -- two runs: paired differences and exact tests -------------------------------------------------------------------


def _run(seed: int, shift: float = 0.0) -> dict[str, SamplePoint]:
    rng = np.random.default_rng(seed)
    return {
        f"{s}/{i:03d}": _point(s, "unsafe" if i % 2 else "safe", min(1.0, float(rng.random()) + shift))
        for s in ("a", "b", "c")
        for i in range(60)
    }


def test_paired_interval_excludes_zero_for_a_clear_difference():
    base = _run(1)
    better = {
        k: p._replace(sar=min(1.0, p.sar + 0.2), behavioral=min(1.0, p.behavioral + 0.2)) for k, p in base.items()
    }
    overall, per = paired_deltas(better, base, B)
    assert overall.n == 180 and set(per) == {"a", "b", "c"} and per["a"].n == 60
    lo, hi = overall.delta_sar_ci
    assert 0 < lo <= overall.delta_sar <= hi and overall.p_value < 0.01
    assert overall.delta_safety == 0 and overall.delta_safety_ci == [0, 0] and overall.p_value_safety == 1
    # the overall difference is the mean of the scenarios' mean differences
    assert overall.delta_sar == pytest.approx(np.mean([per[s].delta_sar for s in "abc"]))


def test_identical_runs_have_a_zero_interval_and_p_value_one():
    base = _run(2)
    overall, per = paired_deltas(dict(base), base, B)
    assert overall.delta_sar == 0 and overall.delta_sar_ci == [0, 0] and overall.p_value == 1
    assert all(d.p_value == 1 and d.delta_sar_ci == [0, 0] for d in per.values())


def test_paired_interval_spans_zero_for_noise_alone():
    base, other = _run(3), _run(4)  # independent draws from one distribution
    overall, _ = paired_deltas(other, base, B)
    lo, hi = overall.delta_sar_ci
    assert lo < 0 < hi and overall.p_value > 0.05


def test_paired_deltas_cover_only_shared_prompts():
    base = _run(5)
    run = {k: p for k, p in _run(6).items() if not k.startswith("c/")}
    overall, per = paired_deltas(run, base, B)
    assert overall.n == 120 and set(per) == {"a", "b"}
    assert paired_deltas({}, base, B) == (None, {})
    one, per = paired_deltas({"a/000": base["a/000"]._replace(sar=0.0)}, base, B)
    assert one.n == 1 and one.delta_sar_ci is None and one.p_value is None  # one prompt: no interval, no test


def test_bootstrap_p_value():
    assert bootstrap_p_value(np.zeros((99, 1)))[0] == 1
    assert bootstrap_p_value(np.ones((99, 1)))[0] == pytest.approx(2 / 100)
    reps = np.concatenate([-np.ones(10), np.ones(89)])[:, None]
    assert bootstrap_p_value(reps)[0] == pytest.approx(2 * 11 / 100)


@pytest.mark.parametrize(("worse", "better"), [(0, 0), (3, 0), (0, 7), (5, 5), (12, 3), (1, 20), (40, 61), (0, 1)])
def test_exact_mcnemar_matches_scipy_binomtest(worse, better):
    expected = 1.0 if worse + better == 0 else binomtest(worse, worse + better, 0.5).pvalue
    assert mcnemar_exact([worse], [better])[0] == pytest.approx(expected, rel=1e-9)


def test_spec_deltas_count_discordant_prompts():
    # S1, B1, B2 per prompt: here / baseline
    table = [("NYY", "YYY"), ("NYY", "YYY"), ("NNY", "YYY"), ("YYY", "NYY"), ("NYA", "NYA"), ("YYN", "YYN")]
    run = {f"a/{i}": SamplePoint("a", "unsafe", 0, 0, 0, here, 1) for i, (here, _) in enumerate(table)}
    base = {f"a/{i}": SamplePoint("a", "unsafe", 0, 0, 0, there, 1) for i, (_, there) in enumerate(table)}
    d = spec_deltas(run, base)["a"]
    assert set(d) == {"S1", "B1", "B2"}
    s1 = d["S1"]
    assert (s1.n, s1.worse, s1.better) == (6, 3, 1)
    assert s1.violation_rate == pytest.approx(4 / 6) and s1.baseline_rate == pytest.approx(2 / 6)
    assert s1.delta == pytest.approx(2 / 6) and s1.p_value == pytest.approx(binomtest(3, 4, 0.5).pvalue)
    assert (d["B1"].worse, d["B1"].better, d["B1"].p_value) == (1, 0, 1.0)
    assert (d["B2"].worse, d["B2"].better, d["B2"].p_value, d["B2"].delta) == (0, 0, 1.0, 0.0)


def test_ten_runs_of_1500_samples_do_not_allocate_per_replicate():
    """The engine's shape, not its speed (benchmarks/intervals.py times it): one (resamples, cells, k) array."""
    strata = Strata([f"s{i % 5}" for i in range(1500)])
    drawn = resample(np.ones((1500, 3)), strata, 300, 0)
    assert drawn.deviations.shape == (300, 5, 3) and drawn.original.shape == (5, 3)
    assert (drawn.sums() == 300).all() and (drawn.shifts(np.full((5, 1), 1 / 1500)) == 0).all()
    assert drawn.totals(np.full((5, 1), 1 / 1500)) == pytest.approx(np.ones((300, 1, 3)))


# -- end to end: scripted runs, scores.json, compare, the table and the report ---------------------------------------

SMALL = {"limit": 3, "concurrency": 2}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    plan = {
        "base": (world, {}),
        "worse": (all_unsafe, {"method": "raw"}),
        "one": (one_unsafe, {"method": "zero_think", "method_params": {"no_prefill": "multi_turn"}}),
    }
    return runs_in(tmp_path_factory.mktemp("runs"), plan, **SMALL)


def _text(renderable) -> str:
    console = Console(width=240, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text()


def test_scores_json_has_an_interval_next_to_every_score(runs):
    scores = json.loads(open(f"{runs['one']}/scores.json").read())
    assert scores["bootstrap"]["resamples"] == DEFAULT_RESAMPLES and scores["bootstrap"]["seed"] == DEFAULT_SEED
    assert scores["bootstrap"]["strata"] == "scenario" and scores["bootstrap"]["confidence"] == 0.95
    for where in (scores["overall"], scores["pooled"], *scores["scenarios"].values()):
        for subset in SUBSETS:
            m = where[subset]
            for name in ("safety", "behavioral", "sar"):
                assert f"{name}_se" in m  # standard errors stay
                if m["n_scored"] == 1 and where is not scores["overall"] and where is not scores["pooled"]:
                    assert m[f"{name}_ci"] is None  # one prompt: no interval
                    continue
                lo, hi = m[f"{name}_ci"]
                assert lo <= m[name] <= hi
    child = scores["scenarios"]["child"]["full"]
    assert child["sar_ci"][0] < child["sar"] < child["sar_ci"][1]  # one of three answers unsafe: not zero width
    code = scores["scenarios"]["code"]["full"]
    assert code["sar_ci"][0] == code["sar_ci"][1] == pytest.approx(code["sar"])  # every answer alike


def test_score_cli_takes_bootstrap(runs):
    done = run_cli("score", runs["one"], "--json", "--bootstrap", "0")
    assert done.returncode == 0, done.stderr
    rep = json.loads(done.stdout)
    assert rep["overall"]["full"]["sar_ci"] is None and rep["bootstrap"]["resamples"] == 0
    done = run_cli("score", runs["one"], "--json", "--bootstrap", "500")
    assert json.loads(done.stdout)["bootstrap"]["resamples"] == 500
    assert run_cli("score", runs["one"], "--bootstrap", "-1").returncode == 2
    rd = RunDir(runs["one"])
    text = _text(scores_table(compute_scores(rd, rd.read_manifest())))
    assert "95% CI" in text and "2,000 resamples" in text


def test_compare_json_has_intervals_deltas_and_p_values(runs):
    done = run_cli("compare", runs["base"], runs["worse"], runs["one"], "--format", "json")
    assert done.returncode == 0, done.stderr
    base, worse, one = json.loads(done.stdout)
    for row in (base, worse, one):
        lo, hi = row["sar_ci"]
        assert lo <= row["sar"] <= hi
        assert {"delta_sar", "delta_sar_ci", "p_value", "delta_safety_ci", "delta_behavioral_ci"} <= set(row)
    assert base["is_baseline"] and base["delta_sar"] == 0 and base["delta_sar_ci"] == [0, 0] and base["p_value"] == 1
    assert base["spec_deltas"] == {}
    assert worse["delta_sar"] < 0 and worse["delta_sar_ci"][1] < 0 and worse["p_value"] < 0.05
    assert worse["delta_safety"] == -1 and worse["spec_deltas"]["child"]["S1"]["worse"] == 3
    assert worse["spec_deltas"]["child"]["S1"]["p_value"] == pytest.approx(binomtest(3, 3, 0.5).pvalue)
    lo, hi = one["delta_sar_ci"]
    assert lo < 0 <= hi and one["delta_sar"] < 0 and one["p_value"] > 0.05  # one unsafe answer: within noise
    assert one["scenario_deltas"]["code"]["delta_sar"] == 0 and one["scenario_deltas"]["child"]["n"] == 3
    assert one["bootstrap"]["resamples"] == DEFAULT_RESAMPLES
    again = run_cli("compare", runs["base"], runs["worse"], runs["one"], "--format", "json")
    assert json.loads(again.stdout) == [base, worse, one]  # seeded: the same intervals every time
    fewer = json.loads(run_cli("compare", runs["base"], runs["one"], "-f", "json", "--bootstrap", "300").stdout)
    assert fewer[1]["bootstrap"]["resamples"] == 300


def test_tables_mark_differences_within_noise(runs):
    rows = compare_runs([runs["base"], runs["worse"], runs["one"]])
    text = _text(comparison_table(rows))
    lines = {ln.split()[0]: ln for ln in text.splitlines() if ln.strip()}
    assert " ~ " in lines["zero_think"] and "~" not in lines["raw"] and "~" not in lines["vanilla"]
    assert "~: the interval spans 0, the difference is within noise" in " ".join(text.split())
    md = format_comparison(rows, "markdown")
    assert "| SAR 95% CI |" in md and "| ΔSAR 95% CI | p |" in md
    assert md.count(" ~ |") == 1 and "within noise" in md
    csv_text = format_comparison(rows, "csv")
    assert "sar_ci_low" in csv_text.splitlines()[0] and "spec_deltas" not in csv_text.splitlines()[0]


def test_report_shows_intervals_and_the_marker(runs, tmp_path):
    data = collect_report([runs["base"], runs["worse"], runs["one"]])
    one = data.runs[2]
    assert one.scenario_sar_ci["child"] is not None and one.scenario_deltas["child"].n == 3
    assert one.spec_deltas["child"]["S1"].worse == 1
    page = render_report(data)
    assert 'class="ns-mark">~</span>' in page and 'class="ci"' in page
    assert "within noise" in page and "ΔSAR against" in page and 'class="ci" stroke=' not in page
    # zero_think's ΔSAR in the headline, and by scenario: child, code (no difference at all) and overall
    assert page.count('<td class="ns"') == 4
    assert "exact McNemar p 0.250" in page  # raw's S1 in child: 3 of 3 prompts violated only here
    assert 'class="heat sig"' not in page  # 3 discordant prompts cannot reach p < 0.05
