"""The llama.cpp backend against the real embedded SmolLM2-135M model (no mocks)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'specalign[local]')")

from small_world import SMALL, SMALL_PROMPT  # noqa: E402
from specalign.errors import ModelError, ModelUnavailable  # noqa: E402
from specalign.methods import create_method  # noqa: E402
from specalign.models import (  # noqa: E402
    ChatRequest,
    Completion,
    Delta,
    Message,
    ModelSettings,
    create_model,
    parse_model_spec,
    settings_from_config,
)
from specalign.models._llamacpp import (  # noqa: E402
    LlamaCppBackend,
    _partial_stop,
    _Watch,
    chat_template_of,
    cores,
    map_params,
    parallelism,
)
from specalign.runs import Evaluation, RunConfig  # noqa: E402

pytestmark = pytest.mark.slow

VERDICT = {
    "type": "object",
    "properties": {
        "reason": {"type": "string", "maxLength": 40},
        "verdict": {"type": "string", "enum": ["YES", "NO", "NA"]},
    },
    "required": ["reason", "verdict"],
    "additionalProperties": False,
}
KEYS = ["S1", "S2", "B1"]
SCHEMA = {"type": "object", "properties": {k: VERDICT for k in KEYS}, "required": KEYS, "additionalProperties": False}


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
        messages=(
            Message(role="system", content="You are a judge. Answer in JSON."),
            Message(role="user", content="Judge the answer 'Paris' against S1, S2 and B1."),
        ),
        params={"temperature": 0, "max_tokens": 300},
        json_schema=SCHEMA,
    )
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
    assert a.pool() is b.pool() and a.pool().size == a.parallel == parallelism(a.settings)
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
    req = ChatRequest(
        messages=(),
        params={"temperature": 0.5, "stop": "x", "max_completion_tokens": 7, "logprobs": True, "n": 3},
        extra_body={"top_k": 5, "min_p": 0.1, "repetition_penalty": 1.1, "chat_template": "?"},
    )
    assert map_params(req, 9) == {
        "temperature": 0.5,
        "stop": ["x"],
        "max_tokens": 7,
        "top_k": 5,
        "min_p": 0.1,
        "repeat_penalty": 1.1,
        "seed": 9,
    }


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
    small = LlamaCppBackend(ModelSettings(key="small", backend="llamacpp", model_name="s", gguf="local", n_ctx=256))
    with pytest.raises(ModelError, match="does not fit the context window of 256"):
        await small.chat(ask("word " * 400, max_tokens=8))


async def test_max_tokens_is_clamped_to_the_room_left():
    small = LlamaCppBackend(ModelSettings(key="small", backend="llamacpp", model_name="s", gguf="local", n_ctx=256))
    out = await small.chat(ask("word " * 150 + "\nCount the words.", temperature=0, max_tokens=1000))
    assert out.usage.prompt_tokens + out.usage.completion_tokens <= 256


# -- parallel contexts --------------------------------------------------------------------------------


def pooled(k: int, **update) -> LlamaCppBackend:
    """The embedded model as a pool of ``k`` contexts (n_ctx 4096: a pool of its own in these tests)."""
    return LlamaCppBackend(
        ModelSettings(
            key=f"pool{k}", backend="llamacpp", model_name="s", gguf="local", n_ctx=4096, parallel=k, **update
        )
    )


def test_parallel_setting_and_defaults(tmp_path):
    entry = settings_from_config("mine", {"model_name": "m", "gguf": "local", "parallel": 3, "temperature": 0}, "x")
    assert entry.parallel == 3 and "parallel" not in entry.params and parallelism(entry) == 3
    assert parallelism(parse_model_spec("local")) == min(cores(), 8)  # the embedded model: one context per core
    assert parallelism(parse_model_spec(f"gguf:{tmp_path / 'any.gguf'}")) == 1  # any other GGUF: one


def test_samples_in_flight_follow_the_local_models_contexts(tmp_path):
    cfg = tmp_path / "models.yaml"
    cfg.write_text(
        "one:\n  model_name: SmolLM2-135M-Instruct\n  gguf: local\n  parallel: 1\n"
        "three:\n  model_name: SmolLM2-135M-Instruct\n  gguf: local\n  parallel: 3\n"
    )
    default = Evaluation(RunConfig(out=str(tmp_path / "a")))
    assert default._workers() == min(parallelism(parse_model_spec("local")), 8, len(default.samples))
    one = Evaluation(RunConfig(out=str(tmp_path / "b"), models_config=[str(cfg)], model="one", judge="one"))
    assert one._workers() == 1
    three = Evaluation(
        RunConfig(out=str(tmp_path / "c"), models_config=[str(cfg)], model="three", judge="three", concurrency=2)
    )
    assert three._workers() == 2  # --concurrency still caps it


async def test_concurrent_calls_run_on_distinct_contexts_at_once():
    backend = pooled(2)
    pool = backend.pool()
    threads: set[str] = set()
    seen_in_use: list[int] = []
    for ctx in pool.contexts:  # record which thread runs each call, and how many contexts are busy then
        ctx.thread.submit(lambda: None).result()
    original = backend._complete

    def spy(ctx, tokens, kwargs, watch):
        threads.add(threading.current_thread().name)
        seen_in_use.append(pool.in_use)
        return original(ctx, tokens, kwargs, watch)

    backend._complete = spy  # type: ignore[method-assign]
    outs = await asyncio.gather(
        *(backend.chat(ask(f"Tell a story about dragon number {i}.", temperature=0, max_tokens=48)) for i in range(2))
    )
    assert all(o.usage.completion_tokens > 0 for o in outs)
    assert pool.peak_in_use == 2 and max(seen_in_use) == 2 and pool.in_use == 0
    assert len(threads) == 2 and all(name.startswith("llama.cpp-") for name in threads)
    assert sorted(c.calls for c in pool.contexts)[0] >= 1


async def test_more_calls_than_contexts_wait_their_turn():
    backend = pooled(2)
    outs = await asyncio.gather(*(backend.chat(ask(f"Count to {i}.", temperature=0, max_tokens=12)) for i in range(5)))
    assert len(outs) == 5 and all(o.text for o in outs)
    assert backend.pool().peak_in_use == 2 and backend.pool().in_use == 0


async def test_a_cancelled_call_frees_its_context():
    backend = pooled(1)
    task = asyncio.create_task(backend.chat(ask("A long story, please.", temperature=0, max_tokens=64)))
    waiting = asyncio.create_task(backend.chat(ask("Another one.", temperature=0, max_tokens=8)))
    await asyncio.sleep(0.05)
    waiting.cancel()  # cancelled while it waits for the only context
    out = await task
    assert out.usage.completion_tokens > 0
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert (await backend.chat(ask("Still there?", temperature=0, max_tokens=4))).text is not None
    assert backend.pool().in_use == 0


def test_parallel_results_equal_the_sequential_ones():
    requests = [
        ChatRequest(
            messages=(Message(role="user", content=f"Describe colour number {i} in a sentence."),),
            params={"temperature": 0.7, "max_tokens": 24, "seed": 5},
            sample_index=i,
        )
        for i in range(4)
    ]

    async def sequential():
        one = pooled(1)
        return [(await one.chat(r)).text for r in requests]

    async def parallel():
        two = pooled(2)
        return [o.text for o in await asyncio.gather(*(two.chat(r) for r in requests))]

    assert asyncio.run(parallel()) == asyncio.run(sequential())


def test_align3_stages_keep_their_kv_cache_while_other_samples_run():
    settings = parse_model_spec("local").model_copy(update={"params": {"max_tokens": 8, "temperature": 0.7}})
    model = create_model(settings, None)
    third = SMALL_PROMPT.model_copy(update={"id": "garden-u02", "prompt": "Which garden plants could hurt my dog?"})
    jobs = [(SMALL, p) for p in (*SMALL.prompts, third)]  # short prompts: the stages' logic is the same at any length

    async def main():
        method = create_method("align3")
        return await asyncio.gather(*(method.run(model, s, p) for s, p in jobs))

    outs = asyncio.run(main())
    assert model.backend.pool().peak_in_use == min(len(jobs), model.backend.parallel)
    for out in outs:
        for before, step in zip(out.steps, out.steps[1:], strict=False):  # each stage extends the last one's text
            assert step.usage.cached_prompt_tokens >= before.usage.prompt_tokens - 2, [s.usage for s in out.steps]


def test_default_contexts_run_one_thread_each_and_leave_openmp_alone():
    """One thread per context: llama.cpp starts no OpenMP team, so no thread spins while another process
    runs (two processes with 2-thread teams slowed each other down about 8×). OMP_WAIT_POLICY stays the
    user's: PASSIVE would make a context of several threads about 4× slower when alone."""
    import llama_cpp  # noqa: PLC0415

    backend = LlamaCppBackend(parse_model_spec("local"))
    if cores() > 8:
        pytest.skip("more cores than default contexts: each context gets several threads")
    for ctx in backend.pool().contexts:
        handle = ctx.llama.ctx
        assert (llama_cpp.llama_n_threads(handle), llama_cpp.llama_n_threads_batch(handle)) == (1, 1)
    code = (
        "import asyncio, os; from specalign.models import parse_model_spec, ChatRequest, Message; "
        "from specalign.models._llamacpp import LlamaCppBackend; "
        "b = LlamaCppBackend(parse_model_spec('local')); "
        "asyncio.run(b.chat(ChatRequest(messages=(Message(role='user', content='hi'),), params={'max_tokens': 2}))); "
        "print('policy=' + os.environ.get('OMP_WAIT_POLICY', 'unset'))"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    for given, seen in ((None, "unset"), ("PASSIVE", "PASSIVE")):
        env = base if given is None else {**base, "OMP_WAIT_POLICY": given}
        p = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, check=True
        )
        assert f"policy={seen}" in p.stdout, p.stdout + p.stderr


def test_chat_template_file_is_read_once_for_calls_and_identity(backend, tmp_path):
    """The template identity() hashed is the one every call renders with, even if the file changes."""
    path = tmp_path / "template.jinja"
    original = "{% for m in messages %}ORIGINAL {{ m.content }}\n{% endfor %}"
    path.write_text(original)
    mine = LlamaCppBackend(
        ModelSettings(key="t", backend="llamacpp", model_name="t", gguf="local", chat_template=str(path))
    )
    before = mine.identity()["chat_template_sha256"]
    path.write_text("{% for m in messages %}CHANGED {{ m.content }}\n{% endfor %}")
    tokens = mine._render(backend.shared(), ask("hi there"))
    text = backend.llama.detokenize(tokens).decode()
    assert "ORIGINAL hi there" in text and "CHANGED" not in text
    assert mine.template == original and mine.identity()["chat_template_sha256"] == before


# -- streaming --------------------------------------------------------------------------------------


async def _streamed(backend: LlamaCppBackend, request: ChatRequest) -> tuple[list[str], Completion]:
    pieces, done = [], None
    async for item in backend.stream(request):
        if isinstance(item, Delta):
            pieces.append(item.text)
        else:
            done = item
    assert done is not None
    return pieces, done


@pytest.mark.parametrize("stop", [None, ["owl"], ["\n\n", "zz"]])
async def test_a_stream_gives_the_chat_text_token_by_token(stop):
    backend = pooled(1)
    params = {"temperature": 0.7, "seed": 3, "max_tokens": 60, **({"stop": stop} if stop else {})}
    request = ask("Write a short poem about owls at night, with an emoji: 🦉", **params)
    whole = await backend.chat(request)
    pieces, done = await _streamed(backend, request)
    assert "".join(pieces) == done.text == whole.text and done.finish_reason == whole.finish_reason
    assert done.usage.completion_tokens == whole.usage.completion_tokens
    assert len(pieces) >= min(5, whole.usage.completion_tokens // 2), "the text came in one piece"
    assert not any(s in done.text for s in stop or [])


def _decoded_tokens(ctx) -> int:  # noqa: ANN001
    return ctx.llama.n_tokens


async def test_a_stream_its_reader_leaves_stops_decoding_and_frees_its_context():
    backend = pooled(1)
    request = ask("Write a very long story about a family of owls.", temperature=0, max_tokens=1500)
    prompt = len(backend._render(backend.shared(), request))
    stream = backend.stream(request)
    async for _ in stream:
        break
    await stream.aclose()
    ctx = backend.pool().contexts[0]
    for _ in range(200):
        if not ctx.busy:
            break
        await asyncio.sleep(0.01)
    assert not ctx.busy and _decoded_tokens(ctx) - prompt < 20, "decoding went on for a reader that left"


async def test_a_cancelled_chat_stops_decoding():
    backend = pooled(1)
    request = ask("Write a very long story about a family of foxes.", temperature=0, max_tokens=1500)
    prompt = len(backend._render(backend.shared(), request))
    task = asyncio.create_task(backend.chat(request))
    ctx = backend.pool().contexts[0]
    while _decoded_tokens(ctx) <= prompt + 5 or not ctx.busy:
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(200):
        if not ctx.busy:
            break
        await asyncio.sleep(0.01)
    assert not ctx.busy and _decoded_tokens(ctx) - prompt < 40


class _Bytes:
    """A detokenizer over a fixed table: token i is PIECES[i] (to drive _Watch by hand)."""

    PIECES = [b"Hi ", b"\xf0\x9f", b"\xa6\x89", b" ow", b"l", b"s ", b"S", b"TO", b"P", b"x"]

    def detokenize(self, tokens, prev_tokens=None) -> bytes:  # noqa: ANN001, ARG002
        return b"".join(self.PIECES[t] for t in tokens)


def test_the_watch_sends_only_text_the_answer_is_bound_to_start_with():
    got: list[str] = []
    watch = _Watch([99, 98], ["STOP"], got.append)
    criterion = watch.bind(_Bytes())
    prompt = [99, 98]
    for n in range(0, 10):
        assert criterion(prompt + list(range(n)), None) is False
    # the emoji waits for its second half; "S", "ST", "STO" wait as the start of the stop; nothing after it
    assert got == ["Hi ", "🦉", " ow", "l", "s "]
    watch.cancelled.set()
    assert criterion(prompt + list(range(9)), None) is True
    assert _partial_stop("abcST", "STOP") == 2 and _partial_stop("abc", "STOP") == 0 and _partial_stop("S", "S") == 0
