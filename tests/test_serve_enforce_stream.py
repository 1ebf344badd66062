"""`specalign serve --enforce` with `stream: true`: text is released window by window once judged safe.

The real gateway process, the official `openai` SDK and raw SSE as clients, a scripted upstream that streams
(and pauses mid-stream until the test releases it: no test waits for a time), and a scripted judge that says
NO for S1 once the answer it is shown holds UNSAFE.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest

from gateway_proc import GatewayProcess, running_gateway
from scripted_server import Reply, ScriptedServer
from specalign.benchmark import load_benchmark
from specbench_world import is_judge, judged_answer, safety_verdicts

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

MODEL = "scripted-model"
#: the bundled child scenario's own refusal: it comes before the gateway's --enforce-refusal
REFUSAL = load_benchmark("bundled").scenario("child").refusal


def answer(*words: str) -> list[dict]:
    """Streamed deltas: a thought apart (so the answer streams token by token), then ``words``."""
    return [{"reasoning_content": "a plan"}, *({"content": w} for w in words)]


def judge_world(body: dict) -> str:
    assert is_judge(body)
    return safety_verdicts(body, "NO" if "UNSAFE" in judged_answer(body) else "YES")


@pytest.fixture(scope="module")
def upstream():
    with ScriptedServer() as server:
        yield server


@pytest.fixture(scope="module")
def judge():
    with ScriptedServer(judge_world) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(upstream, judge):
    upstream.script()
    with judge._lock:
        judge.requests.clear()
    yield
    with upstream._lock:
        upstream._queue.clear()


@contextmanager
def gateway(tmp_path: Path, upstream: ScriptedServer, judge_url: str, *extra: str) -> Iterator[GatewayProcess]:
    config = tmp_path / "models.yaml"
    config.write_text(
        f"up:\n  model_name: {MODEL}\n  base_url: {upstream.base_url}\n  max_retries: 0\n"
        f"judge:\n  model_name: {MODEL}\n  base_url: {judge_url}\n  max_retries: 0\n"
    )
    args = ("-s", "child", "--method", "vanilla", "-m", "up", "--models-config", str(config), "--enforce")
    args += ("--enforce-judge", "judge", "--enforce-window", "10", "--enforce-refusal", "Not used.", *extra)
    with running_gateway(*args) as gw:
        yield gw


def events(gw: GatewayProcess, gate: threading.Event | None = None) -> list[str]:
    """The ``data:`` lines of one streamed answer; ``gate`` (the upstream's pause) is set once the first
    content event has arrived, so the next window reaches the gateway only after the first was sent."""
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "a story about owls"}]}
    out: list[str] = []
    with httpx.stream("POST", f"{gw.base_url}/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                out.append(line[len("data: ") :])
                if gate is not None and not gate.is_set() and contents([*out, ""]):
                    gate.set()
    return out


def contents(evs: list[str]) -> list[str]:
    out = []
    for e in evs[:-1]:
        choices = json.loads(e).get("choices") or [{}]
        if choices[0].get("delta", {}).get("content"):
            out.append(choices[0]["delta"]["content"])
    return out


def final(evs: list[str]) -> dict:
    (last,) = [json.loads(e) for e in evs[:-1] if (json.loads(e).get("choices") or [{}])[0].get("finish_reason")]
    return last["specalign"]


def judged(judge: ScriptedServer) -> list[str]:
    return [judged_answer(r.json) for r in judge.chat_requests]


def test_unsafe_second_window_stops_the_stream_with_the_refusal(tmp_path, upstream, judge):
    gate = threading.Event()
    upstream.script(Reply("x", chunks=answer("Once upon a", " UNSAFE tale", " ends."), pause_after=2, gate=gate))
    with gateway(tmp_path, upstream, judge.base_url) as gw:
        evs = events(gw, gate)
    assert contents(evs)[0] == "Once upon a" and "".join(contents(evs)) == "Once upon a" + REFUSAL
    assert "UNSAFE" not in "".join(evs) and evs[-1] == "[DONE]"
    assert "on a violation refuse" in gw.output and "refusal text (child: its scenario.yaml)" in gw.output
    ext = final(evs)
    e = ext["enforcement"]
    assert (e["action"], e["violated"], e["checked"], e["attempts"]) == ("refused", ["S1"], True, 1)
    assert "enforcement_refused" in ext["flags"]
    assert judged(judge) == ["Once upon a", "Once upon a UNSAFE tale"]  # the accumulated answer each time


def test_safe_stream_arrives_window_by_window(tmp_path, upstream, judge):
    gate = threading.Event()
    pieces = answer("Once upon a", " time an owl", " shared.")
    upstream.script(Reply("x", chunks=pieces, pause_after=2, gate=gate))
    seen = []
    with gateway(tmp_path, upstream, judge.base_url) as gw:
        c = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        for ch in c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "owls"}], stream=True):
            seen.append(ch)
            text = "".join(x.choices[0].delta.content or "" for x in seen if x.choices)
            if text == "Once upon a":
                assert not gate.is_set() and upstream.streams_paused >= 1  # judged and sent mid-stream
                gate.set()
    assert gate.is_set(), "the first window did not come before the upstream finished"
    assert "".join(x.choices[0].delta.content or "" for x in seen if x.choices) == "Once upon a time an owl shared."
    ext = next(x for x in seen if x.choices and x.choices[0].finish_reason).model_extra["specalign"]
    assert (ext["enforcement"]["action"], ext["enforcement"]["checked"]) == ("none", True)
    # every window, then the remainder before the finish chunk
    assert judged(judge) == ["Once upon a", "Once upon a time an owl", "Once upon a time an owl shared."]


def test_flag_passes_the_stream_and_marks_it(tmp_path, upstream, judge):
    pieces = answer("Once upon ", "an UNSAFE ", "tale ends.")
    upstream.script(Reply("x", chunks=pieces))
    with gateway(tmp_path, upstream, judge.base_url, "--enforce-action", "flag") as gw:
        evs = events(gw)
    assert "".join(contents(evs)) == "Once upon an UNSAFE tale ends."
    ext = final(evs)
    assert (ext["enforcement"]["action"], ext["enforcement"]["violated"]) == ("flagged", ["S1"])
    assert "enforcement_flagged" in ext["flags"]


def test_regenerate_before_anything_went_out_then_refuse_after(tmp_path, upstream, judge):
    first = answer("UNSAFE at once ", "more")
    second = answer("A safe owl ", "story.")
    upstream.script(Reply("x", chunks=first), Reply("x", chunks=second))
    with gateway(tmp_path, upstream, judge.base_url, "--enforce-action", "regenerate") as gw:
        n0 = upstream.chat_count
        evs = events(gw)
        retry = upstream.chat_requests[-1].json["messages"][-1]["content"]
        assert upstream.chat_count - n0 == 2 and "Note from the gateway" in retry
        assert "".join(contents(evs)) == "A safe owl story."
        e = final(evs)["enforcement"]
        assert (e["action"], e["attempts"]) == ("regenerated", 2)
        # a violation after text went out cannot be regenerated: refused
        gate = threading.Event()
        upstream.script(Reply("x", chunks=answer("Once upon a", " UNSAFE end"), pause_after=2, gate=gate))
        evs = events(gw, gate)
    assert "".join(contents(evs)) == "Once upon a" + REFUSAL
    assert final(evs)["enforcement"]["action"] == "refused"


@pytest.mark.parametrize("policy", ["refuse", "pass"])
def test_judge_failure_follows_on_error(tmp_path, upstream, policy):
    pieces = answer("Once upon ", "a time.")
    upstream.script(Reply("x", chunks=pieces))
    with ScriptedServer(lambda b: "I think it is fine.") as bad:
        with gateway(tmp_path, upstream, bad.base_url, "--enforce-on-error", policy) as gw:
            evs = events(gw)
    e = final(evs)["enforcement"]
    assert not e["checked"] and e["error"]
    if policy == "refuse":
        assert "".join(contents(evs)) == REFUSAL and e["action"] == "refused"
    else:
        assert "".join(contents(evs)) == "Once upon a time." and e["action"] == "none"


async def test_stream_guard_flag_mode_releases_and_passes_the_rest():
    from specalign.serve._enforce import Checker, Decision, StreamGuard

    class Fake(Checker):
        def __init__(self) -> None:
            self.seen: list[str] = []

        async def check(self, text: str) -> Decision:
            self.seen.append(text)
            bad = "BAD" in text
            return Decision(not bad, {"S1": "NO" if bad else "YES"}, ["S1"] if bad else [], latency_s=0.5)

    checker = Fake()
    guard = StreamGuard(checker, window=5, flag=True)
    assert await guard.feed("fine ") == "fine "
    assert await guard.feed("BAD") == "" and await guard.feed("!!") == "BAD!!"  # flagged: released, no stop
    assert await guard.feed(" tail") == " tail" and await guard.finish(" end") == " end"
    assert guard.stopped is None and guard.flagged is not None and checker.seen == ["fine ", "fine BAD!!"]
    outcome = guard.outcome()
    assert (outcome.violated, outcome.latency_s, outcome.error) == (["S1"], 1.0, None)
    empty = StreamGuard(Fake(), window=5)
    assert await empty.finish("") == "" and len(empty.checks) == 1  # an empty answer is still judged
