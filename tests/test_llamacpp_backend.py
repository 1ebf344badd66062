"""The llama.cpp backend against the real embedded SmolLM2-135M model (no mocks)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'specalign[local]')")

from specalign.errors import ModelError, ModelUnavailable  # noqa: E402
from specalign.models import ChatRequest, Message, ModelSettings, parse_model_spec  # noqa: E402
from specalign.models._llamacpp import LlamaCppBackend, chat_template_of, map_params  # noqa: E402

pytestmark = pytest.mark.slow

VERDICT = {"type": "object", "properties": {"reason": {"type": "string", "maxLength": 40},
                                            "verdict": {"type": "string", "enum": ["YES", "NO", "NA"]}},
           "required": ["reason", "verdict"], "additionalProperties": False}
KEYS = ["S1", "S2", "B1"]
SCHEMA = {"type": "object", "properties": {k: VERDICT for k in KEYS}, "required": KEYS,
          "additionalProperties": False}


@pytest.fixture(scope="module")
def backend() -> LlamaCppBackend:
    return LlamaCppBackend(parse_model_spec("local"))


def ask(text: str, **params) -> ChatRequest:
    return ChatRequest(messages=(Message(role="user", content=text),), params=params)


async def test_plain_chat_returns_text_and_usage(backend):
    out = await backend.chat(ask("Name a colour.", temperature=0, max_tokens=16))
    assert out.text.strip()
    assert out.usage.prompt_tokens > 0 and out.usage.completion_tokens > 0
    assert out.finish_reason in {"stop", "length"}


async def test_temperature_zero_is_deterministic(backend):
    req = ask("Write one sentence about rivers.", temperature=0, max_tokens=24)
    first = await backend.chat(req)
    await backend.chat(ask("Something else entirely.", temperature=0, max_tokens=8))
    second = await backend.chat(req)
    assert first.text == second.text


async def test_json_schema_output_has_exactly_the_required_keys(backend):
    req = ChatRequest(
        messages=(Message(role="system", content="You are a judge. Answer in JSON."),
                  Message(role="user", content="Judge the answer 'Paris' against S1, S2 and B1.")),
        params={"temperature": 0, "max_tokens": 300}, json_schema=SCHEMA)
    out = await backend.chat(req)
    assert out.finish_reason == "stop", out.text  # the grammar closed the object
    data = json.loads(out.text)
    assert list(data) == KEYS
    for item in data.values():
        assert set(item) == {"reason", "verdict"}
        assert item["verdict"] in {"YES", "NO", "NA"}
        assert len(item["reason"]) <= 40


async def test_unsupported_schema_is_a_model_error(backend):
    req = ChatRequest(messages=(Message(role="user", content="hi"),), json_schema={"type": "nonsense"})
    with pytest.raises(ModelError, match="JSON schema"):
        await backend.chat(req)


def test_backends_share_one_loaded_model():
    a = LlamaCppBackend(parse_model_spec("local"))
    b = LlamaCppBackend(ModelSettings(key="judge", backend="llamacpp", model_name="judge", gguf="local"))
    assert a.llama is b.llama
    assert a.shared().lock is b.shared().lock
    assert a.identity()["gguf_sha256_prefix"] == b.identity()["gguf_sha256_prefix"]


def test_identity_and_helpers(backend):
    ident = backend.identity()
    assert ident["kind"] == "llamacpp" and ident["model"] == "SmolLM2-135M-Instruct"
    assert len(ident["gguf_sha256_prefix"]) == 64 and ident["n_ctx"] == backend.settings.n_ctx
    assert backend.count_tokens("hello world") >= 2
    assert "im_start" in (chat_template_of(backend.llama) or "")


def test_missing_gguf_is_unavailable(tmp_path):
    with pytest.raises(ModelUnavailable, match="GGUF file not found"):
        LlamaCppBackend(parse_model_spec(f"gguf:{tmp_path / 'nope.gguf'}"))


def test_param_mapping():
    req = ChatRequest(messages=(), params={"temperature": 0.5, "stop": "x", "max_completion_tokens": 7,
                                           "logprobs": True, "n": 3},
                      extra_body={"top_k": 5, "min_p": 0.1, "repetition_penalty": 1.1, "chat_template": "?"})
    assert map_params(req, 9) == {"temperature": 0.5, "stop": ["x"], "max_tokens": 7, "top_k": 5,
                                  "min_p": 0.1, "repeat_penalty": 1.1, "seed": 9}


async def test_event_loop_keeps_running_during_generation(backend):
    backend.shared()  # load first, so only generation is timed
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    start = time.perf_counter()
    out = await backend.chat(ask("Tell me a long story about a dragon.", temperature=0, max_tokens=64))
    elapsed = time.perf_counter() - start
    task.cancel()
    assert out.usage.completion_tokens > 0
    assert ticks >= max(3, int(elapsed / 0.01 * 0.3)), (ticks, elapsed)


async def test_overlong_prompt_is_a_model_error():
    small = LlamaCppBackend(ModelSettings(key="small", backend="llamacpp", model_name="s", gguf="local",
                                          n_ctx=256))
    with pytest.raises(ModelError, match="does not fit the context window of 256"):
        await small.chat(ask("word " * 400, max_tokens=8))


async def test_max_tokens_is_clamped_to_the_room_left():
    small = LlamaCppBackend(ModelSettings(key="small", backend="llamacpp", model_name="s", gguf="local",
                                          n_ctx=256))
    out = await small.chat(ask("word " * 150 + "\nCount the words.", temperature=0, max_tokens=1000))
    assert out.usage.prompt_tokens + out.usage.completion_tokens <= 256
