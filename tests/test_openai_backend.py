"""OpenAIBackend against a real (scripted) OpenAI-compatible HTTP server."""

from __future__ import annotations

import asyncio
import time

import pytest

from scripted_server import DEFAULT_MODEL, Reply, ScriptedServer
from specalign.errors import ConfigError, ModelAccessError, ModelError
from specalign.models import ChatRequest, Message, ModelSettings, _openai
from specalign.models._openai import OpenAIBackend

KEY_ENV = "SPECALIGN_TEST_KEY"
SECRET = "sk-test-secret-123456"


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    """Record backoff sleeps but do not take them."""
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(_openai, "_sleep", fake_sleep)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return slept


@pytest.fixture
def server():
    with ScriptedServer() as srv:
        yield srv


def settings_for(*servers: ScriptedServer, **kw) -> ModelSettings:
    kw.setdefault("model_name", DEFAULT_MODEL)
    kw.setdefault("max_retries", 3)
    kw.setdefault("timeout", 5.0)
    return ModelSettings(key="test", backend="openai", base_urls=[s.base_url for s in servers], **kw)


def ask(text: str = "hello there", **kw) -> ChatRequest:
    return ChatRequest(messages=(Message(role="system", content="be brief"), Message(role="user", content=text)), **kw)


async def run_chat(settings: ModelSettings, request: ChatRequest | None = None):
    backend = OpenAIBackend(settings)
    try:
        return await backend.chat(request or ask())
    finally:
        await backend.aclose()


async def test_plain_answer_and_usage(server):
    server.script(Reply("four words of answer"))
    out = await run_chat(settings_for(server))
    assert out.text == "four words of answer"
    assert out.finish_reason == "stop"
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (4, 4)
    body = server.chat_requests[0].json
    assert body["model"] == DEFAULT_MODEL
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]


async def test_default_echo_length_limit_and_missing_usage(server):
    out = await run_chat(settings_for(server), ask("one two three", params={"max_tokens": 2}))
    assert (out.text, out.finish_reason) == ("echo: one", "length")
    server.script(Reply("no usage here", usage=False))
    out = await run_chat(settings_for(server))
    assert out.text == "no usage here" and out.usage.total_tokens == 0


async def test_params_split_between_kwargs_and_extra_body(server):
    params = {
        "temperature": 0.0,
        "max_tokens": 50,
        "seed": 7,
        "top_k": 20,
        "min_p": 0.1,
        "chat_template_kwargs": {"enable_thinking": False},
    }
    await run_chat(settings_for(server), ask(params=params, extra_body={"repetition_penalty": 1.05, "top_k": 1}))
    body = server.chat_requests[0].json
    assert body["temperature"] == 0.0 and body["max_tokens"] == 50 and body["seed"] == 7
    assert body["top_k"] == 20  # request params win over the settings' extra_body
    assert body["min_p"] == 0.1 and body["repetition_penalty"] == 1.05
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert "response_format" not in body


async def test_json_schema_becomes_response_format(server):
    schema = {"type": "object", "properties": {"v": {"type": "string"}}, "required": ["v"]}
    await run_chat(settings_for(server), ask(json_schema=schema))
    fmt = server.chat_requests[0].json["response_format"]
    assert fmt == {"type": "json_schema", "json_schema": {"name": "verdicts", "schema": schema, "strict": True}}


async def test_reasoning_content_becomes_think_block(server):
    server.script(Reply("final answer", reasoning_content="let me think"))
    out = await run_chat(settings_for(server))
    assert out.text == "<think>let me think</think>final answer"
    server.script(Reply("x", reasoning_content="hmm"))
    out = await run_chat(settings_for(server, thought_start="[T]", thought_end="[/T]"))
    assert out.text == "[T]hmm[/T]x"


async def test_429_with_retry_after_then_success(server, fast_backoff):
    server.script(
        Reply.error(429, "slow down", type="requests", code="rate_limit_exceeded", headers={"Retry-After": "2"}),
        Reply.error(429, "slow down", headers={"retry-after-ms": "250"}),
        Reply("made it"),
    )
    out = await run_chat(settings_for(server))
    assert out.text == "made it"
    assert server.chat_count == 3
    assert fast_backoff == [2.0, 0.25]


async def test_500s_then_success(server, fast_backoff):
    server.script(Reply.error(500), Reply.error(503), Reply("ok"))
    out = await run_chat(settings_for(server))
    assert out.text == "ok" and server.chat_count == 3
    assert len(fast_backoff) == 2 and all(0 < s <= 8 for s in fast_backoff)


async def test_500_forever_gives_model_error(server):
    server.responder = lambda body: Reply.error(500, "boom")
    with pytest.raises(ModelError) as info:
        await run_chat(settings_for(server, max_retries=2))
    assert type(info.value) is ModelError
    assert server.chat_count == 3
    msg = str(info.value)
    assert "after 3 attempts" in msg and server.base_url in msg and "boom" in msg and "\n" not in msg


async def test_400_is_not_retried(server):
    server.script(Reply.error(400, "bad\nparameter 'foo'", type="invalid_request_error"))
    with pytest.raises(ModelError) as info:
        await run_chat(settings_for(server))
    assert type(info.value) is ModelError and server.chat_count == 1
    assert "bad parameter 'foo'" in str(info.value) and "\n" not in str(info.value)


async def test_401_fails_at_once_without_leaking_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    with ScriptedServer(api_key="the-right-key") as srv:
        with pytest.raises(ModelAccessError) as info:
            await run_chat(settings_for(srv, api_key_env=KEY_ENV))
        assert srv.chat_count == 1
        msg = str(info.value)
        assert "authentication failed" in msg and KEY_ENV in msg and srv.base_url in msg
        assert SECRET not in msg


async def test_unknown_model_is_access_error(server):
    with pytest.raises(ModelAccessError) as info:
        await run_chat(settings_for(server, model_name="no-such-model"))
    assert server.chat_count == 1
    assert "'no-such-model' not found" in str(info.value) and "/models" in str(info.value)


async def test_insufficient_quota_is_access_error(server):
    server.script(
        Reply.error(429, "You exceeded your current quota", type="insufficient_quota", code="insufficient_quota")
    )
    with pytest.raises(ModelAccessError, match="quota"):
        await run_chat(settings_for(server))
    assert server.chat_count == 1


async def test_retry_after_beyond_cap_is_access_error(server):
    server.script(Reply.error(429, "come back tomorrow", headers={"Retry-After": "86400"}))
    with pytest.raises(ModelAccessError, match="86400 s"):
        await run_chat(settings_for(server))
    assert server.chat_count == 1


async def test_connection_reset_then_success(server):
    server.script(Reply(reset=True), Reply("after reset"))
    out = await run_chat(settings_for(server))
    assert out.text == "after reset" and server.chat_count == 2


@pytest.mark.parametrize(
    "broken",
    [
        '{"id": "chatcmpl-1", "object": "chat.comp',  # truncated JSON
        '{"id": "x", "object": "chat.completion", "choices": []}',  # no choices
        '{"id": "x", "choices": [{"index": 0, "message": null, "finish_reason": "stop"}]}',
    ],
)
async def test_malformed_body_then_success(server, broken):
    server.script(Reply(body=broken), Reply("fine"))
    out = await run_chat(settings_for(server))
    assert out.text == "fine" and server.chat_count == 2


async def test_non_json_body_then_success(server):
    server.script(Reply(body="<html>bad gateway</html>", headers={"Content-Type": "text/html"}), Reply("fine"))
    out = await run_chat(settings_for(server))
    assert out.text == "fine" and server.chat_count == 2


async def test_slow_response_times_out(server):
    server.responder = lambda body: Reply("late", delay=2.0)
    start = time.monotonic()
    with pytest.raises(ModelError, match="timeout"):
        await run_chat(settings_for(server, timeout=0.3, max_retries=1))
    assert server.chat_count == 2
    assert time.monotonic() - start < 1.9


async def test_two_base_urls_share_the_load():
    with ScriptedServer() as a, ScriptedServer() as b:
        backend = OpenAIBackend(settings_for(a, b))
        try:
            outs = await asyncio.gather(*(backend.chat(ask(f"q{i}")) for i in range(6)))
        finally:
            await backend.aclose()
        assert [o.text for o in outs] == [f"echo: q{i}" for i in range(6)]
        assert a.chat_count == 3 and b.chat_count == 3


async def test_retry_moves_to_the_other_endpoint():
    with ScriptedServer() as a, ScriptedServer() as b:
        a.responder = lambda body: Reply.error(502)
        out = await run_chat(settings_for(a, b))
        assert out.text == "echo: hello there"
        assert (a.chat_count, b.chat_count) == (1, 1)


async def test_concurrency_limit_per_endpoint(server):
    server.responder = lambda body: Reply("slow", delay=0.1)
    backend = OpenAIBackend(settings_for(server, max_concurrency=3))
    try:
        await asyncio.gather(*(backend.chat(ask(f"q{i}")) for i in range(10)))
    finally:
        await backend.aclose()
    assert server.chat_count == 10
    assert 2 <= server.max_in_flight <= 3


async def test_key_from_custom_env_var_is_sent_but_never_exposed(monkeypatch, server):
    monkeypatch.setenv(KEY_ENV, SECRET)
    server.api_key = SECRET
    settings = settings_for(server, api_key_env=KEY_ENV)
    backend = OpenAIBackend(settings)
    try:
        out = await backend.chat(ask())
    finally:
        await backend.aclose()
    assert out.text == "echo: hello there"
    assert server.chat_requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert SECRET not in repr(settings.public_dict()) and SECRET not in repr(backend.identity())
    assert backend.identity() == {"kind": "openai", "model": DEFAULT_MODEL, "base_urls": [server.base_url]}


async def test_local_server_without_key_gets_placeholder(server):
    await run_chat(settings_for(server))
    assert server.chat_requests[0].headers["authorization"] == "Bearer EMPTY"


async def test_key_echoed_by_server_is_scrubbed(monkeypatch, server):
    monkeypatch.setenv(KEY_ENV, SECRET)
    server.script(Reply.error(400, f"invalid key {SECRET}"))
    with pytest.raises(ModelError) as info:
        await run_chat(settings_for(server, api_key_env=KEY_ENV))
    assert SECRET not in str(info.value) and "***" in str(info.value)


def test_backend_survives_a_new_event_loop(server):
    backend = OpenAIBackend(settings_for(server))

    async def once() -> str:
        try:
            return (await backend.chat(ask())).text
        finally:
            await backend.aclose()

    for _ in range(2):  # e.g. a CLI that calls asyncio.run twice
        assert asyncio.run(once()) == "echo: hello there"
    assert server.chat_count == 2


def test_official_api_without_key_is_config_error():
    settings = ModelSettings(
        key="gpt", backend="openai", model_name="gpt-4.1", base_urls=["https://api.openai.com/v1"], api_key_env=KEY_ENV
    )
    with pytest.raises(ConfigError, match=KEY_ENV):
        OpenAIBackend(settings)


def test_server_models_and_health(server):
    import json
    import urllib.request

    with urllib.request.urlopen(server.base_url + "/models") as r:
        data = json.load(r)
    assert data["object"] == "list" and data["data"][0]["id"] == DEFAULT_MODEL
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health") as r:
        assert json.load(r) == {"status": "ok"}


def test_length_limits_kept_for_local_servers_and_dropped_for_hosted_apis():
    from specalign.models._openai import _is_local_host, portable_schema

    schema = {"type": "object", "properties": {"reason": {"type": "string", "maxLength": 60}}}
    assert portable_schema(schema) == {"type": "object", "properties": {"reason": {"type": "string"}}}
    assert _is_local_host("http://127.0.0.1:8000/v1") and _is_local_host("http://localhost:11434/v1")
    assert _is_local_host("http://10.0.0.5:8000/v1") and _is_local_host("http://gpu1:8000/v1")
    assert not _is_local_host("https://api.openai.com/v1") and not _is_local_host("https://api.deepseek.com/v1")


# -- credentials ----------------------------------------------------------------------------------

PASSWORD = "pw-CANARY-0123456789"


def with_credentials(server: ScriptedServer) -> str:
    return f"http://user:{PASSWORD}@127.0.0.1:{server.port}/v1?api_key={PASSWORD}"


async def test_url_credentials_are_used_but_never_shown(server):
    settings = ModelSettings(
        key="t",
        backend="openai",
        model_name=DEFAULT_MODEL,
        base_urls=[with_credentials(server)],
        max_retries=1,
        timeout=5.0,
    )
    backend = OpenAIBackend(settings)
    server.script(Reply("fine"), *[Reply.error(500, f"boom {PASSWORD}", headers={"Retry-After": "0"})] * 2)
    try:
        assert (await backend.chat(ask())).text == "fine"
        with pytest.raises(ModelError) as info:
            await backend.chat(ask())
    finally:
        await backend.aclose()
    request = server.requests[0]
    assert request.headers["authorization"].startswith("Basic ")  # httpx sends the userinfo, as before
    assert request.path == f"/v1/chat/completions?api_key={PASSWORD}"  # the query string reaches the server
    message = str(info.value)
    assert PASSWORD not in message and "user" not in message, message
    assert f"chat call to http://***@127.0.0.1:{server.port}/v1?api_key=*** " in message
    assert PASSWORD not in repr(backend.identity()) and PASSWORD not in repr(settings.public_dict())


@pytest.mark.parametrize("echo", [lambda k: k, lambda k: repr(k), lambda k: __import__("urllib.parse").parse.quote(k)])
async def test_every_form_of_the_key_is_scrubbed(monkeypatch, server, echo):
    key = "sk-test/secret+key=123456"
    monkeypatch.setenv(KEY_ENV, key)
    server.script(Reply.error(400, f"invalid key {echo(key)}"))
    with pytest.raises(ModelError) as info:
        await run_chat(settings_for(server, api_key_env=KEY_ENV))
    assert "secret" not in str(info.value) and "***" in str(info.value), str(info.value)


async def test_a_short_key_does_not_mangle_the_message(monkeypatch, server):
    monkeypatch.setenv(KEY_ENV, "x")
    server.script(Reply.error(400, "the request exceeds the available context size"))
    with pytest.raises(ModelError, match="exceeds the available context size"):
        await run_chat(settings_for(server, api_key_env=KEY_ENV))


@pytest.mark.parametrize("key", ["sk-abc\ndef", "sk-abc\tdef", "sk-abcdéf", "sk-abc\x1bdef"])
def test_a_malformed_key_is_a_config_error_before_any_call(monkeypatch, server, key):
    monkeypatch.setenv(KEY_ENV, key)
    with pytest.raises(ConfigError, match=KEY_ENV) as info:
        OpenAIBackend(settings_for(server, api_key_env=KEY_ENV))
    assert "abc" not in str(info.value) and server.request_count == 0


async def test_a_number_as_finish_reason_and_a_body_nested_too_deep_are_not_crashes(server):
    """A hostile server: a finish_reason that is not text is dropped; a body nested 100,000 deep is a failed
    call (retried, then a ModelError), not a RecursionError escaping into the run."""
    body = {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "scripted-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": 7}],
    }
    server.script(Reply(body=body))
    out = await run_chat(settings_for(server))
    assert out.text == "fine" and out.finish_reason is None
    server.responder = lambda b: Reply(body="[" * 100_000)
    with pytest.raises(ModelError):
        await run_chat(settings_for(server, max_retries=1))
