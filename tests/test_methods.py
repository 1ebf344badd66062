"""Deliberation methods: exact prefill requests, refusal without prefill, selection logic, runs and comparison."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from method_world import PROMPT, SCEN, prefill_responder
from method_world import run_method as _run
from method_world import scripted_model as _model
from method_world import target_and_judge_yaml as _models_yaml
from scripted_server import Reply, ScriptedServer
from specalign.errors import CapabilityError
from specalign.judge import Judge
from specalign.methods import create_method, make_scorer
from specalign.methods.align3 import AUDIT, BEHAVIOR, SAFETY
from specalign.methods.baselines import vanilla_messages
from specalign.models import settings_from_config
from specalign.runs import Evaluation, RunConfig, compare_runs, format_comparison
from specbench_world import is_judge, judged_answer, spec_counts

REPO = Path(__file__).resolve().parent.parent


def _lists():
    return {"safety": SCEN.numbered("safety"), "behavioral": SCEN.numbered("behavioral")}


# -- prefill: the exact requests -----------------------------------------------------------


def test_align3_sends_three_staged_prefills_as_vllm_expects():
    with ScriptedServer() as server:
        server.script("I plan the steps.  ", "Safety reviewed.", "All specs met.</think>The final answer.")
        out = _run("align3", _model(server, prefill=True))
        bodies = [r.json for r in server.chat_requests]
    assert len(bodies) == 3
    p1 = "<think>\n" + BEHAVIOR.format(**_lists())
    p2 = (p1 + "I plan the steps.").rstrip() + "\n\n" + SAFETY.format(**_lists())
    p3 = (p2 + "Safety reviewed.").rstrip() + "\n\n" + AUDIT.format(**_lists())
    for body, prefix in zip(bodies, (p1, p2, p3), strict=False):
        assert body["messages"][:2] == [
            m.model_dump() for m in vanilla_messages("You are a capable, careful assistant.", SCEN, PROMPT)
        ]
        assert body["messages"][-1] == {"role": "assistant", "content": prefix}
        assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert bodies[0]["stop"] == ["</think>"] and bodies[1]["stop"] == ["</think>"]
    assert "stop" not in bodies[2]
    assert out.response == "The final answer."
    assert out.thought.startswith(BEHAVIOR.format(**_lists())[:40]) and out.thought.endswith("All specs met.")
    assert [s.role for s in out.steps] == ["stage-1:behavior", "stage-2:safety", "stage-3:audit"]
    # the paper's convention: the first call's prompt counts once, completions are summed
    assert out.usage.prompt_tokens == out.steps[0].usage.prompt_tokens
    assert out.usage.completion_tokens == sum(s.usage.completion_tokens for s in out.steps)
    assert out.flags == [] and out.calls == 3


CONTINUATIONS = ("I plan the steps.  ", "Safety reviewed.", "All specs met.</think>The final answer.")


def _prefill_server(mode: str) -> ScriptedServer:
    """A server that answers prefills as vLLM does (``continuation``), as llama-server does (``echo``:
    the whole assistant message), or with a reasoning parser that took the echoed thought (``reasoning``)."""
    return ScriptedServer(prefill_responder(mode, iter(CONTINUATIONS)))


@pytest.mark.parametrize("mode", ["continuation", "echo", "reasoning"])
def test_prefill_gives_the_continuation_alone_whether_or_not_the_server_echoes_the_prefix(mode):
    with _prefill_server(mode) as server:
        out = _run("align3", _model(server, prefill=True))
        prefixes = [r.json["messages"][-1]["content"] for r in server.chat_requests]
    p1 = "<think>\n" + BEHAVIOR.format(**_lists())
    p2 = (p1 + "I plan the steps.").rstrip() + "\n\n" + SAFETY.format(**_lists())
    p3 = (p2 + "Safety reviewed.").rstrip() + "\n\n" + AUDIT.format(**_lists())
    assert prefixes == [p1, p2, p3]
    assert [s.text for s in out.steps][:2] == ["I plan the steps.  ", "Safety reviewed."]
    assert out.response == "The final answer." and out.thought.endswith("All specs met.")
    assert out.thought.count(BEHAVIOR.format(**_lists())[:60]) == 1


def test_strip_prefill_echo_only_removes_a_real_echo():
    from specalign.models._openai import strip_prefill_echo

    assert strip_prefill_echo("<think>\nPlan: ", "<think>\nPlan: go on") == "go on"  # llama-server
    assert strip_prefill_echo("<think>\nPlan: ", "go on") == "go on"  # vLLM
    assert strip_prefill_echo("<think>\nPlan: ", "Plan: go on") == "go on"  # a reasoning parser took <think>
    assert strip_prefill_echo("<think>\n", "\nmore") == "\nmore"  # no text of the prefix's own: nothing to strip
    assert strip_prefill_echo("", "text") == "text"
    assert strip_prefill_echo("<think>\nPlan: ", "<think>\nPlan") == "<think>\nPlan"  # not the whole prefix


def test_custom_chat_template_is_sent_with_every_request(tmp_path):
    template = tmp_path / "qwen3-raw.jinja"
    template.write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    with ScriptedServer() as server:
        server.script("x</think>answer")
        _run("zero_think", _model(server, prefill=True, chat_template=str(template)))
        body = server.chat_requests[0].json
    assert body["chat_template"] == template.read_text()
    assert body["messages"][-1] == {"role": "assistant", "content": "<think>\n\n</think>\n\n"}


def test_thought_never_closed_is_closed_by_the_method_and_flagged():
    with ScriptedServer() as server:
        server.script("a", "b", "c, and I answer inside my thought", "Here is the answer.")
        out = _run("align3", _model(server, prefill=True))
        last = server.chat_requests[-1].json
    assert last["messages"][-1]["content"].endswith("c, and I answer inside my thought\n</think>\n\n")
    assert "stop" not in last
    assert out.response == "Here is the answer." and "thought_closed_by_method" in out.flags
    assert [s.role for s in out.steps][-1] == "answer"


def test_align3_stage_order_and_subset_follow_params():
    with ScriptedServer() as server:
        server.script("one", "two</think>done")
        out = _run("align3", _model(server, prefill=True), {"stages": ["safety", "behavior"]})
        bodies = [r.json for r in server.chat_requests]
    assert bodies[0]["messages"][-1]["content"] == "<think>\n" + SAFETY.format(**_lists())
    assert bodies[1]["messages"][-1]["content"].endswith(BEHAVIOR.format(**_lists()))
    assert [s.role for s in out.steps] == ["stage-1:safety", "stage-2:behavior"] and out.response == "done"


def test_more_think_replaces_end_of_thinking_with_wait():
    with ScriptedServer() as server:
        server.script("first idea", "second idea", "third idea</think>answer")
        out = _run("more_think", _model(server, prefill=True))
        prefixes = [r.json["messages"][-1]["content"] for r in server.chat_requests]
    assert prefixes == [
        "<think>\n",
        "<think>\nfirst idea\n\nWait, ",
        "<think>\nfirst idea\n\nWait, second idea\n\nWait, ",
    ]
    assert out.response == "answer" and out.thought == "first idea\n\nWait, second idea\n\nWait, third idea"
    assert [s.role for s in out.steps] == ["think-1", "think-2", "think-3"]


def test_more_think_rethink_count_sets_the_number_of_cycles():
    with ScriptedServer() as server:
        server.script("a", "b", "c", "d", "e</think>f")
        out = _run("more_think", _model(server, prefill=True), {"rethink_count": 5})
    assert len(out.steps) == 5 and out.response == "f"


def test_zero_think_prefills_an_empty_thought():
    with ScriptedServer() as server:
        server.script("Direct answer.")
        out = _run("zero_think", _model(server, prefill=True))
        body = server.chat_requests[0].json
    assert body["messages"][-1]["content"] == "<think>\n\n</think>\n\n"
    assert out.response == "Direct answer." and out.thought == ""


def test_vllm_reasoning_parser_output_is_kept_inside_the_thought():
    with ScriptedServer() as server:
        server.script(
            Reply("", reasoning_content="more thinking"),
            Reply("", reasoning_content="safe"),
            Reply("The answer.", reasoning_content="audited"),
        )
        out = _run("align3", _model(server, prefill=True))
    assert out.response == "The answer." and out.thought.endswith("audited")
    assert "more thinking" in out.thought


# -- no prefill: refuse, or the documented multi-turn equivalent ------------------------------


@pytest.mark.parametrize("method", ["align3", "more_think", "zero_think"])
def test_methods_needing_prefill_refuse_a_model_that_does_not_declare_it(method):
    with ScriptedServer() as server:
        model = _model(server)  # an OpenAI-compatible server: prefill not declared
        with pytest.raises(CapabilityError, match="prefill: true"):
            create_method(method).check(model)
        with pytest.raises(CapabilityError):
            _run(method, model)
        assert server.chat_count == 0


def test_declared_prefill_false_overrides_a_backend_that_could():
    settings = settings_from_config("m", {"model_name": "x", "gguf": "local", "prefill": False}, "models.yaml")
    from specalign.models._model import Model  # noqa: PLC0415

    class _Stub:  # only the declaration is read
        supports_prefill = True

    assert Model(settings, _Stub()).can_prefill is False  # type: ignore[arg-type]


def test_cli_refuses_before_any_call_with_one_line_and_exit_2(tmp_path):
    with ScriptedServer() as server:
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "300"}
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "specalign.cli",
                "run",
                "--model",
                f"openai:scripted-model@{server.base_url}",
                "--judge",
                f"openai:scripted-model@{server.base_url}",
                "--method",
                "vanilla,align3",
                "--limit",
                "1",
                "-o",
                str(tmp_path / "cmp"),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert server.chat_count == 0
    assert proc.returncode == 2, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "align3" in lines[0] and "prefill: true" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_multi_turn_equivalent_without_prefill():
    with ScriptedServer() as server:
        server.script("thinking about behavior", "thinking about safety", "auditing", "Final answer.")
        out = _run("align3", _model(server), {"no_prefill": "multi_turn"})
        bodies = [r.json for r in server.chat_requests]
    assert len(bodies) == 4
    assert all("continue_final_message" not in b for b in bodies)
    roles = [m["role"] for m in bodies[-1]["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user", "assistant", "user"]
    assert BEHAVIOR.format(**_lists()).strip() in bodies[0]["messages"][1]["content"]
    assert SAFETY.format(**_lists()).strip() in bodies[1]["messages"][-1]["content"]
    assert out.response == "Final answer." and "multi_turn" in out.flags
    assert "thinking about safety" in out.thought


# -- Best-of-N and TPO: selection by scores -------------------------------------------------


def _quality_judge(body):
    """Judge verdicts from the answer: 'quality=K' → K behavioral YES (rest NO); UNSAFE breaks S1; JUNK → prose."""
    answer = judged_answer(body)
    if "JUNK" in answer:
        return "I cannot decide."
    n_s, n_b = spec_counts(body)
    k = int(m.group(1)) if (m := re.search(r"quality=(\d+)", answer)) else 0
    v = {f"S{i}": "YES" for i in range(1, n_s + 1)}
    if "UNSAFE" in answer:
        v["S1"] = "NO"
    v.update({f"B{i}": "YES" if i <= k else "NO" for i in range(1, n_b + 1)})
    return json.dumps({key: {"reason": "r", "verdict": x} for key, x in v.items()})


def _world(samples: dict[int, str], rewrite=None):
    """Judge by quality; vanilla samples by seed; TPO critique/guidance/update by their prompts."""

    def responder(body):
        if is_judge(body):
            return _quality_judge(body)
        system = body["messages"][0]["content"]
        user = body["messages"][-1]["content"]
        if system.startswith("You evaluate answers"):
            return "GUIDANCE: raise quality" if "Turn this critique" in user else "CRITIQUE: A is better"
        if "Instructions for improving it" in user:
            return rewrite(body) if rewrite else "<answer>quality=1</answer>"
        return samples.get(body.get("seed", 0), "quality=0")

    return responder


def _judge_scorer(server):
    return make_scorer("judge", judge=Judge(_model(server), max_attempts=2), alpha=0.3, na_policy="official")


def test_best_of_n_returns_the_highest_sar_and_skips_unscored_candidates():
    samples = {0: "quality=3", 1: "quality=9 UNSAFE", 2: "quality=7", 3: "quality=9 JUNK", 4: "quality=7"}
    with ScriptedServer(_world(samples)) as server:
        out = _run("best_of_n", _model(server), {"n": 5}, scorer=_judge_scorer(server))
        seeds = sorted(r.json.get("seed") for r in server.chat_requests if not is_judge(r.json))
    assert seeds == [0, 1, 2, 3, 4]  # sample k is seeded base + k
    assert out.response == "quality=7" and out.stats["chosen_index"] == 2  # ties go to the earliest
    assert out.stats == {"candidates": 5, "scored": 4, "unscored": 1, "chosen_round": 0, "chosen_index": 2}
    scores = [s for s in out.steps if s.role == "score"]
    assert [s.status for s in scores] == ["ok", "ok", "ok", "unscored", "ok"]
    assert scores[1].score == pytest.approx(0.0)  # unsafe: SAR 0 however helpful
    assert out.scorer_usage.completion_tokens > 0
    assert out.usage.completion_tokens == sum(s.usage.completion_tokens for s in out.steps if s.source == "target")


def test_best_of_n_with_no_scorable_candidate_keeps_the_first_and_flags_it():
    with ScriptedServer(_world({0: "JUNK a", 1: "JUNK b"})) as server:
        out = _run("best_of_n", _model(server), {"n": 2}, scorer=_judge_scorer(server))
    assert out.response == "JUNK a" and "no_candidate_scored" in out.flags


def test_best_of_n_with_a_reward_function():
    with ScriptedServer(_world({0: "short", 1: "a much longer answer", 2: "mid length"})) as server:
        out = _run(
            "best_of_n",
            _model(server),
            {"n": 3, "scorer": "method_rewards:by_length"},
            scorer=make_scorer("method_rewards:by_length", judge=None, alpha=0.3, na_policy="official"),
        )
        assert not any(is_judge(r.json) for r in server.chat_requests)
    assert out.response == "a much longer answer"
    broken = make_scorer("method_rewards:broken", judge=None, alpha=0.3, na_policy="official")
    with ScriptedServer(_world({0: "x", 1: "y"})) as server:
        out = _run("best_of_n", _model(server), {"n": 2}, scorer=broken)
    assert "no_candidate_scored" in out.flags
    assert "reward model offline" in out.steps[1].note


def test_tpo_learns_from_best_and_worst_and_counts_unparsed_rewrites():
    rewrites = iter(["<answer>quality=8</answer>", "no tags here", "<answer>quality=10", "quality=2 without tags"])

    def rewrite(body):
        return next(rewrites)

    with ScriptedServer(_world({0: "quality=2", 1: "quality=5"}, rewrite)) as server:
        out = _run("tpo", _model(server), {"samples": 2, "iterations": 2}, scorer=_judge_scorer(server))
        critiques = [
            r.json
            for r in server.chat_requests
            if r.json["messages"][0]["content"].startswith("You evaluate")
            and "Answer B" in r.json["messages"][-1]["content"]
        ]
    # round 1: chosen quality=5, rejected quality=2; round 2: chosen is the rewrite quality=8
    first = critiques[0]["messages"][-1]["content"]
    assert "reward" in first and first.index("quality=5") < first.index("Answer B") < first.index("quality=2")
    assert "quality=8" in critiques[1]["messages"][-1]["content"].split("Answer B")[0]
    assert out.response == "quality=10"  # an unclosed <answer> counts when the model stopped on its own
    assert out.stats["unparsed"] == 2 and out.stats["candidates"] == 6 and out.stats["chosen_round"] == 2
    roles = [s.role for s in out.steps if s.source == "target"]
    assert roles.count("critique") == 2 and roles.count("guidance") == 2 and roles.count("update") == 4
    assert sum(s.status == "unparsed" for s in out.steps) == 2


@pytest.mark.parametrize(
    ("samples", "why"),
    [
        ({0: "quality=4", 1: "JUNK"}, "only one candidate was scored"),
        ({0: "JUNK a", 1: "JUNK b"}, "no candidate was scored"),
    ],
)
def test_tpo_never_critiques_an_answer_against_itself(samples, why):
    with ScriptedServer(_world(samples)) as server:
        out = _run("tpo", _model(server), {"samples": 2, "iterations": 2}, scorer=_judge_scorer(server))
        asked = [r.json["messages"][-1]["content"] for r in server.chat_requests if not is_judge(r.json)]
        judged = sum(is_judge(r.json) for r in server.chat_requests)
    assert not any("Answer B" in a or "Instructions for improving it" in a for a in asked)  # no critique, no rewrite
    skipped = [s for s in out.steps if s.status == "skipped"]
    assert len(skipped) == 1 and skipped[0].role == "critique" and skipped[0].round == 1
    assert why in skipped[0].note and "skipped 2 round(s)" in skipped[0].note
    assert out.stats["rounds_skipped"] == 2 and out.stats["candidates"] == 2
    assert len(asked) == 2 and out.calls == 2 + judged  # a skipped step is no call


# -- Self-Refine -----------------------------------------------------------------------------


def test_self_refine_stops_when_feedback_keeps_the_answer():
    with ScriptedServer() as server:
        server.script("draft", "S1 met. B1 met.\nVERDICT: KEEP")
        out = _run("self_refine", _model(server))
    assert out.response == "draft" and out.stats == {"rounds": 1, "refinements": 0, "stopped_early": 1}
    assert [s.role for s in out.steps] == ["answer", "feedback"]


def test_self_refine_refines_with_bounded_history_and_max_iters():
    with ScriptedServer() as server:
        server.script(
            "draft", "fix B2\nVERDICT: REVISE", "better", "no verdict line", "best", "fix B3\nVERDICT: REVISE", "final"
        )
        out = _run("self_refine", _model(server), {"max_iters": 3, "max_history": 1})
        bodies = [r.json for r in server.chat_requests]
    assert out.response == "final" and out.stats["refinements"] == 3
    assert [s.role for s in out.steps] == ["answer", "feedback", "refine"] * 1 + ["feedback", "refine"] * 2
    feedback = bodies[1]["messages"]
    assert "S1." in feedback[0]["content"] and "<answer>\ndraft\n</answer>" in feedback[1]["content"]
    last_refine = bodies[-1]["messages"][-1]["content"]
    assert "best" in last_refine and "draft" not in last_refine  # max_history=1: only the last pair
    assert [s.status for s in out.steps if s.role == "feedback"] == ["ok", "unparsed", "ok"]


# -- runs: steps recorded, generations shared, one comparison table ------------------------


def test_run_records_every_step_and_shares_vanilla_generations(tmp_path):
    samples = {0: "quality=4", 1: "quality=6", 2: "quality=5"}
    with ScriptedServer(_world(samples)) as server:
        cfg = dict(
            data="bundled",
            scenarios=["child"],
            limit=2,
            model="target",
            judge="judge",
            models_config=_models_yaml(tmp_path, server),
            concurrency=2,
        )
        asyncio.run(Evaluation(RunConfig(**cfg, method="vanilla", out=str(tmp_path / "vanilla"))).run())
        before = sum(not is_judge(r.json) for r in server.chat_requests)
        asyncio.run(
            Evaluation(RunConfig(**cfg, method="best_of_n", method_params={"n": 3}, out=str(tmp_path / "bon"))).run()
        )
        bon_generations = sum(not is_judge(r.json) for r in server.chat_requests) - before
    assert before == 2 and bon_generations == 4  # sample 0 of each prompt is vanilla's call, from the cache
    records = [json.loads(x) for x in (tmp_path / "bon" / "generations.jsonl").read_text().splitlines()]
    assert all(r["response"] == "quality=6" for r in records)
    steps = records[0]["steps"]
    assert [s["role"] for s in steps] == ["sample", "score"] * 3 and steps[0]["cached"] is True
    rows = compare_runs([str(tmp_path / "vanilla"), str(tmp_path / "bon")])
    assert rows[0].delta_sar == 0 and rows[1].delta_sar == pytest.approx(0.7 * (6 - 4) / 10)
    assert rows[1].avg_calls == 3 and rows[1].avg_completion_tokens == 3 * rows[0].avg_completion_tokens
    md = format_comparison(rows, "markdown")
    assert "| best_of_n n=3 |" in md and "+14.00" in md


def test_cli_runs_several_methods_and_prints_one_table(tmp_path):
    with ScriptedServer(_world({0: "quality=4", 1: "quality=8"})) as server:
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "200"}
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "specalign.cli",
                "run",
                "--models-config",
                _models_yaml(tmp_path, server),
                "--model",
                "target",
                "--judge",
                "judge",
                "-s",
                "child",
                "--limit",
                "1",
                "--method",
                "vanilla",
                "--method",
                "best_of_n,align3",
                "-p",
                "best_of_n.n=2",
                "-p",
                "no_prefill=multi_turn",
                "-o",
                str(tmp_path / "cmp"),
                "--json",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["method"] for r in rows] == ["vanilla", "best_of_n", "align3"]
    assert rows[1]["method_params"] == {"n": 2} and rows[2]["method_params"] == {"no_prefill": "multi_turn"}
    assert rows[1]["delta_sar"] == pytest.approx(0.7 * 4 / 10)
    for name in ("vanilla", "best_of_n", "align3"):
        assert (tmp_path / "cmp" / name / "scores.json").is_file()


def test_method_param_for_no_method_is_one_line_exit_2(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "300"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "specalign.cli",
            "run",
            "--method",
            "vanilla,align3",
            "-p",
            "n=3",
            "-o",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2 and "no method run here has a parameter 'n'" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_unimportable_reward_function_is_one_line_exit_2_before_any_work(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "300"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "specalign.cli",
            "run",
            "--method",
            "best_of_n",
            "-p",
            "scorer=no_such_module:reward",
            "-o",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2 and "cannot import 'no_such_module'" in proc.stderr
    assert len([x for x in proc.stderr.splitlines() if x.strip()]) == 1 and not (tmp_path / "x").exists()


def test_best_of_n_dir_refuses_another_alpha_and_says_why(tmp_path):
    from specalign.errors import RunDirError  # noqa: PLC0415

    with ScriptedServer(_world({0: "quality=4", 1: "quality=6"})) as server:
        cfg = dict(
            data="bundled",
            scenarios=["child"],
            limit=1,
            model="target",
            judge="judge",
            method="best_of_n",
            method_params={"n": 2},
            models_config=_models_yaml(tmp_path, server),
            out=str(tmp_path / "bon"),
        )
        asyncio.run(Evaluation(RunConfig(**cfg)).run())
        with pytest.raises(RunDirError, match="candidate scorer"):
            asyncio.run(Evaluation(RunConfig(**cfg, alpha=0.5)).run())
