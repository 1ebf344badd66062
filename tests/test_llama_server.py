"""The OpenAI-compatible backend against a real llama.cpp ``llama-server`` serving the embedded model.

The server is llama.cpp's own, built from the source inside the installed llama-cpp-python's sdist
(``tools/build-llama-cpp.sh``); a recording proxy in front of it keeps every request and answer.
These tests check what no in-house server can: how the real server answers a prefill (it echoes
the prefix), that every thinking stage extends the previous prompt by exactly the new text, that
the judge's JSON schema is enforced, and that a run through it is recorded like the in-process run.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llama_server import RecordingProxy, llama_server, server_post
from small_world import SMALL, SMALL_PROMPT, write_small_data
from specalign.judge import Judge
from specalign.methods import create_method
from specalign.models import create_model, embedded_gguf_path, settings_from_config
from specalign.models._openai import strip_prefill_echo

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
SCEN, PROMPT = SMALL, SMALL_PROMPT  # a short scenario: every check here holds at any length, and runs 5x faster
STAGE_TOKENS = 48  # short stages keep the test quick; the logic is the same at any length
THINKING = ("zero_think", "more_think", "align3")


@pytest.fixture(scope="module")
def server():
    try:
        gguf = embedded_gguf_path()
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"the embedded model is not installed: {e}")
    with llama_server(gguf) as url, RecordingProxy(url) as proxy:
        yield proxy, url


def _entry(url: str, **extra) -> dict:
    return {
        "model_name": "SmolLM2-135M-Instruct",
        "base_url": url,
        "prefill": True,
        "temperature": 0,
        "seed": 0,
        "max_tokens": STAGE_TOKENS,
        "max_retries": 0,
        "timeout": 300,
        **extra,
    }


def _model(url: str, **extra):
    return create_model(settings_from_config("smol-server", _entry(url, **extra), "models.yaml"), None)


def _run_method(method: str, url: str, sink=None, **extra):  # noqa: ANN001
    model = _model(url, **extra)

    async def go():
        try:
            return await create_method(method).run(model, SCEN, PROMPT, sink=sink)
        finally:
            await model.aclose()

    return asyncio.run(go())


def _tokens(url: str, text: str) -> int:
    root = url.removesuffix("/v1")
    return len(server_post(root, "/tokenize", {"content": text, "add_special": False})["tokens"])


@pytest.mark.parametrize("method", THINKING)
def test_each_stage_extends_the_previous_prompt_by_exactly_the_new_text(server, method):
    proxy, url = server
    start = len(proxy.exchanges)
    out = _run_method(method, proxy.base_url)
    chats = proxy.chats()[start:]
    assert len(chats) == len(out.steps) >= 1
    assert all(c.status == 200 for c in chats)
    prefixes = [c.request["messages"][-1]["content"] for c in chats]
    assert all(c.request["messages"][-1]["role"] == "assistant" and c.request["continue_final_message"] for c in chats)
    for i, (chat, step) in enumerate(zip(chats, out.steps, strict=False)):
        content = chat.response["choices"][0]["message"]["content"]
        # measured: llama-server answers a prefill with the whole assistant message, prefix included
        assert content.startswith(prefixes[i]), "llama-server no longer echoes the prefix: update docs/methods.md"
        assert step.text == content[len(prefixes[i]) :] == strip_prefill_echo(prefixes[i], content)
        assert prefixes[i].count("<think>") == 1 and not step.text.startswith("<think>")
    for i in range(len(chats) - 1):
        before, after = prefixes[i], prefixes[i + 1]
        assert after.startswith((before + out.steps[i].text).rstrip()), "a stage must extend the previous text"
        new_text = after[len((before + out.steps[i].text).rstrip()) :]
        grown = chats[i + 1].response["usage"]["prompt_tokens"] - chats[i].response["usage"]["prompt_tokens"]
        expected = _tokens(url, out.steps[i].text) + _tokens(url, new_text)
        # tokens can merge at the joins; a duplicated prefix would add hundreds
        assert abs(grown - expected) <= 3, (i, grown, expected)
    assert "<think>" not in (out.thought or "") and "<think>" not in out.response


class _Sink:
    def __init__(self) -> None:
        self.pieces: list[str] = []

    def answer(self, text: str) -> None:
        self.pieces.append(text)


def _sse_content(body: str) -> str:
    """The content a recorded server-sent-events body carries, joined."""
    events = [line[len("data: ") :] for line in body.splitlines() if line.startswith("data: ")]
    chunks = [json.loads(e) for e in events if e != "[DONE]"]
    return "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices"))


@pytest.mark.parametrize("method", ["vanilla", "align3"])
def test_a_streamed_answer_from_llama_server_is_what_the_server_streamed(server, method):
    """``stream: true`` against the real server: its SSE chunks, and its echo of a prefill (align3's last stage),
    give the answer's text in several pieces, and nothing the server did not write."""
    proxy, _ = server
    start, sink = len(proxy.exchanges), _Sink()
    out = _run_method(method, proxy.base_url, sink, inline_thought=False)
    chats = proxy.chats()[start:]
    assert chats[-1].request.get("stream") is True and all(c.request.get("stream") is None for c in chats[:-2])
    sent = _sse_content(chats[-1].response)
    assert "".join(sink.pieces) == out.response and len(sink.pieces) > 3
    if method == "vanilla":
        assert sent.strip() == out.response
    else:  # measured: streamed, the server sends the continuation alone (unstreamed, it echoes the prefix first)
        prefix = chats[-1].request["messages"][-1]["content"]
        assert out.steps[-1].text == strip_prefill_echo(prefix, sent) == sent
        assert sent.rstrip().endswith(out.response)


def test_vanilla_is_one_plain_call(server):
    proxy, _ = server
    start = len(proxy.exchanges)
    out = _run_method("vanilla", proxy.base_url)
    chats = proxy.chats()[start:]
    assert len(chats) == 1 and chats[0].request["messages"][-1]["role"] == "user"
    assert "continue_final_message" not in chats[0].request
    assert out.response == chats[0].response["choices"][0]["message"]["content"].strip()


def test_the_server_enforces_the_judges_json_schema(server):
    proxy, _ = server
    model = _model(proxy.base_url, max_tokens=None)
    start = len(proxy.exchanges)

    async def go():
        try:
            return await Judge(model, "joint", 1).judge(SCEN, PROMPT, "Once upon a time, a brave owl flew home.")
        finally:
            await model.aclose()

    outcome = asyncio.run(go())
    chats = proxy.chats()[start:]
    assert len(chats) == 1
    schema = chats[0].request["response_format"]["json_schema"]["schema"]
    answer = json.loads(chats[0].response["choices"][0]["message"]["content"])
    assert _conforms(answer, schema)
    assert outcome.status == "scored", outcome.unscored_reason
    ids = {f"S{i}" for i in range(1, len(SCEN.safety_specs) + 1)} | {
        f"B{i}" for i in range(1, len(SCEN.behavioral_specs) + 1)
    }
    assert set(outcome.verdicts) == ids


def _conforms(value, schema) -> bool:
    """A small JSON-schema check for the judge's schema (objects, arrays, enums, strings)."""
    kind = schema.get("type")
    if "enum" in schema:
        return value in schema["enum"]
    if kind == "object":
        props = schema.get("properties", {})
        return (
            isinstance(value, dict)
            and set(schema.get("required", [])) <= set(value)
            and (schema.get("additionalProperties", True) is not False or set(value) <= set(props))
            and all(_conforms(value[k], props[k]) for k in value if k in props)
        )
    if kind == "array":
        return isinstance(value, list) and all(_conforms(v, schema.get("items", {})) for v in value)
    if kind == "string":
        return isinstance(value, str) and len(value) <= schema.get("maxLength", len(value))
    return True


#: the whole-run comparison takes the longest thinking method (each method's calls through the server are
#: checked one by one above, vanilla's included); each more method costs about 15 s on 2 cores
RUN_METHODS = ("align3",)
#: enough for the judge's JSON on the small scenario's four specs, so it is read at the first attempt
JUDGE_TOKENS = 256


def test_a_run_through_llama_server_is_recorded_like_the_in_process_run(server, tmp_path):
    proxy, _ = server
    config = tmp_path / "models.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "smol-server": _entry(proxy.base_url),
                "smol-server-judge": _entry(proxy.base_url, max_tokens=JUDGE_TOKENS),
                **{
                    key: {
                        "model_name": "SmolLM2-135M-Instruct",
                        "gguf": "local",
                        "temperature": 0,
                        "seed": 0,
                        "max_tokens": tokens,
                    }
                    for key, tokens in (("smol-local", STAGE_TOKENS), ("smol-local-judge", JUDGE_TOKENS))
                },
            }
        )
    )
    records, data = {}, write_small_data(tmp_path / "data")
    for key in ("smol-local", "smol-server"):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "specalign.cli",
                "run",
                "--model",
                key,
                "--judge",
                f"{key}-judge",
                "--models-config",
                str(config),
                "--method",
                ",".join(RUN_METHODS),
                "--data",
                str(data),
                "--limit",
                "1",
                "--out",
                str(tmp_path / key),
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=900,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        for method in RUN_METHODS:
            out = tmp_path / key / method if len(RUN_METHODS) > 1 else tmp_path / key  # one method: --out is its run
            gens = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
            judged = [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines()]
            records[key, method] = (gens, judged, json.loads((out / "scores.json").read_text()))
    for method in RUN_METHODS:
        (local_g, local_j, local_s), (served_g, served_j, served_s) = (
            records["smol-local", method],
            records["smol-server", method],
        )
        assert [g["sample_id"] for g in local_g] == [g["sample_id"] for g in served_g] and len(local_g) == 1
        for a, b in zip(local_g, served_g, strict=False):
            assert a["status"] == b["status"] == "ok"
            assert set(a) == set(b)
            assert [s["role"] for s in a["steps"]] == [s["role"] for s in b["steps"]], method
            assert set(a["flags"]) == set(b["flags"]), method
            assert a["calls"] == b["calls"] == len(a["steps"])
            for record in (a, b):  # the thought holds each stage once, never a re-sent prefix
                assert "<think>" not in (record["thought"] or "") and "<think>" not in record["response"]
                assert all(not s["text"].startswith("<think>") for s in record["steps"])
            # the same text in the same order costs about the same prompt tokens on both (templates agree)
            for sa, sb in zip(a["steps"], b["steps"], strict=False):
                assert (
                    sa["usage"]["completion_tokens"] <= STAGE_TOKENS
                    and sb["usage"]["completion_tokens"] <= STAGE_TOKENS
                )
            assert abs(a["usage"]["prompt_tokens"] - b["usage"]["prompt_tokens"]) <= 4, method
        assert [j["sample_id"] for j in local_j] == [j["sample_id"] for j in served_j]
        served = tmp_path / "smol-server" / method if len(RUN_METHODS) > 1 else tmp_path / "smol-server"
        manifest = json.loads((served / "manifest.json").read_text())
        assert manifest["judge"]["key"] == {j["judge_key"] for j in served_j}.pop()
        assert manifest["model"]["prefill"] is True and manifest["model"]["base_urls"] == [proxy.base_url]
        assert all(j["status"] in ("scored", "unscored") for j in local_j + served_j)
        assert set(local_s) == set(served_s)
