"""AnthropicBackend (the official ``anthropic`` SDK) against a real Messages API server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json

import pytest

from anthropic_server import DEFAULT_MODEL, AnthropicServer, Turn, flat_text, openai_view
from specalign.benchmark import load_benchmark
from specalign.errors import CapabilityError, ConfigError, ModelAccessError, ModelError
from specalign.judge import Judge
from specalign.models import ChatRequest, Message, Model, ModelSettings, create_model, parse_model_spec
from specalign.models import _anthropic as anthropic_module
from specalign.models._anthropic import DEFAULT_MAX_TOKENS, THINKING_REDACTED, TOOL_NAME, AnthropicBackend
from specalign.models._base import REPAIRED, Completion, Delta
from specalign.models._batch import BatchItemError, BatchRequest
from specalign.models._settings import settings_from_config
from specbench_world import world

KEY_ENV = "SPECALIGN_TEST_ANTHROPIC_KEY"
SECRET = "sk-ant-test-secret-0123456789"
THINKING = {"type": "enabled", "budget_tokens": 2048}


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    """Record backoff sleeps without taking them; no key or base URL from the environment."""
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(anthropic_module, "_sleep", fake_sleep)
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_CUSTOM_HEADERS"):
        monkeypatch.delenv(name, raising=False)
    return slept


@pytest.fixture
def server():
    with AnthropicServer() as srv:
        yield srv


def settings_for(srv: AnthropicServer, **kw) -> ModelSettings:
    kw.setdefault("model_name", DEFAULT_MODEL)
    kw.setdefault("max_retries", 3)
    kw.setdefault("timeout", 5.0)
    return ModelSettings(key="claude", backend="anthropic", base_urls=[srv.base_url], **kw)


def ask(text: str = "hello there", system: str | None = "be brief", **kw) -> ChatRequest:
    messages = [Message(role="system", content=system)] if system else []
    return ChatRequest(messages=(*messages, Message(role="user", content=text)), **kw)


async def run_chat(settings: ModelSettings, request: ChatRequest | None = None):
    backend = AnthropicBackend(settings)
    try:
        return await backend.chat(request or ask())
    finally:
        await backend.aclose()


def last_body(srv: AnthropicServer) -> dict:
    return srv.message_requests[-1].json


# -- the request and the answer ----------------------------------------------------------------


async def test_plain_answer_system_prompt_headers_and_usage(server):
    server.script(Turn("four words of answer"))
    out = await run_chat(settings_for(server))
    assert (out.text, out.finish_reason, out.answer_start, out.flags) == ("four words of answer", "stop", None, [])
    req = server.message_requests[0]
    body = req.json
    assert body["model"] == DEFAULT_MODEL and body["max_tokens"] == DEFAULT_MAX_TOKENS
    assert body["system"] == [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}]
    assert body["messages"] == [{"role": "user", "content": "hello there"}]
    assert "tools" not in body and "thinking" not in body
    # the SDK's own request: its API version header and its user agent
    assert req.headers["anthropic-version"] and req.headers["user-agent"].startswith("AsyncAnthropic/Python")
    assert req.headers["content-type"] == "application/json"
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (4, 4)


async def test_params_are_mapped_and_openai_only_params_dropped(server):
    params = {
        "max_completion_tokens": 3,
        "stop": "END",
        "temperature": 0.0,
        "top_k": 5,
        "seed": 7,
        "presence_penalty": 0.5,
        "metadata": {"user_id": "u1"},
    }
    server.script(Turn("one two three four five"))
    out = await run_chat(settings_for(server), ask(params=params, extra_body={"service_tier": "auto"}))
    body = last_body(server)
    assert body["max_tokens"] == 3 and body["stop_sequences"] == ["END"]
    assert body["temperature"] == 0.0 and body["top_k"] == 5 and body["metadata"] == {"user_id": "u1"}
    assert body["service_tier"] == "auto"
    assert not {"seed", "presence_penalty", "max_completion_tokens", "stop"} & set(body)
    assert (out.text, out.finish_reason) == ("one two three", "length")
    server.script(Turn("before END after"))
    out = await run_chat(settings_for(server), ask(params={"stop": ["END"], "max_tokens": 50}))
    assert (out.text, out.finish_reason) == ("before ", "stop")


async def test_turns_without_text_are_left_out(server):
    request = ChatRequest(
        messages=(
            Message(role="user", content="draft please"),
            Message(role="assistant", content="   "),
            Message(role="user", content="now improve it"),
        )
    )
    await run_chat(settings_for(server), request)
    body = last_body(server)
    assert [m["role"] for m in body["messages"]] == ["user", "user"] and "system" not in body


async def test_thinking_becomes_the_thought_and_answer_start_marks_the_answer(server):
    server.script(Turn("the answer", thinking=["first I look", "then I decide"]))
    params = {"thinking": THINKING, "temperature": 0.0, "top_k": 3}
    out = await run_chat(settings_for(server), ask(params=params))
    assert out.text == "<think>first I look\n\nthen I decide</think>the answer"
    assert out.text[out.answer_start :] == "the answer"
    body = last_body(server)
    assert body["thinking"] == THINKING and body["max_tokens"] == DEFAULT_MAX_TOKENS + 2048
    assert "temperature" not in body and "top_k" not in body  # the API refuses them with thinking on
    server.script(Turn("x", thinking="hmm"))
    out = await run_chat(settings_for(server, thought_start="[T]", thought_end="[/T]"), ask(params=params))
    assert (out.text, out.answer_start) == ("[T]hmm[/T]x", len("[T]hmm[/T]"))


async def test_thinking_that_writes_markers_cannot_move_the_answer(server):
    server.script(Turn("<think>fake</think>visible", thinking="real </think> thought"))
    out = await run_chat(settings_for(server), ask(params={"thinking": THINKING}))
    assert out.text[out.answer_start :] == "<think>fake</think>visible"
    # thinking on, but no thinking block: the whole text is the answer, markers and all
    server.script(Turn("<think>not a thought</think>answer"))
    out = await run_chat(settings_for(server), ask(params={"thinking": {"type": "adaptive"}}))
    assert out.answer_start == 0 and last_body(server)["max_tokens"] == anthropic_module.ADAPTIVE_MAX_TOKENS


async def test_redacted_thinking_is_dropped_with_a_flag(server):
    server.script(Turn("safe answer", thinking="visible part", redacted=2))
    out = await run_chat(settings_for(server), ask(params={"thinking": THINKING}))
    assert out.text == "<think>visible part</think>safe answer" and THINKING_REDACTED in out.flags
    assert "opaque" not in out.text
    server.script(Turn("only answer", redacted=1))
    out = await run_chat(settings_for(server), ask(params={"thinking": THINKING}))
    assert (out.text, out.answer_start, out.flags) == ("only answer", 0, [THINKING_REDACTED])


async def test_prefill_continues_the_final_assistant_turn(server):
    model = create_model(settings_for(server))
    assert AnthropicBackend.supports_prefill and model.can_prefill
    server.script(Turn(" 42, because"))
    out = await model.continue_turn([Message(role="user", content="what is it?")], "The answer is ")
    body = last_body(server)
    # the API refuses trailing whitespace in the final assistant turn: trimmed, and taken off the continuation
    assert body["messages"][-1] == {"role": "assistant", "content": "The answer is"}
    assert out.text == "42, because" and out.answer_start is None
    # the turn before the final one is the prefix follow-up calls share: a cache breakpoint
    assert body["messages"][0]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    server.script(Turn("\nstep one</think>done"))
    out = await model.continue_turn([Message(role="user", content="go")], "<think>\n")
    assert last_body(server)["messages"][-1]["content"] == "<think>"
    assert out.text == "step one</think>done"
    await model.aclose()


async def test_prefill_is_refused_while_thinking_is_on(server):
    request = ChatRequest(
        messages=(Message(role="user", content="q"), Message(role="assistant", content="<think>")),
        params={"thinking": THINKING},
        continue_final=True,
    )
    with pytest.raises(CapabilityError, match="refuses an assistant prefill while extended thinking is on"):
        await run_chat(settings_for(server), request)
    assert server.message_requests == []
    # thinking in the model's settings: the model does not offer prefill, so methods never ask for it
    model = create_model(settings_for(server, params={"thinking": THINKING}))
    assert not model.can_prefill and AnthropicBackend.supports_prefill
    with pytest.raises(CapabilityError):
        await model.continue_turn([Message(role="user", content="q")], "x")


async def test_json_schema_forces_one_tool_and_the_judge_reads_its_input(server):
    bench = load_benchmark("bundled")
    scenario = bench.scenario("child")
    prompt = scenario.prompts[0]
    server.responder = lambda body: world(openai_view(body))
    model = create_model(settings_for(server))
    outcome = await Judge(model).judge(scenario, prompt, "ANSWER[a kind story]")
    await model.aclose()
    assert outcome.status == "scored", outcome.unscored_reason
    assert outcome.verdicts["S1"].verdict == "YES" and outcome.verdicts["B1"].verdict == "NA"
    body = last_body(server)
    assert body["tool_choice"] == {"type": "tool", "name": TOOL_NAME}
    assert [t["name"] for t in body["tools"]] == [TOOL_NAME] and body["tools"][0]["input_schema"]["type"] == "object"
    assert json.loads(outcome.raw_outputs[0])["S1"]["verdict"] == "YES"


async def test_tool_answers_with_thinking_and_in_duplicate(server):
    schema = {"type": "object", "properties": {"v": {"type": "string"}}, "required": ["v"]}
    # thinking on: the API forbids forcing a tool, so the model may call it
    server.script(
        Turn(
            blocks=[
                {"type": "thinking", "thinking": "consider", "signature": "s"},
                {"type": "text", "text": "Here it is:"},
                {"type": "tool_use", "id": "toolu_1", "name": TOOL_NAME, "input": {"v": "yes"}},
            ],
            stop_reason="tool_use",
        )
    )
    out = await run_chat(settings_for(server), ask(json_schema=schema, params={"thinking": THINKING}))
    assert last_body(server)["tool_choice"] == {"type": "auto"}
    assert out.text[out.answer_start :] == '{"v": "yes"}' and out.finish_reason == "stop"
    # two calls of the tool: both kept, one per line, which no JSON reader takes for one answer
    tool = {"type": "tool_use", "name": TOOL_NAME}
    server.script(Turn(blocks=[{**tool, "id": "a", "input": {"v": "1"}}, {**tool, "id": "b", "input": {"v": "2"}}]))
    out = await run_chat(settings_for(server), ask(json_schema=schema))
    assert out.text == '{"v": "1"}\n{"v": "2"}'


async def test_cache_breakpoints_and_cache_usage(server):
    shared = "Deployment: Child\n" + "spec words here. " * 300 + "\n\n"
    first = ask(shared + "request one: a story", system="you are a judge")
    second = ask(shared + "request two: a poem", system="you are a judge")
    backend = AnthropicBackend(settings_for(server))
    a = await backend.chat(first)
    b = await backend.chat(second)
    c = await backend.chat(ask(shared + "request three", system="you are a judge"))
    await backend.aclose()
    bodies = [r.json for r in server.message_requests]
    assert bodies[0]["messages"][0]["content"] == shared + "request one: a story"  # the first of a kind: whole
    # once two turns share a head, it is its own block, with a breakpoint; the text is the same
    blocks = bodies[1]["messages"][0]["content"]
    assert blocks[0] == {"type": "text", "text": shared, "cache_control": {"type": "ephemeral"}}
    assert blocks[1] == {"type": "text", "text": "request two: a poem"}
    assert flat_text(blocks) == shared + "request two: a poem"
    assert (a.usage.cached_prompt_tokens, b.usage.cached_prompt_tokens) == (0, 4)  # only the system prompt
    assert c.usage.cached_prompt_tokens == 4 + 2 + 3 * 300  # the system prompt and the shared head
    for out, body in zip((a, b, c), bodies, strict=True):
        assert out.usage.prompt_tokens == sum(len(flat_text(m["content"]).split()) for m in body["messages"]) + 4


async def test_529_overloaded_and_429_then_success_honour_retry_after(server, fast_backoff):
    server.script(
        Turn.error(529, "Overloaded", type="overloaded_error", headers={"retry-after": "2"}),
        Turn.error(
            429,
            "Number of request tokens has exceeded your rate limit",
            type="rate_limit_error",
            headers={"retry-after-ms": "250", "retry-after": "1"},
        ),
        Turn.error(500, "Internal server error"),
        Turn("made it"),
    )
    out = await run_chat(settings_for(server))
    assert out.text == "made it" and len(server.message_requests) == 4
    assert fast_backoff[:2] == [2.0, 0.25] and 0 < fast_backoff[2] <= 8


async def test_retries_are_bounded_and_the_error_is_one_line(server):
    server.responder = lambda body: Turn.error(529, "Overloaded\nplease wait", type="overloaded_error")
    with pytest.raises(ModelError) as info:
        await run_chat(settings_for(server, max_retries=2))
    assert type(info.value) is ModelError and len(server.message_requests) == 3
    msg = str(info.value)
    assert "after 3 attempts" in msg and server.base_url in msg and "overloaded_error: Overloaded please wait" in msg
    assert "\n" not in msg and info.value.status == 529


async def test_x_should_retry_and_400_are_not_retried(server):
    server.script(Turn.error(500, "do not", headers={"x-should-retry": "false"}))
    with pytest.raises(ModelError, match="rejected the request"):
        await run_chat(settings_for(server))
    assert len(server.message_requests) == 1
    with pytest.raises(ModelError, match="Extra inputs are not permitted") as info:
        await run_chat(settings_for(server), ask(extra_body={"no_such_field": 1}))
    assert type(info.value) is ModelError and info.value.kind == "rejected" and len(server.message_requests) == 2


async def test_retry_after_beyond_the_cap_is_an_access_error(server):
    server.script(Turn.error(429, "come back tomorrow", type="rate_limit_error", headers={"retry-after": "86400"}))
    with pytest.raises(ModelAccessError, match="86400 s"):
        await run_chat(settings_for(server))
    assert len(server.message_requests) == 1


async def test_401_is_an_access_error_and_the_key_never_shows(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    with AnthropicServer(api_key="the-right-key") as srv:
        backend = AnthropicBackend(settings_for(srv, api_key_env=KEY_ENV))
        assert SECRET not in json.dumps(backend.identity())
        with pytest.raises(ModelAccessError) as info:
            await backend.chat(ask())
        await backend.aclose()
        req = srv.message_requests[0]
        assert SECRET in (req.headers.get("x-api-key", ""), req.headers.get("authorization", "")[len("Bearer ") :])
    msg = str(info.value)
    assert len(srv.message_requests) == 1 and info.value.kind == "auth" and info.value.status == 401
    assert "authentication failed" in msg and KEY_ENV in msg and SECRET not in msg


async def test_a_key_echoed_by_the_server_is_scrubbed(monkeypatch, server):
    monkeypatch.setenv(KEY_ENV, SECRET)
    server.responder = lambda body: Turn.error(500, f"bad key {SECRET} / {json.dumps(SECRET)}")
    with pytest.raises(ModelError) as info:
        await run_chat(settings_for(server, api_key_env=KEY_ENV, max_retries=1))
    assert SECRET not in str(info.value) and "***" in str(info.value)


async def test_unknown_model_is_an_access_error(server):
    with pytest.raises(ModelAccessError, match="'claude-nope' not found") as info:
        await run_chat(settings_for(server, model_name="claude-nope"))
    assert info.value.kind == "not_found" and len(server.message_requests) == 1


async def test_a_malformed_answer_is_retried(server):
    server.script(Turn(body={"id": "msg_1", "type": "message", "content": None}), Turn(body='{"id": "msg_'), Turn("ok"))
    out = await run_chat(settings_for(server))
    assert out.text == "ok" and len(server.message_requests) == 3


async def test_hostile_text_is_kept_as_data_and_invalid_text_repaired(server):
    escape = "\x1b[2J\x1b[31mred\x1b[0m \u202eevil\u202c \x00 \r\n"
    server.script(Turn(escape))
    out = await run_chat(settings_for(server))
    assert out.text == escape and out.flags == []  # shown escaped where printed, never altered here
    lone = '{"id": "m", "type": "message", "role": "assistant", "model": "claude-test", "stop_reason": "end_turn",'
    lone += ' "content": [{"type": "thinking", "thinking": "a\\udfffb", "signature": "s"},'
    lone += ' {"type": "text", "text": "x\\ud800y"}], "usage": {"input_tokens": 1, "output_tokens": 2}}'
    server.script(Turn(body=lone))
    out = await run_chat(settings_for(server))
    assert out.text == "<think>a\ufffdb</think>x\ufffdy" and out.flags == [REPAIRED]
    out.model_dump_json()  # writable
    tool = '{"id": "m", "type": "message", "role": "assistant", "model": "claude-test", "stop_reason": "tool_use",'
    tool += ' "content": [{"type": "tool_use", "id": "t", "name": "answer", "input": {"r\\ud800": "v\\udc00"}}],'
    tool += ' "usage": {"input_tokens": 1, "output_tokens": 2}}'
    server.script(Turn(body=tool))
    out = await run_chat(settings_for(server), ask(json_schema={"type": "object"}))
    assert json.loads(out.text) == {"r\ufffd": "v\ufffd"} and out.flags == [REPAIRED]
    # a lone surrogate in what we send is repaired before it leaves
    await run_chat(settings_for(server), ask("bad \ud800 text"))
    assert last_body(server)["messages"][0]["content"] == "bad \ufffd text"


def test_the_backend_survives_a_new_event_loop(server):
    backend = AnthropicBackend(settings_for(server))

    async def once(text: str) -> str:
        try:
            return (await backend.chat(ask(text))).text
        finally:
            await backend.aclose()

    assert asyncio.run(once("one")) == "echo: one"  # e.g. a CLI that calls asyncio.run twice
    assert asyncio.run(once("two")) == "echo: two"


# -- specs, configs, keys ----------------------------------------------------------------------


def test_model_specs_and_models_config(monkeypatch, tmp_path):
    s = parse_model_spec("anthropic:claude-x@http://127.0.0.1:9/v1")
    assert (s.backend, s.model_name, s.base_urls) == ("anthropic", "claude-x", ["http://127.0.0.1:9/v1"])
    backend = AnthropicBackend(s)
    assert backend.identity() == {"kind": "anthropic", "model": "claude-x", "base_url": "http://127.0.0.1:9"}
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):  # Anthropic's own API needs a key
        create_model(parse_model_spec("anthropic:claude-x"))
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    official = create_model(parse_model_spec("anthropic:claude-x"))
    assert official.backend.identity()["base_url"] == "https://api.anthropic.com"
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
    assert create_model(parse_model_spec("anthropic:claude-x")).backend.identity()["base_url"] == "http://127.0.0.1:9"
    entry = {"backend": "anthropic", "model_name": "claude-x", "api_key_env": KEY_ENV, "thinking": THINKING}
    cfg = settings_from_config("claude", entry, "models.yaml")
    assert cfg.params == {"thinking": THINKING} and not create_model(cfg).can_prefill
    monkeypatch.setenv(KEY_ENV, "sk-ant\nbroken")
    with pytest.raises(ConfigError, match=KEY_ENV) as info:
        settings_from_config("claude", entry, "models.yaml")
    assert "broken" not in str(info.value)
    with pytest.raises(ConfigError, match="one base URL"):
        AnthropicBackend(parse_model_spec("anthropic:claude-x@http://127.0.0.1:9,http://127.0.0.1:10"))


# -- Message Batches ---------------------------------------------------------------------------


def batch_of(*items: tuple[str, ChatRequest]) -> list[BatchRequest]:
    return [BatchRequest(custom_id=cid, request=r) for cid, r in items]


async def test_batch_submit_status_and_results(server):
    server.batch_polls = 2
    server.outcomes = {
        "late": "expired",
        "broken": Turn.error(500, "Internal server error", type="api_error"),
    }
    schema = {"type": "object", "properties": {"v": {"type": "string"}}}
    server.responder = lambda body: (
        '{"v": "tool"}' if body.get("tools") else "plain " + flat_text(body["messages"][-1]["content"])
    )
    requests = batch_of(
        ("a-1", ask("first")),
        ("tool_2", ask("second", json_schema=schema)),
        ("late", ask("third")),
        ("broken", ask("fourth")),
        ("refused", ask("fifth", extra_body={"no_such_field": True})),
    )
    backend = AnthropicBackend(settings_for(server))
    batch_id = await backend.submit_batch(requests)
    sent = server.on("/v1/messages/batches")[0].json["requests"]
    assert [r["custom_id"] for r in sent] == ["a-1", "tool_2", "late", "broken", "refused"]
    online = backend._prepare(ask("first")).body
    assert sent[0]["params"] == online  # a batch request is the online request's body
    state = await backend.batch_status(batch_id)
    assert (state.id, state.status, state.total, state.ended) == (batch_id, "in_progress", 5, False)
    with pytest.raises(ModelError, match="has not ended"):
        await backend.batch_results(batch_id)
    state = await backend.batch_status(batch_id)
    assert (state.status, state.total, state.completed, state.failed, state.ended) == ("expired", 5, 2, 2, True)
    results = await backend.batch_results(batch_id)
    await backend.aclose()
    assert set(results) == {"a-1", "tool_2", "late", "broken", "refused"}
    assert results["a-1"].text == "plain first" and results["a-1"].usage.prompt_tokens > 0
    assert json.loads(results["tool_2"].text) == {"v": "tool"}
    late, broken, refused = results["late"], results["broken"], results["refused"]
    assert isinstance(late, BatchItemError) and (late.kind, late.retryable) == ("expired", True)
    assert isinstance(broken, BatchItemError) and (broken.kind, broken.status, broken.retryable) == (
        "api_error",
        500,
        True,
    )
    assert isinstance(refused, BatchItemError) and (refused.kind, refused.status, refused.retryable) == (
        "invalid_request_error",
        400,
        False,
    )
    assert "Extra inputs are not permitted" in refused.message


async def test_batch_cancel_and_partial_results(server):
    server.batch_polls = 100
    server.outcomes = {"kept": "run"}
    backend = AnthropicBackend(settings_for(server))
    batch_id = await backend.submit_batch(batch_of(("kept", ask("one")), ("dropped", ask("two"))))
    await backend.cancel_batch(batch_id)
    assert server.on(f"/v1/messages/batches/{batch_id}/cancel")
    state = await backend.batch_status(batch_id)
    assert (state.status, state.completed, state.failed) == ("cancelled", 1, 0)
    results = await backend.batch_results(batch_id)
    await backend.aclose()
    assert results["kept"].text == "echo: one"
    assert isinstance(results["dropped"], BatchItemError) and results["dropped"].kind == "cancelled"


async def test_batch_results_come_from_the_base_url_and_thinking_reads_as_online():
    # a results_url naming another host is not followed: the key never goes there
    with AnthropicServer(results_url_base="http://127.0.0.1:9") as srv:
        srv.script(Turn("answer", thinking="because", redacted=1))
        backend = AnthropicBackend(settings_for(srv))
        batch_id = await backend.submit_batch(batch_of(("t", ask("q", params={"thinking": THINKING}))))
        while not (await backend.batch_status(batch_id)).ended:
            pass
        results = await backend.batch_results(batch_id)
        await backend.aclose()
    out = results["t"]
    assert out.text == "<think>because</think>answer" and out.text[out.answer_start :] == "answer"
    assert out.flags == [THINKING_REDACTED]


async def test_batch_ids_and_errors(server):
    backend = AnthropicBackend(settings_for(server))
    with pytest.raises(ConfigError, match="letters, digits"):
        await backend.submit_batch(batch_of(("child/u01#0", ask())))
    with pytest.raises(ConfigError, match="twice"):
        await backend.submit_batch(batch_of(("a", ask()), ("a", ask())))
    with pytest.raises(CapabilityError):
        prefill = ChatRequest(
            messages=(Message(role="user", content="q"), Message(role="assistant", content="p")),
            params={"thinking": THINKING},
            continue_final=True,
        )
        await backend.submit_batch(batch_of(("p", prefill)))
    assert server.on("/v1/messages/batches") == []
    with pytest.raises(ModelError) as info:
        await backend.batch_status("msgbatch_nope")
    assert type(info.value) is ModelError and info.value.kind == "not_found"
    for bad in ("../../v1/messages", "msgbatch_1/cancel", "", "msgbatch_\x1b[2J"):
        with pytest.raises(ConfigError, match="is not a Message Batch id"):
            await backend.batch_results(bad)
    await backend.aclose()


async def test_a_batch_is_never_created_twice(server):
    backend = AnthropicBackend(settings_for(server))
    # an error status: no batch was made, so it is sent again
    server.create_faults.append(Turn.error(529, "Overloaded", type="overloaded_error", headers={"retry-after": "0"}))
    batch_id = await backend.submit_batch(batch_of(("a", ask())))
    assert batch_id in server.batches and len(server.on("/v1/messages/batches")) == 2
    # an answer that cannot be read: the batch may exist, so it is not sent again
    server.create_faults.append(Turn(body='{"id": "msgbatch_x", "type": "mess'))
    with pytest.raises(ModelError, match="may have been carried out, so it is not sent again"):
        await backend.submit_batch(batch_of(("a", ask())))
    assert len(server.on("/v1/messages/batches")) == 3
    await backend.aclose()


async def test_no_connection_is_retried_even_for_a_batch(fast_backoff):
    srv = AnthropicServer().start()
    settings = settings_for(srv, max_retries=2)
    srv.stop()  # nothing listens there now: the requests never reach a server
    backend = AnthropicBackend(settings)
    with pytest.raises(ModelError, match="failed after 3 attempts: connection error") as info:
        await backend.submit_batch(batch_of(("a", ask())))
    assert info.value.kind == "connection" and len(fast_backoff) == 2
    with pytest.raises(ModelError, match="chat call .* failed after 3 attempts"):
        await backend.chat(ask())
    await backend.aclose()


async def test_batch_access_error(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    with AnthropicServer(api_key="other") as srv:
        backend = AnthropicBackend(settings_for(srv, api_key_env=KEY_ENV))
        with pytest.raises(ModelAccessError) as info:
            await backend.submit_batch(batch_of(("a", ask())))
        await backend.aclose()
    assert SECRET not in str(info.value) and info.value.kind == "auth"


async def test_a_batch_results_file_with_broken_lines(server):
    backend = AnthropicBackend(settings_for(server))
    good = {"custom_id": "a", "result": {"type": "succeeded", "message": {"content": [{"type": "text", "text": "hi"}]}}}
    data = b"\n".join(
        [
            json.dumps(good).encode(),
            b'{"custom_id": "b", "result": {"type": "succ',
            json.dumps({"custom_id": "a", "result": {"type": "expired"}}).encode(),
            json.dumps({"custom_id": "c", "result": {"type": "succeeded", "message": {"content": "x"}}}).encode(),
            json.dumps({"custom_id": "d", "result": {"type": "\x1b[31mnew"}}).encode(),
            b"\xff\xfe",
        ]
    )
    results = backend._results(data)
    assert set(results) == {"a", "c", "d"} and results["a"].text == "hi"  # the first of a repeated id
    assert isinstance(results["c"], BatchItemError) and results["c"].kind == "malformed"
    assert isinstance(results["d"], BatchItemError) and results["d"].kind == "unknown"


# -- end to end --------------------------------------------------------------------------------


def test_specalign_run_with_anthropic_target_and_judge(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    with AnthropicServer(lambda body: world(openai_view(body)), api_key=SECRET) as server:
        spec = f"anthropic:{DEFAULT_MODEL}@{server.base_url}"
        out = tmp_path / "run"
        r = cli("run", "-s", "child", "-n", "2", "--model", spec, "--judge", spec, "-o", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert all(SECRET not in f.read_text() for f in out.rglob("*") if f.is_file()) and SECRET not in r.stdout + r.stderr
    scores = json.loads((out / "scores.json").read_text())
    assert scores["scenarios"]["child"]["full"]["n_scored"] == 2
    judge_bodies = [b.json for b in server.message_requests if b.json.get("tools")]
    assert len(judge_bodies) == 2 and all(b["tool_choice"]["name"] == TOOL_NAME for b in judge_bodies)
    gens = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert all(g["response"].startswith("ANSWER[") for g in gens)
    manifest = (out / "manifest.json").read_text()
    assert "anthropic" in manifest


def test_model_wrapper_counts_cached_usage(server):
    model = Model(settings_for(server), AnthropicBackend(settings_for(server)))

    async def twice():
        await model.generate([Message(role="system", content="sys words"), Message(role="user", content="a")])
        await model.generate([Message(role="system", content="sys words"), Message(role="user", content="b")])
        await model.aclose()

    asyncio.run(twice())
    assert model.usage.cached_prompt_tokens == 2 and model.calls_made == 2


async def test_configured_rate_limits_pace_the_calls(server, monkeypatch):
    """requests_per_minute applies to anthropic models too: each call takes a permit from the model's limiter
    and gives back its real usage."""
    settings = settings_for(server, requests_per_minute=6000, tokens_per_minute=10_000_000)
    backend = AnthropicBackend(settings)
    seen: list[tuple[str, int]] = []
    limiter = backend._limiter
    acquire, answered = limiter.acquire, limiter.answered

    async def counting_acquire(kwargs):
        seen.append(("acquire", kwargs["max_tokens"]))
        return await acquire(kwargs)

    def counting_answered(permit, usage=None, headers=None):
        seen.append(("answered", usage.completion_tokens))
        return answered(permit, usage, headers)

    monkeypatch.setattr(limiter, "acquire", counting_acquire)
    monkeypatch.setattr(limiter, "answered", counting_answered)
    server.script(Turn("four words of answer"))
    try:
        await backend.chat(ask())
    finally:
        await backend.aclose()
    assert seen == [("acquire", DEFAULT_MAX_TOKENS), ("answered", 4)]
    assert limiter.requests_per_minute == 6000 and "≤ 6,000 requests/min" in limiter.describe()


def test_llama_cpp_refuses_rate_limits(tmp_path):
    from specalign.models import create_model, parse_model_spec  # noqa: PLC0415

    settings = parse_model_spec("local").model_copy(update={"requests_per_minute": 100})
    with pytest.raises(ConfigError, match="no provider rate limits"):
        create_model(settings, None)


def test_specalign_run_batch_through_message_batches(cli, tmp_path, monkeypatch):
    """`specalign run --batch` with anthropic target and judge: two Message Batches (answers, then verdicts),
    no online message call, the same records and scores as online."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    with AnthropicServer(lambda body: world(openai_view(body)), api_key=SECRET, batch_polls=2) as server:
        spec = f"anthropic:{DEFAULT_MODEL}@{server.base_url}"
        out = tmp_path / "run"
        r = cli(
            "run",
            "-s",
            "child",
            "-n",
            "2",
            "--model",
            spec,
            "--judge",
            spec,
            "-o",
            str(out),
            "--batch",
            "--batch-poll",
            "0.01",
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert server.message_requests == [] and len(server.batches) == 2
    assert "through the provider's batch API" in r.stderr
    scores = json.loads((out / "scores.json").read_text())
    assert scores["scenarios"]["child"]["full"]["n_scored"] == 2
    ledger = [json.loads(line) for line in (out / "batches.jsonl").read_text().splitlines()]
    assert [e["event"] for e in ledger] == ["submitted", "collected", "submitted", "collected"]
    assert all(SECRET not in f.read_text(errors="replace") for f in out.rglob("*.json*"))


# -- streaming ---------------------------------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"v": {"type": "string"}}, "required": ["v"]}
PREFILL = ChatRequest(
    messages=(Message(role="user", content="what is it?"), Message(role="assistant", content="The answer is  ")),
    continue_final=True,
)
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


async def run_stream(settings: ModelSettings, request: ChatRequest | None = None):
    backend = AnthropicBackend(settings)
    try:
        pieces = [piece async for piece in backend.stream(request or ask())]
    finally:
        await backend.aclose()
    *deltas, done = pieces
    assert all(isinstance(d, Delta) for d in deltas) and isinstance(done, Completion)
    return deltas, done


def assert_pieces_make(deltas: list, done) -> None:
    """The pieces join to the final text; the thought pieces are exactly the text before answer_start."""
    assert "".join(d.text for d in deltas) == done.text
    thought = "".join(d.text for d in deltas if d.thought)
    assert thought == (done.text[: done.answer_start] if done.answer_start else "")
    flags = [d.thought for d in deltas]
    assert flags == sorted(flags, reverse=True)  # thought pieces first, never after an answer piece


TOOL_WITH_THINKING = Turn(
    blocks=[
        {"type": "thinking", "thinking": "consider </think> it", "signature": "s"},
        {"type": "text", "text": "Here it is:"},
        {"type": "tool_use", "id": "toolu_1", "name": TOOL_NAME, "input": {"v": "yes \u00e9"}},
    ],
    stop_reason="tool_use",
)
STREAM_CASES = {
    "plain": (Turn("a longer answer \x1b[2J\x1b[31mred\x1b[0m \u202eevil\u202c \x00 \r\n done"), ask()),
    "thinking": (
        Turn("the answer", thinking=["first I look", "", "then </think> decide"], redacted=1),
        ask(params={"thinking": THINKING}),
    ),
    "redacted_only": (Turn("only answer", redacted=2), ask(params={"thinking": THINKING})),
    "tool": (Turn('{"v": "forced \\u00e9 answer"}'), ask(json_schema=SCHEMA)),
    "tool_with_thinking": (TOOL_WITH_THINKING, ask(json_schema=SCHEMA, params={"thinking": THINKING})),
    "prefill": (Turn("  42, because"), PREFILL),
    "prefill_unechoed": (Turn("42"), PREFILL),
    "lone_surrogates": (Turn("x\ud800y and \udfff", thinking="a\udfffb"), ask(params={"thinking": THINKING})),
    "tool_lone_surrogates": (Turn("{}", tool_input={"r\ud800": "v\udc00"}), ask(json_schema=SCHEMA)),
    "max_tokens": (Turn("one two three four five"), ask(params={"max_tokens": 3})),
}


@pytest.mark.parametrize("case", list(STREAM_CASES))
async def test_streamed_pieces_join_to_exactly_the_chat_completion(server, case):
    turn, request = STREAM_CASES[case]
    server.responder = lambda body: turn
    settings = settings_for(server)
    await run_chat(settings, request)  # writes the cache: the two calls compared both read it
    deltas, done = await run_stream(settings, request)
    chat = await run_chat(settings, request)
    assert done == chat
    assert_pieces_make(deltas, done)
    assert server.message_requests[1].json == {**server.message_requests[2].json, "stream": True}
    if case == "plain":
        assert len(deltas) > 5 and done.usage.cached_prompt_tokens > 0 and done.usage.completion_tokens == 7
    if case == "thinking":
        assert done.text == "<think>first I look\n\nthen </think> decide</think>the answer"
        assert THINKING_REDACTED in done.flags and deltas[0].text.startswith("<think>")
    if case.startswith("prefill"):
        assert server.message_requests[1].json["messages"][-1]["content"] == "The answer is"
        assert done.text == ("42, because" if case == "prefill" else "42")
    if "lone" in case:
        assert REPAIRED in done.flags and not any("\ud800" <= c <= "\udfff" for d in deltas for c in d.text)
        done.model_dump_json()
    if case == "max_tokens":
        assert done.finish_reason == "length"


async def test_stream_thinking_arrives_before_the_answer(server):
    server.script(Turn("the answer here", thinking="a long line of thought"))
    deltas, done = await run_stream(settings_for(server), ask(params={"thinking": THINKING}))
    thought = [d for d in deltas if d.thought]
    assert len(thought) > 3 and thought[-1].text == "</think>" and deltas[-1].text == "ere"
    assert done.answer_start == len("<think>a long line of thought</think>")


async def test_stream_error_before_the_first_piece_is_retried(server, fast_backoff):
    server.script(
        Turn.error(529, "Overloaded", type="overloaded_error", headers={"retry-after": "2"}),
        Turn("never seen", stream_error=OVERLOADED, stream_fault_after=0),
        Turn("never seen", stream_cut=True, stream_fault_after=0),
        Turn("made it"),
    )
    deltas, done = await run_stream(settings_for(server))
    assert done.text == "made it" and "".join(d.text for d in deltas) == "made it"
    assert len(server.message_requests) == 4 and fast_backoff[0] == 2.0


async def test_stream_error_after_the_first_piece_is_final(server):
    server.script(Turn("abcdefghijkl", stream_error=OVERLOADED, stream_fault_after=2))
    backend = AnthropicBackend(settings_for(server))
    got = []
    with pytest.raises(ModelError, match="broke off: error event in the stream: overloaded_error") as info:
        async for piece in backend.stream(ask()):
            got.append(piece)
    assert [d.text for d in got] == ["abc", "def"] and type(info.value) is ModelError
    assert len(server.message_requests) == 1
    server.script(Turn("abcdefghijkl", stream_cut=True, stream_fault_after=1))
    got = []
    with pytest.raises(ModelError, match="broke off"):
        async for piece in backend.stream(ask()):
            got.append(piece)
    await backend.aclose()
    assert [d.text for d in got] == ["abc"] and len(server.message_requests) == 2


async def test_stream_errors_that_no_retry_fixes(server):
    bad = {"type": "error", "error": {"type": "invalid_request_error", "message": "no\nway"}}
    server.script(Turn("x", stream_error=bad))
    with pytest.raises(ModelError, match="rejected the request") as info:
        await run_stream(settings_for(server))
    assert info.value.kind == "rejected" and len(server.message_requests) == 1 and "\n" not in str(info.value)
    server.responder = lambda body: Turn("x", stream_error=OVERLOADED)
    with pytest.raises(ModelError, match="failed after 3 attempts"):
        await run_stream(settings_for(server, max_retries=2))
    assert len(server.message_requests) == 4
    request = ChatRequest(
        messages=(Message(role="user", content="q"), Message(role="assistant", content="<think>")),
        params={"thinking": THINKING},
        continue_final=True,
    )
    with pytest.raises(CapabilityError):
        await run_stream(settings_for(server), request)
    assert len(server.message_requests) == 4


async def test_stream_takes_a_rate_limit_permit_and_gives_back_usage(server, monkeypatch):
    backend = AnthropicBackend(settings_for(server, requests_per_minute=6000))
    seen: list[tuple[str, int]] = []
    limiter = backend._limiter
    acquire, answered, failed = limiter.acquire, limiter.answered, limiter.failed

    async def counting_acquire(kwargs):
        seen.append(("acquire", kwargs["max_tokens"]))
        return await acquire(kwargs)

    def counting_answered(permit, usage=None, headers=None):
        seen.append(("answered", usage.completion_tokens))
        return answered(permit, usage, headers)

    def counting_failed(permit, error):
        seen.append(("failed", 0))
        return failed(permit, error)

    monkeypatch.setattr(limiter, "acquire", counting_acquire)
    monkeypatch.setattr(limiter, "answered", counting_answered)
    monkeypatch.setattr(limiter, "failed", counting_failed)
    server.script(Turn("x", stream_error=OVERLOADED), Turn("four words of answer"))
    try:
        pieces = [p async for p in backend.stream(ask())]
    finally:
        await backend.aclose()
    assert pieces[-1].text == "four words of answer"
    assert seen == [("acquire", DEFAULT_MAX_TOKENS), ("failed", 0), ("acquire", DEFAULT_MAX_TOKENS), ("answered", 4)]


async def test_stream_thinking_after_the_answer_stops_the_pieces(server):
    """No real server sends thinking after text; if one did, no more pieces, and the completion is still chat()'s."""
    blocks = [{"type": "text", "text": "early"}, {"type": "thinking", "thinking": "late", "signature": "s"}]
    server.responder = lambda body: Turn(blocks=blocks)
    deltas, done = await run_stream(settings_for(server), ask(params={"thinking": THINKING}))
    chat = await run_chat(settings_for(server), ask(params={"thinking": THINKING}))
    assert done.model_dump(exclude={"usage"}) == chat.model_dump(exclude={"usage"})
    assert done.text == "<think>late</think>early" and "".join(d.text for d in deltas) == "early"


async def test_model_stream_passes_the_pieces_and_an_early_close_ends_the_call(server):
    model = create_model(settings_for(server))
    server.script(Turn("abcdefghi"), Turn("jklmnopqr"))
    pieces = [p async for p in model.stream(ask())]
    assert [p.text for p in pieces[:-1]] == ["abc", "def", "ghi"] and pieces[-1].text == "abcdefghi"
    stream = model.stream(ask("other"))
    first = await stream.__anext__()
    await stream.aclose()  # a client that hung up
    assert first.text == "jkl" and len(server.message_requests) == 2
    await model.aclose()


async def test_stream_error_events_are_scrubbed_and_repaired(monkeypatch, server):
    monkeypatch.setenv(KEY_ENV, SECRET)
    hostile = {"type": "error", "error": {"type": "api_error", "message": f"key {SECRET}\n\x1b[31m \ud800"}}
    server.responder = lambda body: Turn("abcdef", stream_error=hostile, stream_fault_after=1)
    with pytest.raises(ModelError, match="broke off") as info:
        await run_stream(settings_for(server, api_key_env=KEY_ENV))
    msg = str(info.value)
    assert SECRET not in msg and "***" in msg and "\n" not in msg and "\ud800" not in msg
