"""OpenAIBackend's batches (OpenAI's Files and Batch APIs) against a real batch server on 127.0.0.1."""

from __future__ import annotations

import json

import openai
import pytest

from batch_server import BatchServer
from scripted_server import DEFAULT_MODEL, Reply
from specalign.errors import ConfigError, ModelAccessError, ModelError
from specalign.models import (
    BatchItemError,
    BatchRequest,
    ChatRequest,
    Completion,
    Message,
    ModelSettings,
    _openai,
    settings_from_config,
)
from specalign.models._openai import OpenAIBackend

KEY_ENV = "SPECALIGN_TEST_KEY"
SECRET = "sk-batch-secret-0123456789"
SCHEMA = {
    "type": "object",
    "properties": {"verdicts": {"type": "array", "items": {"type": "string", "maxLength": 60}}},
    "required": ["verdicts"],
}


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    """Record backoff sleeps but do not take them."""
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(_openai, "_sleep", fake_sleep)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return slept


def answer(body: dict) -> str | Reply:
    """One answer per last message, the same online and in a batch."""
    last = body["messages"][-1]
    text = last["content"]
    if last["role"] == "assistant":  # a prefill: llama-server echoes the prefix, vLLM does not
        return text + " and so on" if text.startswith("echo") else Reply(" the end", reasoning_content=" more thought")
    return {
        "reason": Reply("final answer", reasoning_content="step by step"),
        "judge": '{"verdicts": ["YES", "NO"]}',
        "ansi": "\x1b[31mred\x1b[0m \x1b]0;title\x07 \u202eevil",
        "surrogate": "broken \ud800 text",
        "long": "one two three four five six",
        "500": Reply.error(500, "The server had an error"),
        "429": Reply.error(429, "Rate limit reached", type="requests", code="rate_limit_exceeded"),
        "400": Reply.error(400, "Invalid 'messages'", type="invalid_request_error"),
        "quota": Reply.error(429, "You exceeded your quota", type="insufficient_quota", code="insufficient_quota"),
        "leak": Reply.error(400, f"bad key {SECRET}", type="invalid_request_error"),
    }.get(text, f"echo: {text}")


def ask(text: str, **kw) -> ChatRequest:
    return ChatRequest(messages=(Message(role="system", content="be brief"), Message(role="user", content=text)), **kw)


def prefill(prefix: str) -> ChatRequest:
    turn = (Message(role="user", content="go on"), Message(role="assistant", content=prefix))
    return ChatRequest(messages=turn, continue_final=True)


def batch(requests: dict[str, ChatRequest]) -> list[BatchRequest]:
    return [BatchRequest(custom_id=k, request=r) for k, r in requests.items()]


def settings_for(server: BatchServer, **kw) -> ModelSettings:
    kw.setdefault("model_name", DEFAULT_MODEL)
    kw.setdefault("max_retries", 2)
    kw.setdefault("timeout", 5.0)
    kw.setdefault("batch", True)
    return ModelSettings(key="test", backend="openai", base_urls=[server.base_url], **kw)


@pytest.fixture
def server():
    with BatchServer(answer) as srv:
        yield srv


@pytest.fixture
async def backend(server):
    b = OpenAIBackend(settings_for(server))
    yield b
    await b.aclose()


async def submitted(backend: OpenAIBackend, server: BatchServer, requests: dict[str, ChatRequest]) -> str:
    batch_id = await backend.submit_batch(batch(requests))
    assert batch_id in server.batches
    return batch_id


def sdk(server: BatchServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="EMPTY", max_retries=0)


# -- one request, batched or online: the same request, the same answer ------------------------------

MIXED = {
    "plain": ask("hello"),
    "reason": ask("reason"),
    "judge": ask("judge", json_schema=SCHEMA, params={"temperature": 0, "max_tokens": 300}),
    "sampled": ask("hello", params={"seed": 7, "top_k": 20, "temperature": 0.6}, sample_index=2),
    "extra": ask("hello", extra_body={"chat_template_kwargs": {"enable_thinking": False}}),
    "long": ask("long", params={"max_tokens": 3}),
    "ansi": ask("ansi"),
    "surrogate": ask("surrogate"),
    "input-surrogate": ask("bad \ud83d input"),
    "echoed-prefill": prefill("echo: I was saying"),
    "thinking-prefill": prefill("<think>I think"),
}


async def test_a_batched_answer_is_the_online_answer_of_the_same_request(server, backend):
    batch_id = await submitted(backend, server, MIXED)
    server.run_to_end()
    results = await backend.batch_results(batch_id)
    online = {k: await backend.chat(r) for k, r in MIXED.items()}

    assert list(results) == list(MIXED)
    for key, completion in online.items():
        assert results[key] == completion, key
    assert results["reason"].text == "<think>step by step</think>final answer" and results["reason"].answer_start == 27
    assert json.loads(results["judge"].text) == {"verdicts": ["YES", "NO"]}
    assert results["long"].finish_reason == "length"
    assert results["surrogate"].flags == ["invalid_text_repaired"] and "\ufffd" in results["surrogate"].text
    assert results["ansi"].text.startswith("\x1b[31m")  # model text is kept as it is; displays escape it
    assert results["echoed-prefill"].text == " and so on"
    assert results["thinking-prefill"].text == " more thought</think> the end"

    # the upload: a JSONL file of the very bodies the online calls sent
    upload = next(r for r in server.batch_requests if r.path == "/v1/files")
    assert upload.json["purpose"] == "batch" and upload.json["filename"].endswith(".jsonl")
    lines = [json.loads(line) for line in upload.json["content"].decode().splitlines()]
    assert [line["custom_id"] for line in lines] == list(MIXED)
    assert {(line["method"], line["url"]) for line in lines} == {("POST", "/v1/chat/completions")}
    assert [line["body"] for line in lines] == [r.json for r in server.chat_requests]
    judge = lines[2]["body"]
    assert judge["response_format"]["json_schema"]["schema"] == SCHEMA  # a local server keeps maxLength
    assert lines[3]["body"]["seed"] == 9 and lines[3]["body"]["top_k"] == 20
    assert "timeout" not in lines[0]["body"] and "extra_body" not in lines[4]["body"]
    create = next(r for r in server.batch_requests if r.path == "/v1/batches")
    assert create.json["endpoint"] == "/v1/chat/completions" and create.json["completion_window"] == "24h"
    assert create.json["input_file_id"] == server.batches[batch_id].input_file_id
    assert create.json["metadata"]["created_by"] == "specalign"


async def test_status_follows_the_batch_with_its_counts(server, backend):
    server.per_step = 2
    batch_id = await submitted(backend, server, {f"r{i}": ask(f"q{i}") for i in range(5)})
    seen = []
    for _ in range(6):
        state = await backend.batch_status(batch_id)
        seen.append((state.status, state.total, state.completed, state.failed, state.ended))
        server.step(batch_id)
    assert seen == [
        ("validating", 0, 0, 0, False),
        ("in_progress", 5, 0, 0, False),
        ("in_progress", 5, 2, 0, False),
        ("in_progress", 5, 4, 0, False),
        ("finalizing", 5, 5, 0, False),
        ("completed", 5, 5, 0, True),
    ]
    obj = sdk(server).batches.retrieve(batch_id)
    assert obj.object == "batch" and obj.output_file_id and obj.error_file_id is None
    assert obj.created_at <= obj.in_progress_at <= obj.finalizing_at <= obj.completed_at
    assert obj.expires_at == obj.created_at + 24 * 3600


async def test_the_server_can_move_on_each_poll_or_at_once():
    with BatchServer(answer, advance="poll") as srv:
        backend = OpenAIBackend(settings_for(srv))
        batch_id = await backend.submit_batch(batch({"a": ask("x"), "b": ask("500")}))
        statuses = [(await backend.batch_status(batch_id)).status for _ in range(4)]
        assert statuses == ["in_progress", "finalizing", "completed", "completed"]
        state = await backend.batch_status(batch_id)
        assert (state.completed, state.failed) == (1, 1)
        await backend.aclose()
    with BatchServer(answer, advance="instant") as srv:
        backend = OpenAIBackend(settings_for(srv))
        batch_id = await backend.submit_batch(batch({"a": ask("x")}))
        assert (await backend.batch_status(batch_id)).status == "completed"
        assert (await backend.batch_results(batch_id))["a"].text == "echo: x"
        await backend.aclose()


async def test_results_of_a_batch_still_running_are_refused(server, backend):
    batch_id = await submitted(backend, server, {"a": ask("x")})
    server.step(batch_id)
    with pytest.raises(ModelError, match="in_progress") as info:
        await backend.batch_results(batch_id)
    assert info.value.kind == "not_ended"


# -- requests that fail inside the batch --------------------------------------------------------------


async def test_partial_failures_are_per_request_errors(server, backend):
    batch_id = await submitted(backend, server, {k: ask(k) for k in ("ok", "500", "429", "400", "quota")})
    server.run_to_end()
    state = await backend.batch_status(batch_id)
    assert (state.status, state.total, state.completed, state.failed) == ("completed", 5, 1, 4)
    results = await backend.batch_results(batch_id)
    assert isinstance(results["ok"], Completion) and results["ok"].text == "echo: ok"
    errors = {k: (v.status, v.kind, v.retryable) for k, v in results.items() if isinstance(v, BatchItemError)}
    assert errors == {
        "500": (500, "server_error", True),
        "429": (429, "rate_limit_exceeded", True),
        "400": (400, "invalid_request_error", False),
        "quota": (429, "insufficient_quota", False),
    }
    assert results["500"].message == "HTTP 500: The server had an error"
    # the error file holds the failed requests in the output's shape
    error_lines = server.file_lines(server.batches[batch_id].error_file_id)
    assert sorted(line["custom_id"] for line in error_lines) == ["400", "429", "500", "quota"]
    assert all(line["error"] is None and line["response"]["status_code"] >= 400 for line in error_lines)
    output = server.file_lines(server.batches[batch_id].output_file_id)
    assert [line["custom_id"] for line in output] == ["ok"]
    assert all(line["id"].startswith("batch_req_") and line["response"]["request_id"] for line in output)


async def test_a_request_for_an_unknown_model_fails_alone(server):
    backend = OpenAIBackend(settings_for(server, model_name="no-such-model"))
    batch_id = await backend.submit_batch(batch({"a": ask("x")}))
    server.run_to_end()
    item = (await backend.batch_results(batch_id))["a"]
    assert isinstance(item, BatchItemError) and (item.status, item.kind, item.retryable) == (
        404,
        "model_not_found",
        False,
    )
    await backend.aclose()


async def test_an_expired_batch_leaves_its_unrun_requests_retryable(server, backend):
    server.per_step = 2
    batch_id = await submitted(backend, server, {f"r{i}": ask(f"q{i}") for i in range(5)})
    server.step(batch_id)  # validated
    server.step(batch_id)  # two answered
    server.expire(batch_id)
    state = await backend.batch_status(batch_id)
    assert (state.status, state.total, state.completed, state.failed, state.ended) == ("expired", 5, 2, 0, True)
    results = await backend.batch_results(batch_id)
    assert [results[f"r{i}"].text for i in range(2)] == ["echo: q0", "echo: q1"]
    for i in range(2, 5):
        item = results[f"r{i}"]
        assert isinstance(item, BatchItemError) and (item.kind, item.retryable, item.status) == ("expired", True, None)
        assert "completion window" in item.message
    error_lines = server.file_lines(server.batches[batch_id].error_file_id)
    assert {line["error"]["code"] for line in error_lines} == {"batch_expired"}
    assert all(line["response"] is None for line in error_lines)


async def test_cancel_keeps_what_was_done_and_is_quiet_once_ended(server, backend):
    server.per_step = 1
    batch_id = await submitted(backend, server, {f"r{i}": ask(f"q{i}") for i in range(3)})
    server.step(batch_id)
    server.step(batch_id)  # one answered
    await backend.cancel_batch(batch_id)
    assert (await backend.batch_status(batch_id)).status == "cancelling"
    await backend.cancel_batch(batch_id)  # cancelling twice is fine
    server.step(batch_id)
    state = await backend.batch_status(batch_id)
    assert (state.status, state.completed, state.ended) == ("cancelled", 1, True)
    results = await backend.batch_results(batch_id)
    assert results["r0"].text == "echo: q0"
    assert [(results[k].kind, results[k].retryable) for k in ("r1", "r2")] == [("cancelled", True)] * 2
    assert {line["error"]["code"] for line in server.file_lines(server.batches[batch_id].error_file_id)} == {
        "batch_cancelled"
    }
    await backend.cancel_batch(batch_id)  # the server refuses (400: already ended); nothing to do
    cancels = [r for r in server.batch_requests if r.path.endswith("/cancel")]
    assert len(cancels) == 3
    with pytest.raises(openai.BadRequestError, match="Cannot cancel a batch with status 'cancelled'"):
        sdk(server).batches.cancel(batch_id)


# -- the input file, validated as the real API does -----------------------------------------------


def upload(server: BatchServer, lines: list, filename: str = "in.jsonl") -> str:
    data = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines).encode()
    return sdk(server).files.create(file=(filename, data), purpose="batch").id


def line(custom_id: str, text: str = "hi", **kw) -> dict:
    body = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": text}]}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body, **kw}


async def test_an_input_file_that_does_not_validate_fails_the_batch(server, backend):
    other_model = line("e")
    other_model["body"]["model"] = "gpt-other"
    file_id = upload(
        server, [line("a"), line("b"), line("a"), "{not json", line("c", url="/v1/embeddings"), other_model]
    )
    client = sdk(server)
    assert client.files.retrieve(file_id).purpose == "batch"
    created = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    assert created.status == "validating"
    server.step(created.id)
    state = await backend.batch_status(created.id)
    assert (state.status, state.ended) == ("failed", True)
    failed = client.batches.retrieve(created.id)
    assert failed.failed_at and failed.output_file_id is None and failed.error_file_id is None
    codes = [(e.code, e.line, e.param) for e in failed.errors.data]
    assert codes == [
        ("duplicate_custom_id", 3, "custom_id"),
        ("invalid_json_line", 4, None),
        ("url_mismatch", 5, "url"),
        ("model_mismatch", 6, "body.model"),
    ]
    assert state.errors[0].startswith("line 3: The custom_id for this request is a duplicate")
    results = await backend.batch_results(created.id)
    assert list(results) == ["a", "b", "c", "e"]  # the requests of the file that could be read
    assert all(isinstance(v, BatchItemError) and v.kind == "batch_failed" for v in results.values())
    assert results["a"].retryable and "validation" in results["a"].message  # its own line was fine
    assert not results["c"].retryable and "url_mismatch" in results["c"].message


def test_uploads_and_batches_are_checked_as_the_real_api_does(server):
    client = sdk(server)
    with pytest.raises(openai.BadRequestError, match="Must be .jsonl"):
        upload(server, [line("a")], filename="in.txt")
    with pytest.raises(openai.BadRequestError, match="purpose"):
        client.files.create(file=("in.jsonl", b"{}\n"), purpose="nonsense")  # type: ignore[arg-type]
    empty = client.files.create(file=("in.jsonl", b""), purpose="batch").id
    with pytest.raises(openai.NotFoundError, match="No such File"):
        client.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.BadRequestError, match="completion_window|24h"):
        client.batches.create(input_file_id=empty, endpoint="/v1/chat/completions", completion_window="48h")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="metadata"):
        client.batches.create(
            input_file_id=empty, endpoint="/v1/chat/completions", completion_window="24h", metadata={"k": "v" * 600}
        )
    created = [
        client.batches.create(input_file_id=empty, endpoint="/v1/chat/completions", completion_window="24h").id
        for _ in range(3)
    ]
    server.step()
    assert client.batches.retrieve(created[0]).errors.data[0].code == "empty_file"
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == created[:0:-1] and page.has_more
    assert [b.id for b in client.batches.list(limit=2, after=created[1]).data] == [created[0]]
    assert [b.id for b in client.batches.list()] == created[::-1]  # the SDK follows the pages
    assert client.files.content(upload(server, [line("a")])).content == (json.dumps(line("a")) + "\n").encode()


# -- control calls: retries, access errors, secrets -----------------------------------------------


async def test_control_calls_are_retried_as_online_calls_are(server, backend, fast_backoff):
    server.fail_next(Reply.error(500), Reply.error(429, "slow down", headers={"Retry-After": "2"}), path="/files")
    server.fail_next(Reply(reset=True), Reply(body="<html>bad gateway</html>"), path="POST /batches")
    batch_id = await submitted(backend, server, {"a": ask("x")})
    server.run_to_end()
    assert (await backend.batch_results(batch_id))["a"].text == "echo: x"
    assert len(fast_backoff) == 4 and fast_backoff[1] == 2.0
    assert len(server.batches) == 1  # the failed creates made no batch


@pytest.mark.parametrize(
    "lost",
    [Reply.error(502), Reply(reset=True), Reply(body={"id": "../../etc", "object": "batch", "status": "validating"})],
)
async def test_a_create_whose_answer_was_lost_is_found_not_made_twice(server, backend, lost):
    server.fail_next(lost, path="POST /batches", after=True)
    batch_id = await submitted(backend, server, {"a": ask("x")})
    assert list(server.batches) == [batch_id]
    lists = [r for r in server.batch_requests if r.method == "GET" and r.path.startswith("/v1/batches?")]
    assert len(lists) == 1


async def test_errors_that_retrying_cannot_fix(server, backend, fast_backoff):
    server.fail_next(Reply.error(400, "Invalid 'purpose'", type="invalid_request_error"), path="/files")
    with pytest.raises(ModelError, match="refused it \\(HTTP 400\\): Invalid 'purpose'") as info:
        await backend.submit_batch(batch({"a": ask("x")}))
    assert type(info.value) is ModelError and info.value.kind == "rejected" and not fast_backoff
    with pytest.raises(ModelAccessError, match="404") as info:
        await backend.batch_status("batch_unknown")
    assert info.value.kind == "not_found" and "batch_unknown" in str(info.value)
    server.fail_next(Reply.error(403, "Batch API not enabled for this organization"), path="/batches")
    with pytest.raises(ModelAccessError, match="not enabled") as info:
        await backend.batch_status("batch_x")
    assert info.value.status == 403
    server.fail_next(*[Reply.error(503)] * 3, path="/batches")
    with pytest.raises(ModelError, match="after 3 attempts: HTTP 503") as info:
        await backend.batch_status("batch_x")
    assert info.value.kind == "status"
    with pytest.raises(ValueError, match="not a batch id"):
        await backend.batch_status("../files/file-1/content")


async def test_a_bad_key_is_an_access_error_that_never_shows_the_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    with BatchServer(answer, api_key="the-right-key") as srv:
        backend = OpenAIBackend(settings_for(srv, api_key_env=KEY_ENV))
        with pytest.raises(ModelAccessError, match="authentication failed") as info:
            await backend.submit_batch(batch({"a": ask("x")}))
        assert SECRET not in str(info.value) and KEY_ENV in str(info.value)
        assert [r.path for r in srv.requests] == ["/v1/files"]
        srv.api_key = SECRET
        batch_id = await backend.submit_batch(batch({"a": ask("leak")}))
        assert all(r.headers["authorization"] == f"Bearer {SECRET}" for r in srv.requests[1:])
        srv.run_to_end()
        item = (await backend.batch_results(batch_id))["a"]
        assert isinstance(item, BatchItemError) and SECRET not in item.message and "***" in item.message
        srv.fail_next(Reply.error(401, f"no such key {SECRET}"), path="/batches")
        with pytest.raises(ModelAccessError) as info:
            await backend.cancel_batch(batch_id)
        assert SECRET not in str(info.value) and "no such key ***" in str(info.value)
        uploads = [f.content for f in srv.files.values() if f.purpose == "batch"]
        assert len(uploads) == 1 and SECRET.encode() not in uploads[0]
        await backend.aclose()


# -- whether an endpoint offers batches -----------------------------------------------------------


async def test_batches_are_refused_where_the_config_does_not_offer_them(server, monkeypatch):
    backend = OpenAIBackend(settings_for(server, batch=None))
    assert not backend.batch_enabled()
    with pytest.raises(ConfigError, match="batch: true"):
        await backend.submit_batch(batch({"a": ask("x")}))
    with pytest.raises(ConfigError, match="does not offer a batch API"):
        await backend.batch_status("batch_1")
    assert server.request_count == 0
    monkeypatch.setenv(KEY_ENV, SECRET)
    hosted = {"key": "gpt", "backend": "openai", "model_name": "gpt-4.1", "api_key_env": KEY_ENV}
    assert OpenAIBackend(ModelSettings(**hosted, base_urls=["https://api.openai.com/v1"])).batch_enabled()
    assert not OpenAIBackend(
        ModelSettings(**hosted, base_urls=["https://api.openai.com/v1"], batch=False)
    ).batch_enabled()
    assert not OpenAIBackend(ModelSettings(**hosted, base_urls=["https://api.deepseek.com/v1"])).batch_enabled()
    entry = {"model_name": "m", "base_url": server.base_url, "batch": True, "temperature": 0}
    settings = settings_from_config("m", entry, "models.yaml")
    assert settings.batch is True and settings.params == {"temperature": 0}
    with pytest.raises(ConfigError, match="m.batch"):
        settings_from_config("m", {**entry, "batch": "sometimes"}, "models.yaml")


async def test_submit_refuses_what_no_batch_can_hold(backend, server):
    with pytest.raises(ValueError, match="at least one"):
        await backend.submit_batch([])
    with pytest.raises(ValueError, match="twice"):
        await backend.submit_batch(batch({"a": ask("x")}) + batch({"a": ask("y")}))
    backend.max_batch_requests = 2
    with pytest.raises(ValueError, match="3 requests"):
        await backend.submit_batch(batch({k: ask(k) for k in "abc"}))
    assert server.request_count == 0


# -- hostile result files ---------------------------------------------------------------------------


async def test_hostile_result_lines_are_each_one_requests_error(server, backend):
    requests = {f"r{i}": ask(f"q{i}") for i in range(12)}
    batch_id = await submitted(backend, server, requests)
    server.run_to_end()
    output_id = server.batches[batch_id].output_file_id
    lines = {line["custom_id"]: line for line in server.file_lines(output_id)}

    def body_of(key: str, **changes) -> bytes:
        line = json.loads(json.dumps(lines[key]))
        for path, value in changes.items():
            target = line
            *head, last = path.split(".")
            for part in head:
                target = target[part]
            target[last] = value
        return json.dumps(line).encode()

    hostile = [
        json.dumps(lines["r0"]).encode(),  # untouched
        body_of("r1", **{"response.body.choices": []}),
        body_of("r2", **{"response.body": "<html>oops</html>"}),
        body_of("r3", **{"response.status_code": "200"}),
        body_of("r4", **{"response.body.choices": [{"index": 0, "message": {"content": "x"}, "finish_reason": 7}]}),
        b"[" * 100_000 + b"]" * 100_000,  # too deep for the JSON decoder
        b"\xff\xfe not utf-8",
        body_of("r6", custom_id="r6\ud800"),  # a lone-surrogate escape: no request of ours
        json.dumps(lines["r7"]).encode(),
        json.dumps(lines["r7"]).encode(),  # twice
        body_of("r8", **{"response.body.choices": [{"index": 0, "message": {"content": "a \ud800 b\x1b[2J"}}]}),
        body_of("r9", error="something broke", response=None),
        body_of("r10", **{"response": None}),
        json.dumps(line("stranger")).encode(),  # not a request of this batch
        json.dumps(lines["r11"]).encode()[:40],  # truncated
    ]
    server.tamper(output_id, lambda _: b"\n".join(hostile) + b"\n")
    results = await backend.batch_results(batch_id)

    assert list(results) == list(requests)
    assert results["r0"].text == "echo: q0"
    assert results["r8"].text == "a \ufffd b\x1b[2J" and results["r8"].flags == ["invalid_text_repaired"]
    # a number as finish_reason is dropped, as online
    assert (results["r4"].text, results["r4"].finish_reason) == ("x", None)
    kinds = {k: v.kind for k, v in results.items() if isinstance(v, BatchItemError)}
    assert kinds == {
        "r1": "malformed",
        "r2": "malformed",
        "r3": "malformed",
        "r5": "missing",
        "r6": "missing",
        "r7": "duplicate",
        "r9": "error",
        "r10": "malformed",
        "r11": "missing",
    }
    assert all(results[k].retryable for k in kinds)
    assert "3 lines could not be read" in results["r5"].message
    assert results["r9"].message == "something broke"


async def test_an_unreadable_input_file_is_one_error_not_a_crash(server, backend):
    batch_id = await submitted(backend, server, {"a": ask("x")})
    server.run_to_end()
    server.tamper(server.batches[batch_id].input_file_id, lambda _: b"\x00garbage\n")
    with pytest.raises(ModelError, match="holds no readable request") as info:
        await backend.batch_results(batch_id)
    assert info.value.kind == "malformed"
