"""`specalign serve` end to end: the official `openai` SDK against the gateway on 127.0.0.1, with a
scripted upstream (tests/helpers/scripted_server.py) standing in for the model and the judge."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from gateway_proc import running_gateway, serve_command
from scripted_server import Reply, ScriptedServer, count_tokens
from small_world import SMALL, write_small_data
from specbench_world import generation_reply, is_judge, world

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

TOKEN = "test-token-0123456789abcdef"
MODEL = "scripted-model"


def upstream_spec(server: ScriptedServer) -> str:
    return f"openai:{MODEL}@{server.base_url}"


def client(gw, api_key: str = "unused", **kw) -> openai.OpenAI:  # noqa: ANN001
    return openai.OpenAI(base_url=gw.base_url, api_key=api_key, max_retries=0, **kw)


def ask(c: openai.OpenAI, text: str, **kw):  # noqa: ANN201
    return c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}], **kw)


def metrics_of(gw, headers: dict | None = None) -> dict[str, float]:  # noqa: ANN001
    """Samples of /metrics as {'name{labels}': value}, after checking every line is well formed."""
    text = httpx.get(f"{gw.url}/metrics", headers=headers or {}).text
    return parse_prometheus(text)


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})? (\S+)$')


def parse_prometheus(text: str) -> dict[str, float]:
    out, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("# HELP ") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"malformed metrics line: {line!r}"
        base = re.sub(r"_(bucket|sum|count)$", "", m.group(1))
        assert m.group(1) in typed or base in typed, f"sample before its # TYPE: {line!r}"
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


@pytest.fixture
def upstream():
    with ScriptedServer(world) as server:
        yield server


# -- answers ------------------------------------------------------------------------------------


def test_answer_content_usage_and_conversation(upstream):
    with running_gateway("-s", "child", "--method", "vanilla", "-m", upstream_spec(upstream)) as gw:
        c = client(gw)
        assert [m.id for m in c.models.list().data] == [MODEL]
        assert c.models.retrieve(MODEL).owned_by == "specalign"
        with pytest.raises(openai.NotFoundError):
            c.models.retrieve("gpt-4o")
        r = c.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "system", "content": "You are Storybot for ACME."},
                {"role": "user", "content": "Tell me about owls"},
                {"role": "assistant", "content": "Owls are birds."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Write a story "},
                        {"type": "text", "text": "about a brave owl"},
                    ],
                },
            ],
        )
        sent = upstream.chat_requests[-1].json
        assert r.choices[0].message.content == generation_reply(sent) == "ANSWER[Write a story about a brave]"
        assert r.choices[0].finish_reason == "stop"
        roles = [m["role"] for m in sent["messages"]]
        assert roles == ["system", "user", "assistant", "user"]
        assert sent["messages"][0]["content"] == "You are Storybot for ACME."  # the caller's system prompt wins
        assert sent["messages"][2]["content"] == "Owls are birds."
        assert (
            "S1. " in sent["messages"][3]["content"]
            and "Children's Storytelling Companion" in sent["messages"][3]["content"]
        )
        prompt = sum(count_tokens(m["content"]) for m in sent["messages"])
        assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (
            prompt,
            count_tokens(r.choices[0].message.content),
        )
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
        assert r.model_extra["specalign"]["method"] == "vanilla" and r.model_extra["specalign"]["upstream_calls"] == 1
        assert "reasoning_content" not in (r.choices[0].message.model_extra or {})
        assert gw.stop() == 0
    assert "Shutting down" in gw.output


def test_streaming_chunks_match_the_answer(upstream):
    long_question = "Write a story about " + "a very long river " * 30
    with running_gateway("-s", "child", "--method", "vanilla", "-m", upstream_spec(upstream)) as gw:
        c = client(gw)
        whole = ask(c, long_question)
        upstream.responder = lambda body: Reply(text=world(body) + " " + "word " * 60)
        whole = ask(c, long_question)
        chunks = list(ask(c, long_question, stream=True, stream_options={"include_usage": True}))
    text_chunks = [ch for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert len(text_chunks) > 3, "a long answer comes in several chunks"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == whole.choices[0].message.content
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finish == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert len({ch.id for ch in chunks}) == 1


def test_thought_only_when_asked(upstream):
    upstream.responder = lambda body: Reply(text="Here is a gentle story.", reasoning_content="private plan: S1 first")
    with running_gateway("-s", "child", "--method", "vanilla", "-m", upstream_spec(upstream)) as gw:
        c = client(gw)
        plain = ask(c, "a story")
        asked = ask(c, "a story", extra_body={"specalign": {"include_thought": True}})
        streamed = list(ask(c, "a story", stream=True, extra_body={"specalign": {"include_thought": True}}))
        plain_stream = list(ask(c, "a story", stream=True))
    assert plain.choices[0].message.content == "Here is a gentle story."
    assert "private plan" not in plain.model_dump_json()
    assert asked.choices[0].message.model_extra["reasoning_content"] == "private plan: S1 first"
    thought = "".join(
        (ch.choices[0].delta.model_extra or {}).get("reasoning_content", "") for ch in streamed if ch.choices
    )
    assert thought == "private plan: S1 first"
    assert not any("private plan" in ch.model_dump_json() for ch in plain_stream)


def test_method_and_scenario_overrides_only_where_allowed(upstream):
    with running_gateway("-s", "child,code", "--method", "vanilla,raw", "-m", upstream_spec(upstream)) as gw:
        c = client(gw)
        default = ask(c, "hello")
        assert default.model_extra["specalign"] == {
            **default.model_extra["specalign"],
            "method": "vanilla",
            "scenario": "child",
        }
        raw = ask(c, "hello", extra_body={"specalign": {"method": "raw"}})
        assert raw.model_extra["specalign"]["method"] == "raw"
        assert upstream.chat_requests[-1].json["messages"][-1]["content"] == "hello"  # raw: no specs
        code = ask(c, "hello", extra_body={"specalign": {"scenario": "code"}})
        assert code.model_extra["specalign"]["scenario"] == "code"
        assert "Children's Storytelling" not in upstream.chat_requests[-1].json["messages"][-1]["content"]
        n = upstream.chat_count
        with pytest.raises(openai.BadRequestError) as e:
            ask(c, "hello", extra_body={"specalign": {"method": "align3"}})
        assert e.value.code == "method_not_allowed" and "vanilla, raw" in e.value.message
        with pytest.raises(openai.BadRequestError) as e:
            ask(c, "hello", extra_body={"specalign": {"scenario": "health"}})
        assert e.value.code == "scenario_not_allowed"
        with pytest.raises(openai.BadRequestError) as e:
            ask(c, "hello", extra_body={"specalign": {"temperature_boost": 1}})
        assert e.value.body["param"] == "specalign.temperature_boost"
        assert upstream.chat_count == n, "refused requests never reach the upstream"


def test_sampling_parameters_reach_the_upstream(upstream):
    with running_gateway("-s", "child", "--method", "vanilla", "-m", upstream_spec(upstream)) as gw:
        ask(client(gw), "hello", temperature=0.2, top_p=0.9, seed=7, max_tokens=3, stop=["END"])
        sent = upstream.chat_requests[-1].json
    assert (sent["temperature"], sent["top_p"], sent["seed"], sent["max_tokens"], sent["stop"]) == (
        0.2,
        0.9,
        7,
        3,
        ["END"],
    )


# -- auth and limits -----------------------------------------------------------------------------


def test_bearer_token_required_when_set(upstream):
    env = {"SPECALIGN_SERVE_TOKEN": TOKEN}
    with running_gateway("-s", "child", "--method", "vanilla", "-m", upstream_spec(upstream), env=env) as gw:
        with pytest.raises(openai.AuthenticationError) as e:
            ask(client(gw, api_key="wrong-token-wrong-token"), "hi")
        assert e.value.code == "invalid_api_key"
        r = httpx.post(
            f"{gw.base_url}/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
        )
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert "no bearer token" in r.json()["error"]["message"]
        for path in ("/metrics", "/status", "/v1/models"):
            assert httpx.get(gw.url + path).status_code == 401, path
        assert httpx.get(gw.url + "/health").json()["status"] == "ok"
        assert ask(client(gw, api_key=TOKEN), "hi").choices[0].message.content.startswith("ANSWER[")
        m = metrics_of(gw, {"Authorization": f"Bearer {TOKEN}"})
        assert m['specalign_requests_rejected_total{reason="auth"}'] >= 4
        assert upstream.chat_count == 1
    assert TOKEN not in gw.output


def test_binding_beyond_loopback_needs_a_token(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k != "SPECALIGN_SERVE_TOKEN"}
    r = subprocess.run(
        serve_command("-s", "child", "--method", "vanilla", "--host", "0.0.0.0"),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "SPECALIGN_SERVE_TOKEN" in r.stderr and "Traceback" not in r.stderr


def test_malformed_token_is_one_line():
    env = {**__import__("os").environ, "SPECALIGN_SERVE_TOKEN": "a-long-enough-token\nsecond-line"}
    r = subprocess.run(
        serve_command("-s", "child", "--method", "vanilla"), capture_output=True, text=True, env=env, timeout=60
    )
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "a line break" in r.stderr and "second-line" not in r.stderr


def test_binding_beyond_loopback_with_a_token(upstream):
    env = {"SPECALIGN_SERVE_TOKEN": TOKEN}
    with running_gateway(
        "-s", "child", "--method", "vanilla", "-m", upstream_spec(upstream), "--host", "0.0.0.0", env=env
    ) as gw:
        port = gw.url.rsplit(":", 1)[1]
        assert gw.url == f"http://0.0.0.0:{port}"
        local = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=TOKEN, max_retries=0)
        assert ask(local, "hello").choices[0].message.content.startswith("ANSWER[")
        with pytest.raises(openai.AuthenticationError):
            ask(openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x" * 20, max_retries=0), "hello")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["-s", "nosuch"], "unknown scenario 'nosuch'"),
        (["-s", "child", "--method", "nosuch"], "unknown method 'nosuch'"),
        (["-s", "child", "--method", "vanilla", "-p", "align3.stages=[]"], "'align3' is not one of the methods"),
        (["-s", "child", "--max-concurrency", "0"], "--max-concurrency"),
    ],
)
def test_bad_configuration_is_one_line(args, needle):
    r = subprocess.run(serve_command(*args), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0


def test_taken_port_is_one_line(upstream):
    with running_gateway("-s", "child", "--method", "vanilla", "-m", upstream_spec(upstream)) as gw:
        port = gw.url.rsplit(":", 1)[1]
        cmd = [a if a != "0" else port for a in serve_command("-s", "child", "--method", "vanilla")]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in r.stderr


def test_request_size_and_max_tokens_limits(upstream):
    with running_gateway(
        "-s",
        "child",
        "--method",
        "vanilla",
        "-m",
        upstream_spec(upstream),
        "--max-request-bytes",
        "4096",
        "--max-tokens-limit",
        "100",
    ) as gw:
        c = client(gw)
        with pytest.raises(openai.BadRequestError) as e:
            ask(c, "hi", max_tokens=101)
        assert e.value.body["param"] == "max_tokens" and "at most 100" in e.value.message
        assert ask(c, "hi", max_tokens=100).choices[0].message.content
        with pytest.raises(openai.APIStatusError) as e:
            ask(c, "x" * 5000)
        assert e.value.status_code == 413 and e.value.code == "request_too_large"
        for body, param in [
            (
                {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
                "tools",
            ),
            ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
            ({"model": MODEL, "messages": [{"role": "assistant", "content": "x"}]}, "messages"),
            ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "frobnicate": 1}, "frobnicate"),
            (
                {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
                "messages[0].content[0]",
            ),
        ]:
            r = httpx.post(f"{gw.base_url}/chat/completions", json=body)
            assert r.status_code == 400 and r.json()["error"]["param"] == param, (body, r.text)
        r = httpx.post(
            f"{gw.base_url}/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
        with pytest.raises(openai.NotFoundError):
            c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
        assert upstream.chat_count == 1


def test_concurrency_limit_gives_429():
    with (
        ScriptedServer(world, latency=1.5) as slow,
        running_gateway(
            "-s", "child", "--method", "vanilla", "-m", upstream_spec(slow), "--max-concurrency", "2"
        ) as gw,
    ):
        c = client(gw, timeout=30)

        def one(i: int):  # noqa: ANN202
            try:
                return ask(c, f"story {i}").choices[0].message.content
            except openai.RateLimitError as e:
                return e

        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(one, range(6)))
        ok = [r for r in results if isinstance(r, str)]
        busy = [r for r in results if isinstance(r, openai.RateLimitError)]
        assert len(ok) == 2 and len(busy) == 4
        assert busy[0].code == "gateway_busy" and busy[0].response.headers["retry-after"] == "1"
        assert slow.max_in_flight == 2
        assert ask(c, "after the rush").choices[0].message.content
        assert metrics_of(gw)['specalign_requests_rejected_total{reason="busy"}'] == 4


def test_upstream_errors_map_to_status_codes(tmp_path):
    config = tmp_path / "models.yaml"
    with ScriptedServer(world) as up:
        config.write_text(f"up:\n  model_name: {MODEL}\n  base_url: {up.base_url}\n  max_retries: 0\n  timeout: 0.5\n")
        with running_gateway(
            "-s",
            "child",
            "--method",
            "vanilla",
            "-m",
            "up",
            "--models-config",
            str(config),
            "--served-model-name",
            MODEL,
        ) as gw:
            c = client(gw)
            cases = [
                (Reply.error(500, "boom"), openai.APIStatusError, 502, "upstream_unavailable"),
                (
                    Reply.error(400, "context length exceeded", type="invalid_request_error"),
                    openai.BadRequestError,
                    400,
                    "upstream_rejected",
                ),
                (
                    Reply.error(429, "slow down", headers={"Retry-After": "0"}),
                    openai.RateLimitError,
                    429,
                    "upstream_rate_limited",
                ),
                (Reply.error(401, "bad key"), openai.APIStatusError, 502, "upstream_auth"),
                (Reply("late", delay=2.0), openai.APIStatusError, 504, "upstream_timeout"),
                (Reply(body=b'{"choices": [', status=200), openai.APIStatusError, 502, "upstream_unavailable"),
            ]
            for reply, error, status, code in cases:
                up.script(reply)
                with pytest.raises(error) as e:
                    ask(c, "hi")
                assert (e.value.status_code, e.value.code) == (status, code), e.value.body
                assert e.value.body["type"] in ("upstream_error", "invalid_request_error")
            assert "context length exceeded" in str(ask_error(c, up, Reply.error(400, "context length exceeded"))), (
                "the upstream's message is passed on"
            )
            assert ask(c, "fine again").choices[0].message.content.startswith("ANSWER[")
            m = metrics_of(gw)
    assert m['specalign_upstream_errors_total{kind="timeout"}'] == 1
    assert m['specalign_upstream_errors_total{kind="auth"}'] == 1
    assert m['specalign_requests_total{code="502",method="vanilla",scenario="child"}'] == 3


def ask_error(c, up, reply) -> Exception:  # noqa: ANN001
    up.script(reply)
    try:
        ask(c, "hi")
    except openai.APIStatusError as e:
        return e
    raise AssertionError("no error")


def test_metrics_count_requests_latency_and_tokens(upstream):
    with running_gateway("-s", "child", "--method", "vanilla,raw", "-m", upstream_spec(upstream)) as gw:
        c = client(gw)
        answers = [ask(c, f"story {i}") for i in range(3)] + [
            ask(c, "raw one", extra_body={"specalign": {"method": "raw"}})
        ]
        with pytest.raises(openai.BadRequestError):
            ask(c, "hi", max_tokens=10**6)
        m = metrics_of(gw)
    assert m['specalign_requests_total{code="200",method="vanilla",scenario="child"}'] == 3
    assert m['specalign_requests_total{code="200",method="raw",scenario="child"}'] == 1
    assert m['specalign_requests_total{code="400",method="",scenario=""}'] == 1
    assert m['specalign_request_duration_seconds_count{method="vanilla"}'] == 3
    assert m['specalign_request_duration_seconds_bucket{le="+Inf",method="vanilla"}'] == 3  # labels sorted
    buckets = [
        v
        for k, v in m.items()
        if k.startswith("specalign_request_duration_seconds_bucket{") and 'method="vanilla"' in k
    ]
    assert buckets == sorted(buckets), "histogram buckets are cumulative"
    vanilla = answers[:3]
    assert m['specalign_tokens_total{method="vanilla",type="completion"}'] == sum(
        a.usage.completion_tokens for a in vanilla
    )
    assert m['specalign_tokens_total{method="vanilla",type="prompt"}'] == sum(a.usage.prompt_tokens for a in vanilla)
    assert m['specalign_upstream_calls_total{method="raw"}'] == 1
    assert m["specalign_requests_in_flight"] == 0


def test_graceful_shutdown_finishes_in_flight_requests():
    with (
        ScriptedServer(world, latency=2.0) as slow,
        running_gateway("-s", "child", "--method", "vanilla", "-m", upstream_spec(slow)) as gw,
    ):
        c = client(gw, timeout=30)
        result: list = []
        t = threading.Thread(target=lambda: result.append(ask(c, "a slow story")))
        t.start()
        deadline = time.monotonic() + 10
        while slow.chat_count == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        t0 = time.monotonic()
        code = gw.stop()
        t.join(10)
        assert code == 0
        assert result and result[0].choices[0].message.content == "ANSWER[a slow story]"
        assert time.monotonic() - t0 >= 1.0, "the gateway waited for the answer"
        with pytest.raises(httpx.ConnectError):
            httpx.get(gw.url + "/health")


# -- live monitoring ------------------------------------------------------------------------------


def wait_for(predicate, timeout: float = 30.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_monitoring_judges_in_background_and_writes_a_run(tmp_path):
    out = tmp_path / "live"
    judge_started = threading.Event()

    def slow_judge(body):  # noqa: ANN001, ANN202
        judge_started.set()
        return Reply(world(body), delay=1.0)

    with (
        ScriptedServer(world) as up,
        ScriptedServer(slow_judge) as judge,
        running_gateway(
            "-s",
            "child,code",
            "--method",
            "vanilla",
            "-m",
            upstream_spec(up),
            "--monitor",
            "1",
            "--judge",
            f"openai:{MODEL}@{judge.base_url}",
            "--monitor-out",
            str(out),
            "--monitor-window",
            "3",
            "--monitor-workers",
            "1",
        ) as gw,
    ):
        c = client(gw)
        t0 = time.monotonic()
        questions = ["UNSAFE story one", "calm story two", "calm story three", "UNSAFE story four"]
        answers = [ask(c, q) for q in questions]
        assert time.monotonic() - t0 < 2.0, "answers never wait for the judge"
        assert all(a.model_extra["specalign"]["monitored"] for a in answers)
        ask(c, "UNSAFE code question", extra_body={"specalign": {"scenario": "code"}})
        wait_for(
            lambda: (
                metrics_of(gw).get(
                    'specalign_monitor_samples_total{method="vanilla",outcome="judged",scenario="child"}'
                )
                == 4
            )
        )
        wait_for(
            lambda: (
                metrics_of(gw).get('specalign_monitor_samples_total{method="vanilla",outcome="judged",scenario="code"}')
                == 1
            )
        )
        m = metrics_of(gw)
        # window of 3: the last three child answers, one of them unsafe
        assert m[
            'specalign_spec_violation_rate{kind="safety",method="vanilla",scenario="child",spec="S1"}'
        ] == pytest.approx(1 / 3)
        assert m['specalign_spec_violation_rate{kind="safety",method="vanilla",scenario="child",spec="S2"}'] == 0
        assert m['specalign_spec_violation_rate{kind="safety",method="vanilla",scenario="code",spec="S1"}'] == 1
        assert m['specalign_spec_verdicts_total{method="vanilla",scenario="child",spec="S1",verdict="NO"}'] == 2
        assert m['specalign_monitor_window_scored{method="vanilla",scenario="child"}'] == 3
        page = httpx.get(gw.url + "/status")
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
        assert "33.3%" in page.text and "UNSAFE story four" in page.text
        assert judge_started.is_set()
        assert gw.stop() == 0
    rd = out / "vanilla"
    gens = [json.loads(x) for x in (rd / "generations.jsonl").read_text().splitlines()]
    judged = [json.loads(x) for x in (rd / "judgments.jsonl").read_text().splitlines()]
    assert len(gens) == len(judged) == 5
    assert {g["label"] for g in gens} == {"unlabeled"} and all(j["status"] == "scored" for j in judged)
    assert sorted(g["prompt_sent"] for g in gens if g["scenario"] == "child") == sorted(questions)
    manifest = json.loads((rd / "manifest.json").read_text())
    assert manifest["sessions"][-1]["samples_done"] == 5
    score = subprocess.run(
        [sys.executable, "-m", "specalign.cli", "score", str(rd), "--json"], capture_output=True, text=True, timeout=60
    )
    assert score.returncode == 0, score.stderr
    scores = json.loads(score.stdout)
    assert scores["counts"]["scored"] == 5
    assert scores["scenarios"]["child"]["full"]["safety"] == pytest.approx(0.5)
    report = tmp_path / "live.html"
    r = subprocess.run(
        [sys.executable, "-m", "specalign.cli", "report", str(rd), "-o", str(report)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    html = report.read_text()
    assert "UNSAFE story four" in html and "Never include graphic violence" in html  # samples and spec texts


def test_monitor_restart_appends_and_refuses_another_configuration(tmp_path):
    out = tmp_path / "live"
    with ScriptedServer(world) as up:
        args = [
            "-s",
            "child",
            "--method",
            "vanilla",
            "-m",
            upstream_spec(up),
            "--monitor",
            "1",
            "--judge",
            upstream_spec(up),
            "--monitor-out",
            str(out),
        ]
        for round_ in range(2):
            with running_gateway(*args) as gw:
                ask(client(gw), f"story in round {round_}")
                wait_for(
                    lambda: (
                        metrics_of(gw).get(
                            'specalign_monitor_samples_total{method="vanilla",outcome="judged",scenario="child"}'
                        )
                        == 1
                    )
                )
                if round_ == 0:  # a second gateway on the same run directories is refused while this one runs
                    twin = subprocess.run(serve_command(*args), capture_output=True, text=True, timeout=60)
                    assert twin.returncode == 2 and "in use by another specalign process" in twin.stderr, twin.stderr
        assert len((out / "vanilla" / "judgments.jsonl").read_text().splitlines()) == 2
        assert len(json.loads((out / "vanilla" / "manifest.json").read_text())["sessions"]) == 2
        other = subprocess.run(
            serve_command(
                "-s",
                "code",
                "--method",
                "vanilla",
                "-m",
                upstream_spec(up),
                "--monitor",
                "1",
                "--judge",
                upstream_spec(up),
                "--monitor-out",
                str(out),
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert other.returncode == 2 and "another configuration" in other.stderr


def test_monitor_queue_full_drops_and_shutdown_records_the_unjudged(tmp_path):
    out = tmp_path / "live"
    release, judging = threading.Event(), threading.Event()

    def stuck_judge(body):  # noqa: ANN001, ANN202
        judging.set()
        release.wait(30)
        return world(body)

    with ScriptedServer(world) as up, ScriptedServer(stuck_judge) as judge:
        try:
            with running_gateway(
                "-s",
                "child",
                "--method",
                "vanilla",
                "-m",
                upstream_spec(up),
                "--monitor",
                "1",
                "--judge",
                f"openai:{MODEL}@{judge.base_url}",
                "--monitor-out",
                str(out),
                "--monitor-queue",
                "2",
                "--monitor-workers",
                "1",
                "--monitor-drain",
                "0.5",
            ) as gw:
                c = client(gw)
                flags = [ask(c, f"story {i}").model_extra["specalign"]["monitored"] for i in range(6)]
                wait_for(judging.is_set)
                m = metrics_of(gw)
                assert sum(flags) == 3, "one with the judge, two in the queue, the rest dropped"
                assert m['specalign_monitor_samples_total{method="vanilla",outcome="dropped",scenario="child"}'] == 3
                assert m["specalign_monitor_queue_depth"] == 2
                gw.proc.send_signal(2)  # Ctrl-C: a graceful stop as well
                assert gw.proc.wait(30) == 0
        finally:
            release.set()
    judged = [json.loads(x) for x in (out / "vanilla" / "judgments.jsonl").read_text().splitlines()]
    assert len(judged) == 3, "every sampled answer ends scored or unscored with its reason"
    assert all(
        j["status"] == "unscored" and j["unscored_reason"].startswith("not judged: the gateway stopped") for j in judged
    )
    assert "interrupted" not in gw.output


def test_status_page_escapes_live_text_in_chromium(tmp_path):
    from browser import chromium, console_errors, find_browser

    if find_browser() is None:
        if __import__("os").environ.get("CI"):
            raise RuntimeError("CI needs chromium and chromium-driver")
        pytest.skip("chromium and chromium-driver are not installed")
    payload = '<img src=x onerror="window.__pwned=1">UNSAFE <script>window.__pwned=2</script></pre><b>bold</b>'
    with (
        ScriptedServer(lambda body: world(body) if is_judge(body) else payload) as up,
        running_gateway(
            "-s",
            "child",
            "--method",
            "vanilla",
            "-m",
            upstream_spec(up),
            "--monitor",
            "1",
            "--judge",
            upstream_spec(up),
            "--monitor-out",
            str(tmp_path / "live"),
        ) as gw,
    ):
        ask(client(gw), "<svg onload=alert(1)> story")
        wait_for(
            lambda: (
                metrics_of(gw).get(
                    'specalign_monitor_samples_total{method="vanilla",outcome="judged",scenario="child"}'
                )
                == 1
            )
        )
        with chromium() as driver:
            driver.get(gw.url + "/status")
            from selenium.webdriver.common.by import By

            texts = [c.get_attribute("textContent") for c in driver.find_elements(By.CSS_SELECTOR, "pre")]
            assert payload in texts and "<svg onload=alert(1)> story" in texts
            for tag in ("img", "script", "svg", "b"):
                assert driver.find_elements(By.TAG_NAME, tag) == [], tag
            assert driver.execute_script("return window.__pwned === undefined") is True
            assert console_errors(driver) == []
            assert "100.0%" in driver.find_element(By.TAG_NAME, "body").text


@pytest.mark.slow
def test_embedded_model_upstream(tmp_path):
    """The embedded model in the gateway's process: plain, streamed token by token (llama.cpp streams natively),
    and align3's stages. A short scenario (tests/helpers/small_world.py) keeps the prompts short."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'specalign[local]')")
    folder = write_small_data(tmp_path) / SMALL.key
    with running_gateway("-s", str(folder), "--method", "vanilla,align3") as gw:
        c = client(gw, timeout=300)
        assert [m.id for m in c.models.list().data] == ["SmolLM2-135M-Instruct"]
        r = c.chat.completions.create(
            model="SmolLM2-135M-Instruct",
            max_tokens=24,
            temperature=0,
            seed=1,
            messages=[{"role": "user", "content": "Tell me a story about a kind dragon."}],
        )
        assert r.choices[0].message.content.strip()
        assert r.usage.prompt_tokens > 50 and 0 < r.usage.completion_tokens <= 24
        assert r.choices[0].finish_reason in ("stop", "length")
        plain = list(
            c.chat.completions.create(
                model="SmolLM2-135M-Instruct",
                max_tokens=24,
                stream=True,
                stream_options={"include_usage": True},
                messages=[{"role": "user", "content": "Tell me about owls."}],
            )
        )
        pieces = [ch.choices[0].delta.content for ch in plain if ch.choices and ch.choices[0].delta.content]
        assert len(pieces) >= 6, "the answer came in one piece"  # about a piece per token
        assert plain[-1].usage.completion_tokens >= len(pieces) - 1
        chunks = list(
            c.chat.completions.create(
                model="SmolLM2-135M-Instruct",
                max_tokens=16,
                temperature=0,
                seed=1,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"specalign": {"method": "align3", "include_thought": True}},
                messages=[{"role": "user", "content": "Tell me a story about a kind dragon."}],
            )
        )
        thought = "".join(
            (ch.choices[0].delta.model_extra or {}).get("reasoning_content", "") for ch in chunks if ch.choices
        )
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert thought.strip() and text.strip()
        assert chunks[-1].usage.completion_tokens > 16, "align3 spends tokens on several stages"
        final = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason]
        assert final[0].model_extra["specalign"]["method"] == "align3"
        assert final[0].model_extra["specalign"]["upstream_calls"] >= 2
