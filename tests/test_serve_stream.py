"""`stream: true` as the tokens come: the official `openai` SDK against the real gateway process, a scripted
upstream that streams server-sent events (tests/helpers/scripted_server.py), and the methods' answer streaming
on its own, chunked adversarially. No test waits for a time: an upstream that pauses mid-stream until the test
releases it shows what arrived before the upstream finished."""

from __future__ import annotations

import asyncio
import json
import threading

import httpx
import openai
import pytest

from gateway_proc import running_gateway
from method_world import SCEN, scripted_model
from scripted_server import Reply, ScriptedServer
from specalign.benchmark import Prompt
from specalign.methods import create_method
from waiting import wait_until

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

MODEL = "scripted-model"


@pytest.fixture(scope="module")
def upstream():
    with ScriptedServer() as server:
        yield server


@pytest.fixture(scope="module")
def gw(upstream, tmp_path_factory):
    config = tmp_path_factory.mktemp("models") / "models.yaml"
    config.write_text(
        f"up:\n  model_name: {MODEL}\n  base_url: {upstream.base_url}\n  prefill: true\n  max_retries: 0\n"
    )
    args = ("-s", "child", "--method", "vanilla,align3,zero_think", "-m", "up", "--models-config", str(config))
    with running_gateway(*args) as gateway:
        yield gateway


@pytest.fixture(autouse=True)
def _fresh(upstream):
    upstream.script()  # each test scripts its own replies; the default answer echoes
    yield
    with upstream._lock:
        upstream._queue.clear()


def client(gw) -> openai.OpenAI:  # noqa: ANN001
    return openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)


def stream(c: openai.OpenAI, text: str = "a story about owls", **ext):  # noqa: ANN201
    extra = {"specalign": ext} if ext else None
    return c.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": text}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body=extra,
    )


def content_of(chunks) -> str:  # noqa: ANN001
    return "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)


def thought_of(chunks) -> str:  # noqa: ANN001
    return "".join((ch.choices[0].delta.model_extra or {}).get("reasoning_content", "") for ch in chunks if ch.choices)


def raw_events(gw, **ext) -> list[str]:  # noqa: ANN001
    """The ``data:`` lines of one streamed answer, as sent."""
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "owls"}]}
    if ext:
        body["specalign"] = ext
    with httpx.stream("POST", f"{gw.base_url}/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        return [line[len("data: ") :] for line in r.iter_lines() if line.startswith("data: ")]


# -- the gateway --------------------------------------------------------------------------------


def test_vanilla_answer_arrives_before_the_upstream_has_finished(gw, upstream):
    gate = threading.Event()
    pieces = [{"reasoning_content": "private "}, {"reasoning_content": "plan"}]
    pieces += [{"content": w} for w in ("Once ", "upon ", "a ", "time ", "an ", "owl ", "shared.")]
    upstream.script(Reply("x", chunks=pieces, pause_after=5, gate=gate))
    seen = []
    for ch in stream(client(gw)):
        seen.append(ch)
        if content_of(seen) == "Once upon a":
            assert not gate.is_set() and upstream.streams_paused == 1
            gate.set()  # the upstream is still holding the rest: the client already has these tokens
    assert gate.is_set(), "the first tokens did not come before the upstream finished"
    assert seen[0].choices[0].delta.role == "assistant"
    assert content_of(seen) == "Once upon a time an owl shared."
    assert len([ch for ch in seen if ch.choices and ch.choices[0].delta.content]) >= 5
    finish = [ch for ch in seen if ch.choices and ch.choices[0].finish_reason]
    assert [ch.choices[0].finish_reason for ch in finish] == ["stop"]
    assert finish[0].model_extra["specalign"]["method"] == "vanilla"
    assert seen[-1].choices == [] and seen[-1].usage.completion_tokens > 0
    assert "private" not in "".join(ch.model_dump_json() for ch in seen)
    assert len({ch.id for ch in seen}) == 1


def test_align3_streams_its_final_stage_only(gw, upstream):
    gate = threading.Event()
    final = [{"content": "still thinking "}, {"content": "</th"}, {"content": "ink>\n\nThe "}, {"content": "owl "}]
    final += [{"content": "sleeps "}, {"content": "by day."}]
    upstream.script(
        "first stage thought",
        "second stage thought",
        Reply("x", chunks=final, pause_after=4, gate=gate),
    )
    n0 = upstream.chat_count
    seen = []
    for ch in stream(client(gw), method="align3"):
        seen.append(ch)
        if content_of(seen) == "The owl":
            assert upstream.chat_count - n0 == 3 and not gate.is_set()
            gate.set()
    assert gate.is_set()
    assert content_of(seen) == "The owl sleeps by day."
    assert "thought" not in content_of(seen) and "thinking" not in content_of(seen)
    sent = [r.json for r in upstream.chat_requests[-3:]]
    assert [r.get("stream") for r in sent] == [None, None, True], "only the final stage streams"
    ext = next(ch for ch in seen if ch.choices and ch.choices[0].finish_reason).model_extra["specalign"]
    assert ext["method"] == "align3" and ext["upstream_calls"] == 3


def test_align3_whose_last_stage_never_closes_streams_the_closing_call(gw, upstream):
    upstream.script(
        "one", "two", Reply("three, no end marker"), Reply("x", chunks=[{"content": " Owls "}, {"content": "hoot."}])
    )
    chunks = list(stream(client(gw), method="align3"))
    assert content_of(chunks) == "Owls hoot."
    assert [r.json.get("stream") for r in upstream.chat_requests[-4:]] == [None, None, True, True]


def test_thought_only_when_asked(gw, upstream):
    pieces = [
        {"reasoning_content": "secret "},
        {"reasoning_content": "plan"},
        {"content": "Hello "},
        {"content": "owl"},
    ]
    upstream.script(Reply("x", chunks=pieces), Reply("x", chunks=pieces))
    plain = raw_events(gw)
    asked = list(stream(client(gw), include_thought=True))
    assert not any("secret" in e for e in plain)
    assert thought_of(asked) == "secret plan" and content_of(asked) == "Hello owl"
    assert json.loads(plain[-2])["choices"] == [] or json.loads(plain[-2])["choices"][0]["finish_reason"] == "stop"
    assert plain[-1] == "[DONE]"


def test_markers_split_across_chunks_never_leak_the_thought(gw, upstream):
    pieces = [
        {"content": c} for c in ("<thi", "nk>my hidden ", "reasoning</", "think", ">\n\nAn", "swer </think> kept")
    ]
    upstream.script(Reply("x", chunks=pieces))
    chunks = list(stream(client(gw)))
    assert content_of(chunks) == "Answer </think> kept"
    assert "hidden" not in "".join(ch.model_dump_json() for ch in chunks)
    flags = next(ch for ch in chunks if ch.choices and ch.choices[0].finish_reason).model_extra["specalign"]["flags"]
    assert "extra_thought_markers" in flags


@pytest.mark.parametrize("how", ["reset", "error"])
def test_upstream_failure_after_the_first_byte_ends_with_an_error_event(gw, upstream, how):
    pieces = [{"reasoning_content": "t"}, {"content": "Half "}, {"content": "an "}, {"content": "answer"}]
    upstream.script(Reply("x", chunks=pieces, fail_after=3, fail=how))
    events = raw_events(gw)
    assert json.loads(events[0])["choices"][0]["delta"]["role"] == "assistant"
    texts = [json.loads(e)["choices"][0]["delta"].get("content") for e in events[1:-2]]
    assert "".join(t or "" for t in texts) == "Half an"
    error = json.loads(events[-2])
    assert set(error) == {"error"} and error["error"]["code"] == "upstream_unavailable"
    assert error["error"]["type"] == "upstream_error"
    assert events[-1] == "[DONE]"
    assert not any('"finish_reason":"stop"' in e for e in events)
    upstream.script(Reply("x", chunks=pieces, fail_after=3, fail=how))
    with pytest.raises(openai.APIError):
        list(stream(client(gw)))


def test_failure_before_the_first_byte_keeps_its_status(gw, upstream):
    upstream.script(Reply.error(500, "boom"))
    with pytest.raises(openai.APIStatusError) as e:
        list(stream(client(gw)))
    assert e.value.status_code == 502 and e.value.body["code"] == "upstream_unavailable"


def test_client_disconnect_cancels_the_upstream_call(gw, upstream):
    gate = threading.Event()
    pieces = [{"reasoning_content": "t"}, {"content": "Once "}, {"content": "upon"}]
    upstream.script(Reply("x", chunks=pieces, pause_after=2, gate=gate))
    gone = upstream.streams_abandoned
    before = _metric(gw, 'specalign_client_disconnects_total{stage="answer"}')
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "owls"}]}
    with httpx.stream("POST", f"{gw.base_url}/chat/completions", json=body, timeout=30) as r:
        for line in r.iter_lines():
            if "Once" in line:
                break  # leave with the upstream still paused
    wait_until(lambda: upstream.streams_abandoned == gone + 1, what="the upstream stream to be closed")
    wait_until(lambda: _metric(gw, 'specalign_client_disconnects_total{stage="answer"}') == before + 1)
    gate.set()
    assert httpx.get(f"{gw.url}/health").json()["in_flight"] == 0


def test_hostile_deltas_are_repaired_as_in_the_plain_path(gw, upstream):
    pieces = [{"reasoning_content": "r"}, {"content": "A \x1b[31mred\x1b[0m "}, {"content": "x\ud800y"}]
    upstream.script(Reply("x", chunks=pieces), Reply("x", chunks=pieces))
    chunks = list(stream(client(gw)))
    assert content_of(chunks) == "A \x1b[31mred\x1b[0m x\ufffdy"
    flags = next(ch for ch in chunks if ch.choices and ch.choices[0].finish_reason).model_extra["specalign"]["flags"]
    assert "invalid_text_repaired" in flags
    for event in raw_events(gw):
        assert "\\ud800" not in event and "\x1b" not in event  # JSON-escaped on the wire, never raw


def test_an_upstream_whose_stream_does_not_add_up_ends_with_an_error(gw, upstream):
    """Reasoning after the content (no real server sends it) reorders a closed prefill's answer."""
    upstream.script(Reply("x", chunks=[{"content": "Hi "}, {"reasoning_content": "secret"}, {"content": "there"}]))
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "owls"}]}
    body["specalign"] = {"method": "zero_think"}
    with httpx.stream("POST", f"{gw.base_url}/chat/completions", json=body, timeout=30) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert json.loads(events[-2])["error"]["code"] == "upstream_stream_inconsistent" and events[-1] == "[DONE]"
    assert not any("secret" in e for e in events)


def test_an_answer_with_no_marker_is_sent_whole_when_done(gw, upstream):
    """Without separate reasoning or a marker, any piece may still turn out to be thought: held to the end."""
    upstream.script(Reply("x", chunks=[{"content": "Plain "}, {"content": "answer."}]))
    chunks = list(stream(client(gw)))
    assert content_of(chunks) == "Plain answer."


def test_a_model_that_writes_no_thought_streams_its_plain_answer_live(upstream, tmp_path):
    """``inline_thought: false``: the content is all answer, so vanilla sends it as it arrives."""
    config = tmp_path / "models.yaml"
    config.write_text(
        f"up:\n  model_name: {MODEL}\n  base_url: {upstream.base_url}\n  max_retries: 0\n  inline_thought: false\n"
    )
    gate = threading.Event()
    pieces = [{"content": w} for w in ("Owls ", "hunt ", "at ", "night, ", "quietly.")]
    upstream.script(Reply("x", chunks=pieces, pause_after=3, gate=gate))
    paused = upstream.streams_paused
    with running_gateway("-s", "child", "--method", "vanilla", "-m", "up", "--models-config", str(config)) as plain:
        seen = []
        for ch in stream(client(plain)):
            seen.append(ch)
            if content_of(seen) == "Owls hunt at":
                assert not gate.is_set() and upstream.streams_paused == paused + 1
                gate.set()
    assert gate.is_set(), "a plain answer was held until the upstream finished"
    assert content_of(seen) == "Owls hunt at night, quietly."


def _metric(gw, name: str) -> float:  # noqa: ANN001
    for line in httpx.get(f"{gw.url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


# -- the methods' answer streaming, chunked adversarially ----------------------------------------


class ListSink:
    def __init__(self) -> None:
        self.pieces: list[str] = []

    def answer(self, text: str) -> None:
        self.pieces.append(text)


PROMPT = Prompt(id="p1", label="unlabeled", prompt="Tell me about owls", original_prompt="Tell me about owls")

CASES = {
    "reasoning apart": [
        {"reasoning_content": "sec"},
        {"reasoning_content": "ret"},
        {"content": " Hi "},
        {"content": "there "},
    ],
    "marker split": [{"content": "<think>secret</"}, {"content": "thi"}, {"content": "nk>  Hi"}, {"content": " there"}],
    "marker at chunk end": [{"content": "secret<"}, {"content": "/think"}, {"content": ">"}, {"content": "Hi there"}],
    "no opening marker": [{"content": "secret thought"}, {"content": "</think>Hi"}, {"content": " there"}],
    "never closed": [{"content": "<think>secret "}, {"content": "thought"}],
    "plain": [{"content": "Hi "}, {"content": "there"}],
    "late reasoning": [{"content": "Hi "}, {"reasoning_content": "secret"}, {"content": "there"}],
    "second marker": [{"content": "secret</think>Hi </think> "}, {"content": "<think>there"}],
    "whitespace only": [{"reasoning_content": "secret"}, {"content": "  \n "}],
}


def run_streamed(method: str, replies: list[Reply], **settings) -> tuple[str, object]:  # noqa: ANN003
    with ScriptedServer() as server:
        server.script(*replies)
        model = scripted_model(server, **settings)
        sink = ListSink()

        async def go():  # noqa: ANN202
            try:
                return await create_method(method).run(model, SCEN, PROMPT, sink=sink)
            finally:
                await model.aclose()

        out = asyncio.run(go())
    return "".join(sink.pieces), out


@pytest.mark.parametrize("case", sorted(CASES))
def test_vanilla_streams_only_what_the_split_keeps(case):
    streamed, out = run_streamed("vanilla", [Reply("x", chunks=CASES[case])])
    plain_server_split = out.response
    assert plain_server_split.startswith(streamed), "what was streamed is the start of the final answer"
    assert "secret" not in streamed, "the thought never streams"
    assert not streamed or not streamed[0].isspace() and not streamed[-1].isspace()
    if case in ("reasoning apart", "marker split", "marker at chunk end", "no opening marker"):
        assert streamed == out.response == "Hi there"


@pytest.mark.parametrize("case", sorted(CASES))
def test_zero_think_streams_everything_after_its_closed_prefill(case):
    streamed, out = run_streamed("zero_think", [Reply("x", chunks=CASES[case])], prefill=True)
    if case == "late reasoning":  # reasoning after the content reorders the text: the gateway ends with an error
        assert streamed == "Hi" and not out.response.startswith(streamed)
        return
    assert streamed == out.response, "after a closed prefill everything the model writes is answer"


def test_align3_multi_turn_streams_its_answer_turn():
    answer = [{"reasoning_content": "secret"}, {"content": "The "}, {"content": "answer"}]
    replies = ["thought one", "thought two", "thought three", Reply("x", chunks=answer)]
    with ScriptedServer() as server:
        server.script(*replies)
        model = scripted_model(server)
        sink = ListSink()

        async def go():  # noqa: ANN202
            try:
                return await create_method("align3", {"no_prefill": "multi_turn"}).run(model, SCEN, PROMPT, sink=sink)
            finally:
                await model.aclose()

        out = asyncio.run(go())
        assert [r.json.get("stream") for r in server.chat_requests] == [None, None, None, True]
    assert sink.pieces == ["The", " answer"] and out.response == "The answer"


def test_best_of_n_streams_nothing_until_it_has_chosen():
    """Candidates are scored when finished, so the chosen one is sent whole by the caller."""
    streamed, out = run_streamed("raw", [Reply("x", chunks=[{"content": "Hi"}])])
    assert streamed == "" and out.response == "Hi"  # a plain answer: held, sent when done


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_model_that_writes_no_thought_streams_all_its_content(case):
    """``inline_thought: false``: no marker ends a thought in the content, so nothing is held back for one; reasoning
    the server returns apart is still thought."""
    streamed, out = run_streamed("vanilla", [Reply("x", chunks=CASES[case])], inline_thought=False)
    if case == "late reasoning":  # the content after the reasoning waits for the end, as without the setting
        assert streamed == "Hi" and out.response == "Hi there" and out.thought == "secret"
        return
    assert streamed == out.response and out.thought in ("", "secret")
    if case in ("plain", "reasoning apart"):
        assert streamed == "Hi there" and "extra_thought_markers" not in out.flags
    if case in ("marker split", "no opening marker", "second marker"):
        assert "secret" in streamed and "extra_thought_markers" in out.flags  # kept visible, and flagged


def test_a_model_that_writes_no_thought_still_splits_a_thought_its_method_opened():
    """Align3 opens the thought in a prefill: its final continuation is split at the marker whatever the setting."""
    final = Reply("x", chunks=[{"content": "more thought"}, {"content": "</think>"}, {"content": "The answer"}])
    streamed, out = run_streamed("align3", ["one", "two", final], prefill=True, inline_thought=False)
    assert streamed == out.response == "The answer" and "more thought" in out.thought
