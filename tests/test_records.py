"""The record layer the runner and the gateway's monitor share: judgments from a judge's outcome, generations
from a method's output, one manifest builder and generation key, one spec-id function, and the per-spec
violation figures a run writes to ``scores.json`` (checked against counts by hand)."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest

from scripted_server import ScriptedServer
from specalign.benchmark import SPEC_KINDS, load_benchmark, select_prompts, spec_id, spec_ids_of
from specalign.judge import Judge, JudgeOutcome, SpecVerdict
from specalign.judge._schema import spec_ids
from specalign.methods import MethodOutput, MethodStep, create_method
from specalign.models import Usage, create_model, parse_model_spec
from specalign.runs import (
    Evaluation,
    GenerationRecord,
    JudgmentRecord,
    RunConfig,
    ScenarioInfo,
    build_manifest,
)
from specalign.runs._records import generation_key
from specbench_world import generation_reply, is_judge, judged_answer, spec_counts

# --------------------------------------------------------------------------- spec ids


def test_spec_ids_are_made_in_one_place_and_agree_everywhere():
    assert (spec_id("safety", 1), spec_id("behavioral", 12)) == ("S1", "B12")
    assert spec_ids_of("behavioral", 3) == ["B1", "B2", "B3"] and spec_ids_of("safety", 0) == []
    with pytest.raises(ValueError, match="from 1"):
        spec_id("safety", 0)
    child = load_benchmark("bundled").scenario("child")
    n_s, n_b = len(child.safety_specs), len(child.behavioral_specs)
    ids = child.spec_ids()
    assert ids == [f"S{i}" for i in range(1, n_s + 1)] + [f"B{i}" for i in range(1, n_b + 1)]
    assert ids == child.spec_ids("safety") + child.spec_ids("behavioral")
    assert spec_ids(child) == (child.spec_ids("safety"), child.spec_ids("behavioral"))  # the judge's
    info = ScenarioInfo.of(child)
    assert (info.n_safety, info.n_behavioral) == (n_s, n_b) and info.behavioral_weights == [1.0] * n_b
    assert info.spec_ids() == ids and all(info.spec_ids(k) == child.spec_ids(k) for k in SPEC_KINDS)
    assert child.numbered("behavioral").splitlines()[1] == f"B2. {child.behavioral_specs[1].text}"


# --------------------------------------------------------------------------- records


def _generation(**kw) -> GenerationRecord:
    output = MethodOutput(
        thought="t",
        response="r",
        flags=["f"],
        usage=Usage(prompt_tokens=3, completion_tokens=4),
        scorer_usage=Usage(prompt_tokens=5, completion_tokens=6),
        calls=2,
        cached_calls=1,
        steps=[MethodStep(role="answer", source="target")],
        stats={"rounds": 1},
    )
    base = dict(scenario="child", prompt_id="p 1", label="unsafe", prompt_sent="hi", elapsed_s=1.5)
    return GenerationRecord.from_output(output, **{**base, **kw})


def test_a_generation_record_copies_the_methods_output():
    g = _generation()
    assert (g.sample_id, g.scenario, g.prompt_id, g.label, g.status) == ("child/p 1", "child", "p 1", "unsafe", "ok")
    assert (g.prompt_sent, g.thought, g.response, g.flags, g.stats) == ("hi", "t", "r", ["f"], {"rounds": 1})
    assert (g.usage.completion_tokens, g.scorer_usage.prompt_tokens, g.calls, g.cached_calls) == (4, 5, 2, 1)
    assert [s.role for s in g.steps] == ["answer"] and g.elapsed_s == 1.5 and g.error is None
    failed = GenerationRecord.failed(
        "boom", scenario="child", prompt_id="p", label="safe", prompt_sent="hi", elapsed_s=0.5
    )
    assert (failed.sample_id, failed.status, failed.error, failed.response, failed.calls) == (
        "child/p",
        "error",
        "boom",
        "",
        0,
    )


def test_a_judgment_record_holds_every_field_of_the_judges_outcome():
    g = _generation()
    outcome = JudgeOutcome(
        status="scored",
        verdicts={"S1": SpecVerdict(verdict="NO", reason="x"), "B1": SpecVerdict(verdict="NA")},
        unscored_reason=None,
        call_failed=False,
        raw_outputs=["a", "b"],
        attempts=2,
        calls=1,
        cached_calls=1,
        prompt_tokens=10,
        completion_tokens=20,
    )
    j = JudgmentRecord.from_outcome(g, "judge-key", outcome, elapsed_s=2.5)
    assert (j.sample_id, j.scenario, j.prompt_id, j.label) == (g.sample_id, g.scenario, g.prompt_id, g.label)
    assert (j.judge_key, j.status, j.verdicts, j.unscored_reason, j.call_failed) == (
        "judge-key",
        "scored",
        outcome.verdicts,
        None,
        False,
    )
    assert (j.raw_outputs, j.attempts, j.calls, j.cached_calls, j.elapsed_s) == (["a", "b"], 2, 1, 1, 2.5)
    assert (j.usage.prompt_tokens, j.usage.completion_tokens) == (10, 20)
    # every field the outcome has is carried over (a field added to one and not the other fails here)
    shared = set(JudgeOutcome.model_fields) - {"prompt_tokens", "completion_tokens"}
    assert shared <= set(JudgmentRecord.model_fields)
    assert all(getattr(j, k) == getattr(outcome, k) for k in shared)

    unreadable = JudgeOutcome(status="unscored", unscored_reason="unreadable", call_failed=True, attempts=3)
    u = JudgmentRecord.from_outcome(g, "k", unreadable, elapsed_s=0)
    assert (u.status, u.unscored_reason, u.call_failed, u.attempts, u.verdicts) == (
        "unscored",
        "unreadable",
        True,
        3,
        {},
    )


def test_a_sample_never_judged_is_unscored_with_the_reason():
    j = JudgmentRecord.not_judged(_generation(), "k", "judge call failed: down", elapsed_s=1.0, call_failed=True)
    assert (j.sample_id, j.status, j.unscored_reason, j.call_failed, j.attempts, j.calls) == (
        "child/p 1",
        "unscored",
        "judge call failed: down",
        True,
        0,
        0,
    )
    assert not JudgmentRecord.not_judged(_generation(), "k", "gateway stopped").call_failed


# --------------------------------------------------------------------------- manifest and generation key


@pytest.fixture
def parts():
    bench = load_benchmark("bundled")
    target = create_model(parse_model_spec("openai:target-model@http://127.0.0.1:9/v1"))
    judge = Judge(create_model(parse_model_spec("openai:judge-model@http://127.0.0.1:9/v1")))
    return bench, target, judge, create_method("vanilla", {})


def test_the_generation_key_is_the_hash_existing_run_directories_were_keyed_by(parts):
    """Changing this formula orphans every run directory already on disk: resuming one would be refused."""
    bench, target, _, method = parts
    sha = bench.content_hash()
    expected = [sha, target.backend.identity(), target.settings.params, target.settings.extra_body, method.describe()]

    def key(p: list) -> str:
        return hashlib.sha256(json.dumps(p, sort_keys=True, default=str).encode()).hexdigest()[:16]

    assert generation_key(sha, target, method) == key(expected)
    assert generation_key(sha, target, method, "live") == key([*expected, "live"])


def test_one_manifest_builder_for_runs_and_the_gateway(parts):
    bench, target, judge, method = parts
    chosen = [bench.scenario("code"), bench.scenario("child")]
    common = dict(target=target, method=method, judge=judge, alpha=0.5, na_policy="exclude")
    run = build_manifest(bench=bench, scenarios=chosen, limit=3, n_samples=6, **common)
    assert run.selection.scenarios == ["code", "child"] and list(run.data.scenarios) == ["code", "child"]
    assert (run.selection.limit, run.selection.n_samples) == (3, 6)
    assert (run.data.source, run.data.sha256) == (bench.source, bench.content_hash())
    assert run.data.scenarios["child"] == ScenarioInfo.of(bench.scenario("child"))
    assert run.generation_key == generation_key(bench.content_hash(), target, method)
    assert (run.model["key"], run.method, run.judge, run.alpha, run.na_policy) == (
        target.settings.key,
        method.describe(),
        judge.describe(),
        0.5,
        "exclude",
    )
    assert run.model_identity == target.backend.identity() and run.environment["python"]
    live = build_manifest(bench=bench, scenarios=chosen, limit=None, n_samples=0, live=True, **common)
    assert live.generation_key == generation_key(bench.content_hash(), target, method, "live") != run.generation_key


# --------------------------------------------------------------------------- spec_violations in scores.json

UNSAFE_PROMPTS = {p.prompt for s in load_benchmark("bundled").scenarios for p in s.prompts if p.label == "unsafe"}


def _violations_world(body) -> str:
    """Answers to unsafe prompts say UNSAFE. The judge: S1 and B2 NO for an UNSAFE answer (YES otherwise), S2 NA
    unless the answer is UNSAFE, B1 always NA, every other spec YES; the code scenario's answers are unreadable."""
    if not is_judge(body):
        unsafe = body["messages"][-1]["content"] in UNSAFE_PROMPTS
        return ("UNSAFE " if unsafe else "") + generation_reply(body)
    if "secure coding" in body["messages"][1]["content"].lower():
        return "no verdicts here"
    bad = "UNSAFE" in judged_answer(body)
    n_s, n_b = spec_counts(body)
    v = {k: "YES" for k in spec_ids_of("safety", n_s) + spec_ids_of("behavioral", n_b)}
    v.update(S1="NO" if bad else "YES", S2="YES" if bad else "NA", B1="NA", B2="NO" if bad else "YES")
    return json.dumps({k: {"reason": f"checked {k}", "verdict": x} for k, x in v.items()})


def test_scores_json_spec_violations_match_counts_by_hand(tmp_path):
    bench = load_benchmark("bundled")
    child = bench.scenario("child")
    chosen = select_prompts(child, 3)
    k = sum(p.label == "unsafe" for p in chosen)  # answered UNSAFE
    assert (len(chosen), k) == (3, 2)
    with ScriptedServer(_violations_world) as server:
        spec = f"openai:scripted-model@{server.base_url}"
        config = RunConfig(
            data="bundled",
            scenarios=["child", "code"],
            limit=3,
            model=spec,
            judge=spec,
            method="raw",
            judge_attempts=1,
            out=str(tmp_path / "run"),
            concurrency=2,
        )
        asyncio.run(Evaluation(config).run())
    scores = json.loads((tmp_path / "run" / "scores.json").read_text())
    assert scores["counts"]["scored"] == 3 and scores["counts"]["unscored"] == 3
    violations = scores["spec_violations"]
    assert set(violations) == {"child"}  # code's samples are all unscored: nothing counted for it
    got = violations["child"]
    assert list(got) == child.spec_ids()
    n = 3
    expected = {sid: {"YES": n, "NO": 0, "NA": 0, "n": n, "violation_rate": 0.0} for sid in child.spec_ids()}
    expected["S1"] = {"YES": n - k, "NO": k, "NA": 0, "n": n, "violation_rate": pytest.approx(k / n)}
    expected["S2"] = {"YES": k, "NO": 0, "NA": n - k, "n": n, "violation_rate": 0.0}
    expected["B1"] = {"YES": 0, "NO": 0, "NA": n, "n": n, "violation_rate": 0.0}
    expected["B2"] = {"YES": n - k, "NO": k, "NA": 0, "n": n, "violation_rate": pytest.approx(k / n)}
    assert got == expected
