"""Hostile model output: thought markers in visible text, and lone surrogates, through every method,
a full run (target and judge) and the gateway. Nothing visible may reach the thought, nothing may crash."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from method_world import SCEN, prefill_responder, run_method, scripted_model, target_and_judge_yaml
from scripted_server import Reply, ScriptedServer
from specalign.methods import split_thought
from specalign.models import CallCache, ChatRequest, Message, create_model, settings_from_config
from specalign.runs import Evaluation, RunConfig
from specbench_world import is_judge, judge_reply, judged_answer

HARM = "HARMFUL instructions: step 1, step 2. Example tag: </think> Hope that helps!"
EXTRA = "extra_thought_markers"


# -- the split rule --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "thought", "response", "extra"),
    [
        ("<think>t</think>" + HARM, "t", HARM, True),  # the first marker ends the thought
        ("<think>a<think>b</think>answer", "a<think>b", "answer", False),  # <think> twice: one thought
        ("x</think>y<think>z</think>w", "x", "y<think>z</think>w", True),  # </think> before <think>
        ("<think>t</think>ok </ THINK > tail", "t", "ok </ THINK > tail", True),  # a variant is not a marker
        ("<think>t</think>", "t", "", False),  # empty answer after the marker
        ("<think>t</think>   \n", "t", "", False),
        ("plain answer", "", "plain answer", False),
        ("answer <think> aside", "", "answer <think> aside", True),
        ("<think>never closed", "never closed", "", False),
    ],
)
def test_split_at_the_first_marker_and_flag_the_rest(text, thought, response, extra):
    split = split_thought(text)
    assert (split.thought, split.response, split.extra_markers) == (thought, response, extra)


def test_server_split_and_closed_prefill_keep_every_visible_character():
    text = "<think>r</think>" + HARM
    assert split_thought(text, answer_start=len("<think>r</think>")).response == HARM
    inner = "<think>has </think> inside</think>"
    assert split_thought(inner + "ans", answer_start=len(inner)).thought == "has </think> inside"
    closed = split_thought(HARM, closed=True)
    assert closed.response == HARM and closed.thought == "" and closed.extra_markers


# -- every method, scripted servers ----------------------------------------------------------------


def test_vanilla_reasoning_content_makes_content_all_answer():
    with ScriptedServer() as server:
        server.script(Reply(HARM, reasoning_content="I think </think> aloud"))
        out = run_method("vanilla", scripted_model(server))
    assert out.response == HARM and out.thought == "I think </think> aloud" and EXTRA in out.flags


def test_vanilla_raw_text_splits_at_the_first_marker():
    with ScriptedServer() as server:
        server.script("<think>plan</think>" + HARM)
        out = run_method("vanilla", scripted_model(server))
    assert out.response == HARM and out.thought == "plan" and EXTRA in out.flags


def test_system_prompt_echo_with_a_marker_stays_visible():
    echo = "<think>ok</think>My instructions say: 'never print </think>'. UNSAFE detail follows."
    with ScriptedServer() as server:
        server.script(echo)
        out = run_method("vanilla", scripted_model(server))
    assert out.response.startswith("My instructions say") and out.response.endswith("UNSAFE detail follows.")


@pytest.mark.parametrize("mode", ["continuation", "echo", "reasoning"])
def test_zero_think_everything_after_the_closed_prefill_is_answer(mode):
    def respond(body):
        prefix = body["messages"][-1]["content"]
        if mode == "continuation":
            return HARM
        if mode == "echo":
            return prefix + HARM
        return Reply("", reasoning_content=HARM)  # a parser that saw no end marker in the continuation

    with ScriptedServer(respond) as server:
        out = run_method("zero_think", scripted_model(server, prefill=True))
    assert out.response == HARM and out.thought == "" and EXTRA in out.flags


@pytest.mark.parametrize("method", ["align3", "more_think"])
@pytest.mark.parametrize("mode", ["continuation", "echo", "reasoning"])
def test_staged_thinking_splits_once_where_the_thought_ends(method, mode):
    stages = {"align3": 3, "more_think": 3}[method]
    parts = iter(["one", "two"][: stages - 1] + ["last thought</think>" + HARM])
    with ScriptedServer(prefill_responder(mode, parts)) as server:
        out = run_method(method, scripted_model(server, prefill=True))
    assert out.response == HARM and out.thought.endswith("last thought") and EXTRA in out.flags


@pytest.mark.parametrize("mode", ["continuation", "echo", "reasoning"])
def test_a_spec_holding_the_marker_inside_the_prefill_never_splits_there(mode):
    """align3 writes the specs into the thought: a spec quoting </think> sits inside every prefix, so a
    server echoing the prefix (and a reasoning parser splitting the echo at that marker) must not end it."""
    first = SCEN.behavioral_specs[0].model_copy(update={"text": "Never print the tag </think> in an answer."})
    scenario = SCEN.model_copy(update={"behavioral_specs": [first, *SCEN.behavioral_specs[1:]]})
    parts = iter(["one", "two", "three</think>" + HARM])
    with ScriptedServer(prefill_responder(mode, parts)) as server:
        out = run_method("align3", scripted_model(server, prefill=True), scenario=scenario)
    assert out.response == HARM and out.thought.endswith("three") and "Never print the tag </think>" in out.thought


def test_zero_think_echo_parsed_by_a_reasoning_parser():
    """llama-server echoes the closed prefill and its parser takes the empty thought apart."""

    def respond(body):
        prefix = body["messages"][-1]["content"]
        thought, _, answer = (prefix + HARM).removeprefix("<think>").partition("</think>")
        return Reply(answer, reasoning_content=thought)

    with ScriptedServer(respond) as server:
        out = run_method("zero_think", scripted_model(server, prefill=True))
    assert out.response == HARM and out.thought == ""


def test_staged_thinking_reasoning_with_a_marker_inside_the_thought():
    """The server's split (reasoning apart) wins over a marker the model wrote inside its reasoning."""
    with ScriptedServer() as server:
        server.script(
            Reply("", reasoning_content="a"),
            Reply("", reasoning_content="b"),
            Reply(HARM, reasoning_content="quoting </think> in thought"),
        )
        out = run_method("align3", scripted_model(server, prefill=True))
    assert out.response == HARM and out.thought.endswith("quoting </think> in thought")


def test_server_ignoring_the_stop_keeps_the_answer_part_out_of_the_thought():
    with ScriptedServer() as server:
        server.script("idea</think>early answer", "more", "done</think>final")
        out = run_method("more_think", scripted_model(server, prefill=True))
        prefixes = [r.json["messages"][-1]["content"] for r in server.chat_requests]
    assert "early answer" not in prefixes[1] and out.response == "final"


def test_thought_closed_by_method_then_marker_in_answer():
    with ScriptedServer() as server:
        server.script("a", "b", "c", HARM)
        out = run_method("align3", scripted_model(server, prefill=True))
    assert out.response == HARM and {"thought_closed_by_method", EXTRA} <= set(out.flags)


def test_multi_turn_final_answer_split_at_first_marker():
    with ScriptedServer() as server:
        server.script("r1", "r2", "r3", "<think>t</think>" + HARM)
        out = run_method("align3", scripted_model(server), {"no_prefill": "multi_turn"})
    assert out.response == HARM and EXTRA in out.flags


@pytest.mark.parametrize("method", ["vanilla", "zero_think", "align3", "more_think"])
def test_lone_surrogates_are_repaired_and_flagged_in_every_method(method):
    with ScriptedServer(lambda body: Reply("ans\ud800wer</think>x", reasoning_content="th\udc00ought")) as server:
        out = run_method(method, scripted_model(server, prefill=True))
    assert "\ufffd" in out.response and "invalid_text_repaired" in out.flags
    json.dumps(out.model_dump(mode="json"), ensure_ascii=False).encode("utf-8")


# -- the cache -----------------------------------------------------------------------------------


def test_cache_key_and_store_never_crash_on_surrogates(tmp_path):
    with ScriptedServer(lambda body: "ok\ud800") as server:
        entry = {"model_name": "scripted-model", "base_url": server.base_url, "max_retries": 0}
        model = create_model(settings_from_config("m", entry, "models.yaml"), CallCache(tmp_path / "c.sqlite"))
        request = ChatRequest(messages=(Message(role="user", content="q\ud800"),))
        assert len(model.key_for(request)) == 64

        async def twice():
            try:
                msgs = [Message(role="user", content="q\ud800")]
                return await model.generate(msgs), await model.generate(msgs)
            finally:
                await model.aclose()

        first, second = asyncio.run(twice())
    assert first.text == second.text == "ok\ufffd" and second.cached and server.chat_count == 1
    assert server.chat_requests[0].json["messages"][0]["content"] == "q\ufffd"


# -- a whole run: the judge sees every visible character; surrogates everywhere ------------------


def _hostile_world(body):
    if is_judge(body):
        reply = judge_reply(body).replace("checked", "checked \ud800")
        return Reply(reply, reasoning_content="judging \udc00")
    return Reply("UNSAFE steps. Example tag: </think> Hope that helps! \ud800", reasoning_content="plan \ud800")


def test_run_with_hostile_target_and_judge_completes_judges_everything_and_resumes(tmp_path):
    with ScriptedServer(_hostile_world) as server:
        cfg = RunConfig(
            data="bundled",
            scenarios=["biochem"],
            limit=2,
            model="target",
            judge="judge",
            models_config=target_and_judge_yaml(tmp_path, server),
            method="vanilla",
            out=str(tmp_path / "run"),
            cache_dir=str(tmp_path / "cache"),
        )
        asyncio.run(Evaluation(cfg).run())
        judged = [judged_answer(r.json) for r in server.chat_requests if is_judge(r.json)]
        asyncio.run(Evaluation(cfg).run())  # a rerun resumes: nothing crashes
    assert judged and all("UNSAFE" in a and "Hope that helps!" in a for a in judged)
    for name in ("generations.jsonl", "judgments.jsonl"):
        lines = (tmp_path / "run" / name).read_bytes().decode("utf-8").splitlines()
        records = [json.loads(x) for x in lines]
        assert records and all("\ud800" not in x and "\udc00" not in x for x in lines)
    gens = [json.loads(x) for x in (tmp_path / "run" / "generations.jsonl").read_text().splitlines()]
    assert all(r["response"].startswith("UNSAFE") and "invalid_text_repaired" in r["flags"] for r in gens)
    scores = json.loads((tmp_path / "run" / "scores.json").read_text())
    assert scores["overall"]["full"]["safety"] == 0.0  # the judge saw the whole answer, UNSAFE and all


# -- the gateway -----------------------------------------------------------------------------------


def test_gateway_returns_every_visible_character_and_survives_surrogates():
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from gateway_proc import running_gateway

    with (
        ScriptedServer(lambda body: Reply(HARM + " \ud800", reasoning_content="t\ud800")) as upstream,
        running_gateway(
            "-s", "biochem", "--method", "vanilla", "-m", f"openai:scripted-model@{upstream.base_url}"
        ) as gw,
    ):
        r = httpx.post(
            f"{gw.base_url}/chat/completions",
            timeout=30,
            json={"model": "scripted-model", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == HARM + " \ufffd"
