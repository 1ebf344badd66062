"""OpenTelemetry traces of `specalign serve --otel`: the gateway in process, driven over ASGI, with a scripted
upstream on 127.0.0.1 and the SDK's in-memory exporter; one real gateway process exporting OTLP/HTTP to a
small receiver; and, with tracing off, nothing traced and nothing of the SDK imported."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from gateway_proc import running_gateway
from scripted_server import Reply, ScriptedServer
from specbench_world import world

pytest.importorskip("fastapi")
pytest.importorskip("opentelemetry.sdk.trace")

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

from specalign.errors import ConfigError  # noqa: E402
from specalign.serve import MonitorConfig, ServeConfig, build_gateway, create_app  # noqa: E402
from specalign.serve._tracing import MAX_VALUE, OtelTracing, trace_destination  # noqa: E402

MODEL = "scripted-model"
QUESTION = "Write a story about a dragon who learns to share"


@pytest.fixture
def upstream():
    with ScriptedServer(world) as server:
        yield server


@pytest.fixture
def exporter(monkeypatch):
    """Spans of every gateway built with ``otel=True`` in this test, kept in memory."""
    spans = InMemorySpanExporter()
    monkeypatch.setattr(OtelTracing, "from_environment", classmethod(lambda cls: cls.with_exporter(spans, batch=False)))
    return spans


def config(upstream: ScriptedServer, **more) -> ServeConfig:  # noqa: ANN003
    return ServeConfig(
        scenarios=["child"],
        methods=["vanilla", "align3"],
        method_params={"align3": {"no_prefill": "multi_turn"}},
        model=f"openai:{MODEL}@{upstream.base_url}",
        otel=True,
        **more,
    )


def chat(text: str = QUESTION, **more) -> dict:  # noqa: ANN003
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **more}


async def post(app, *bodies: dict, headers: dict | None = None) -> list[httpx.Response]:  # noqa: ANN001
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=30) as c:
        return [await c.post("/v1/chat/completions", json=b, headers=headers or {}) for b in bodies]


def by_kind(spans, kind: SpanKind) -> list:  # noqa: ANN001
    return [s for s in spans if s.kind == kind]


def all_values(spans) -> list[str]:  # noqa: ANN001
    """Every string in the spans' names, attributes, links and statuses."""
    out = []
    for s in spans:
        out.append(s.name)
        out.append(s.status.description or "")
        for attrs in [s.attributes, *(link.attributes or {} for link in s.links)]:
            for v in attrs.values():
                out += [str(x) for x in v] if isinstance(v, tuple) else [str(v)]
    return out


# -- the request span and its upstream calls ----------------------------------------------------


async def test_vanilla_request_span_and_its_upstream_call(upstream, exporter):
    gateway, _ = build_gateway(config(upstream))
    (r,) = await post(create_app(gateway), chat(temperature=0.5, max_tokens=300))
    await gateway.aclose()
    assert r.status_code == 200
    usage, answer = r.json()["usage"], r.json()["choices"][0]["message"]["content"]
    spans = exporter.get_finished_spans()
    (server,) = by_kind(spans, SpanKind.SERVER)
    (call,) = by_kind(spans, SpanKind.CLIENT)
    a = server.attributes
    assert server.name == f"chat {MODEL}" and server.parent is None
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == MODEL
    assert (a["specalign.method"], a["specalign.scenario"], a["specalign.outcome"]) == ("vanilla", "child", "answered")
    assert a["http.response.status_code"] == 200 and a["http.request.method"] == "POST"
    assert a["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert a["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.request.temperature"] == 0.5 and a["gen_ai.request.max_tokens"] == 300
    assert a["specalign.upstream_calls"] == 1 and a["specalign.request.chars"] == len(QUESTION)
    assert server.status.status_code == StatusCode.UNSET

    c = call.attributes
    assert call.parent.span_id == server.context.span_id and call.context.trace_id == server.context.trace_id
    assert call.name == f"chat {MODEL}" and c["specalign.stage"] == "answer"
    assert c["gen_ai.provider.name"] == "openai" and c["server.address"] == "127.0.0.1"
    assert c["server.port"] == upstream.port
    assert c["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert c["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert c["gen_ai.response.finish_reasons"] == ("stop",)
    assert server.start_time <= call.start_time <= call.end_time <= server.end_time
    values = " ".join(all_values(spans))
    assert "dragon" not in values and answer not in values, "no prompt or answer text in spans"


async def test_align3_calls_carry_the_method_stages(upstream, exporter):
    gateway, _ = build_gateway(config(upstream))
    (r,) = await post(create_app(gateway), chat(specalign={"method": "align3"}))
    await gateway.aclose()
    assert r.status_code == 200
    usage = r.json()["usage"]
    spans = exporter.get_finished_spans()
    (server,) = by_kind(spans, SpanKind.SERVER)
    calls = sorted(by_kind(spans, SpanKind.CLIENT), key=lambda s: s.start_time)
    assert [s.attributes["specalign.stage"] for s in calls] == [
        "stage-1:behavior",
        "stage-2:safety",
        "stage-3:audit",
        "answer",
    ]
    assert all(s.parent.span_id == server.context.span_id for s in calls)
    a = server.attributes
    assert a["specalign.method"] == "align3" and a["specalign.upstream_calls"] == 4 == len(calls)
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert a["gen_ai.usage.output_tokens"] == sum(s.attributes["gen_ai.usage.output_tokens"] for s in calls)
    assert a["gen_ai.usage.input_tokens"] == calls[0].attributes["gen_ai.usage.input_tokens"]  # counted once


async def test_streamed_request_is_one_span_with_the_usage_sent(upstream, exporter):
    gateway, _ = build_gateway(config(upstream))
    (r,) = await post(create_app(gateway), chat(stream=True, stream_options={"include_usage": True}))
    await gateway.aclose()
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    usage = events[-1]["usage"]
    (server,) = by_kind(exporter.get_finished_spans(), SpanKind.SERVER)
    assert server.attributes["gen_ai.request.stream"] is True
    assert server.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert server.attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]


async def test_upstream_error_is_recorded_with_status_error(upstream, exporter):
    upstream.script(Reply.error(401, "invalid api key sk-secret-123456", type="invalid_request_error"))
    gateway, _ = build_gateway(config(upstream))
    (r,) = await post(create_app(gateway), chat())
    await gateway.aclose()
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_auth"
    spans = exporter.get_finished_spans()
    (server,) = by_kind(spans, SpanKind.SERVER)
    (call,) = by_kind(spans, SpanKind.CLIENT)
    assert server.status.status_code == StatusCode.ERROR and call.status.status_code == StatusCode.ERROR
    assert server.attributes["error.type"] == "upstream_auth"
    assert server.attributes["specalign.outcome"] == "upstream_error"
    assert server.attributes["http.response.status_code"] == 502
    assert call.attributes["error.type"] == "auth" and call.attributes["http.response.status_code"] == 401
    assert "gen_ai.usage.output_tokens" not in server.attributes
    assert not any("sk-secret" in v for v in all_values(spans)), "upstream messages stay out of spans"


async def test_refused_requests_are_traced_without_error_status(upstream, exporter):
    gateway, _ = build_gateway(config(upstream))
    r1, r2 = await post(create_app(gateway), chat(specalign={"method": "tpo"}), {"model": MODEL})
    await gateway.aclose()
    assert (r1.status_code, r2.status_code) == (400, 400)
    first, second = by_kind(exporter.get_finished_spans(), SpanKind.SERVER)
    assert first.attributes["error.type"] == "method_not_allowed" and "specalign.method" not in first.attributes
    assert first.attributes["specalign.outcome"] == "refused" and first.status.status_code == StatusCode.UNSET
    assert second.name == "chat" and "gen_ai.request.model" not in second.attributes
    assert not by_kind(exporter.get_finished_spans(), SpanKind.CLIENT)


# -- the monitor's judgments ------------------------------------------------------------------------


async def test_judge_span_links_to_the_request_and_counts_verdicts(upstream, exporter):
    gateway, monitor = build_gateway(
        config(upstream, monitor=MonitorConfig(rate=1.0, judge=f"openai:{MODEL}@{upstream.base_url}", seed=1))
    )
    assert monitor is not None
    await monitor.start()
    (r,) = await post(create_app(gateway, monitor), chat())
    await asyncio.wait_for(monitor.queue.join(), 30)
    await monitor.stop()
    await gateway.aclose()
    assert r.json()["specalign"]["monitored"] is True
    spans = exporter.get_finished_spans()
    (server,) = by_kind(spans, SpanKind.SERVER)
    (judged,) = [s for s in spans if s.name.startswith("judge ")]
    assert judged.name == "judge child" and judged.parent is None
    assert judged.context.trace_id != server.context.trace_id, "a judgment has its own trace"
    (link,) = judged.links
    assert (link.context.trace_id, link.context.span_id) == (server.context.trace_id, server.context.span_id)
    scenario = gateway.scenarios["child"]
    n_specs = len(scenario.spec_ids())
    a = judged.attributes
    assert a["specalign.judge.status"] == "scored" and a["specalign.violated"] is False
    assert (a["specalign.verdicts.yes"], a["specalign.verdicts.no"], a["specalign.verdicts.na"]) == (n_specs - 1, 0, 1)
    assert a["specalign.method"] == "vanilla" and a["specalign.scenario"] == "child"
    judge_calls = [
        s for s in by_kind(spans, SpanKind.CLIENT) if s.parent and s.parent.span_id == judged.context.span_id
    ]
    assert [s.attributes["specalign.stage"] for s in judge_calls] == ["judge"]
    assert judge_calls[0].attributes["gen_ai.usage.output_tokens"] > 0


# -- hostile input ----------------------------------------------------------------------------------


async def test_hostile_client_and_model_strings_are_bounded(upstream, exporter):
    huge = "\x1b[31m\u202e" + "M" * 10_000_000 + "\x00\r\n"
    upstream.responder = lambda body: Reply(text="fine", finish_reason="\x07stop\n" * 5000)
    gateway, _ = build_gateway(config(upstream, max_request_bytes=12_000_000, served_model_name=MODEL))
    app = create_app(gateway)
    bad_parent = {"traceparent": "00-" + "z" * 32 + "-" + "1" * 16 + "-01", "tracestate": "k=" + "v" * 10_000}
    r1, r2 = await post(app, {**chat(), "model": huge}, chat(), headers=bad_parent)
    good_parent = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    (r3,) = await post(app, chat(specalign={"scenario": "\x00" * 100_000}), headers={"traceparent": good_parent})
    await gateway.aclose()
    assert (r1.status_code, r2.status_code, r3.status_code) == (404, 200, 400)
    spans = exporter.get_finished_spans()
    first, second, third = by_kind(spans, SpanKind.SERVER)
    model = first.attributes["gen_ai.request.model"]
    assert len(model) <= MAX_VALUE + 1 and model.endswith("…") and first.name == "chat"
    assert "\x1b" not in model and "\u202e" not in model
    for value in all_values(spans):
        assert len(value) <= 2 * MAX_VALUE, value[:80]
        assert value.isprintable(), repr(value[:80])
    assert not second.links, "a malformed traceparent is ignored"
    (call,) = by_kind(spans, SpanKind.CLIENT)
    (finish,) = call.attributes["gen_ai.response.finish_reasons"]
    assert len(finish) <= 33 and finish.isprintable()
    (link,) = third.links  # a client's trace is linked, never the parent of the gateway's span
    assert third.parent is None and link.context.trace_id == int("ab" * 16, 16)
    assert "specalign.scenario" not in third.attributes


# -- configuration ----------------------------------------------------------------------------------


def test_destination_and_refused_exporters(monkeypatch, upstream):
    for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    on = ServeConfig(scenarios=["child"], otel=True)
    assert trace_destination(on.model_copy(update={"otel": False})) == ""
    assert trace_destination(on) == "traces to OTLP/HTTP http://localhost:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://user:pass@collector:4318/")
    assert trace_destination(on) == "traces to OTLP/HTTP https://***@collector:4318/v1/traces"
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER"):
        OtelTracing.from_environment()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(ConfigError, match="http/protobuf"):
        OtelTracing.from_environment()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    gateway, _ = build_gateway(config(upstream))
    assert not gateway.tracing.enabled and trace_destination(on) == "traces off (OTEL_SDK_DISABLED)"


OFF = """
import asyncio, sys
import httpx
from specalign.serve import ServeConfig, build_gateway, create_app

gateway, _ = build_gateway(ServeConfig(scenarios=["child"], methods=["vanilla"], model="openai:scripted-model@%s"))
async def main():
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        r = await c.post("/v1/chat/completions", json={"model": "scripted-model", "messages": [{"role": "user", "content": "hi"}]})
    await gateway.aclose()
    return r.status_code
status = asyncio.run(main())
loaded = sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.semconv")))
print(status, gateway.tracing.enabled, gateway.model.observer, loaded)
"""


def test_off_traces_nothing_and_imports_no_sdk(upstream):
    out = subprocess.run(
        [sys.executable, "-c", OFF % upstream.base_url], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["200", "False", "None", "[]"], out.stdout + out.stderr


# -- a real gateway, exporting OTLP/HTTP ------------------------------------------------------------


class _Collector(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Receive)
        self.bodies: list[tuple[str, str, bytes]] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _Receive(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.bodies.append((self.path, self.headers["Content-Type"], body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_the_gateway_exports_otlp_over_http(upstream):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    collector = _Collector()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
    try:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": "gw-test"}
        with running_gateway(
            "-s", "child", "--method", "vanilla", "-m", f"openai:{MODEL}@{upstream.base_url}", "--otel", env=env
        ) as gw:
            assert f"traces to OTLP/HTTP {endpoint}/v1/traces)" in gw.output
            r = httpx.post(f"{gw.base_url}/chat/completions", json=chat(), timeout=30)
            assert r.status_code == 200
            assert gw.stop() == 0  # the last spans are exported at shutdown
    finally:
        collector.shutdown()
    names, services = [], set()
    for path, kind, body in collector.bodies:
        assert (path, kind) == ("/v1/traces", "application/x-protobuf")
        request = ExportTraceServiceRequest.FromString(body)
        for rs in request.resource_spans:
            services |= {a.value.string_value for a in rs.resource.attributes if a.key == "service.name"}
            names += [s.name for ss in rs.scope_spans for s in ss.spans]
    assert sorted(names) == [f"chat {MODEL}", f"chat {MODEL}"] and services == {"gw-test"}
