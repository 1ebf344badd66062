"""Optional OpenTelemetry traces of the gateway (``specalign serve --otel``).

One SERVER span per chat request, a CLIENT span per upstream model call (its method stage in
``specalign.stage``), and a span per monitor judgment, linked to the request it judges. Attribute
names follow the OpenTelemetry semantic conventions 1.44 (GenAI and HTTP spans, as shipped in
``opentelemetry-semantic-conventions`` 0.66b2, where ``gen_ai.provider.name`` replaces ``gen_ai.system``).

:class:`Tracing` is the no-op face the gateway always holds; :class:`OtelTracing` does the work and
is the only place that imports OpenTelemetry, when tracing is on. Spans never carry prompts, answers
or secrets: only names chosen by the operator, numbers, sizes, and client or model strings bounded
by :func:`bounded`.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .. import __version__
from .._secrets import redact_url
from ..errors import ConfigError, ModelError
from ..models import ChatRequest, Completion, Model, call_stage, provider_of

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span

    from ..methods import MethodOutput
    from ._config import ServeConfig
    from ._protocol import ChatInput, GatewayError

SCHEMA_URL = "https://opentelemetry.io/schemas/1.44.0"
CHAT_PATH = "/v1/chat/completions"
#: the longest string value a span gets from a client, a model or a server (the SDK's limit is a backstop)
MAX_VALUE = 128
DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"
#: numeric sampling parameters recorded as ``gen_ai.request.*``
REQUEST_PARAMS = {
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "seed": "gen_ai.request.seed",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
}


def bounded(value: object, limit: int = MAX_VALUE) -> str:
    """``value`` as a short printable string: cut to ``limit`` characters, control and format characters
    (and lone surrogates) replaced by U+FFFD."""
    text = value if isinstance(value, str) else str(value)
    cut = len(text) > limit
    text = "".join(c if c.isprintable() else "\ufffd" for c in text[:limit])
    return text + "…" if cut else text


class Tracing:
    """Tracing off: every hook does nothing, and nothing of OpenTelemetry is imported."""

    enabled = False
    #: installed on the gateway's and the judge's models (``Model.observer``)
    observer: Callable[..., Any] | None = None

    def install(self, app: Any) -> None:
        """Trace the chat route of ``app`` (a Starlette/FastAPI app)."""

    def requested(self, inp: ChatInput) -> None:
        """The current request was read: its model, sampling parameters and sizes."""

    def resolved(self, method: str, scenario: str) -> None:
        """The current request got its method and scenario."""

    def answered(self, out: MethodOutput) -> None:
        """The method answered the current request: usage, calls, finish reason."""

    def failed(self, error: GatewayError) -> None:
        """The current request ends with ``error``."""

    def capture(self) -> Any:
        """A handle on the current request's span for a judgment made later (None: not traced)."""
        return None

    def judging(self, request: Any, method: str, scenario: str) -> AbstractContextManager[Any]:
        """The span of one monitor judgment, linked to ``request`` (from :meth:`capture`)."""
        return nullcontext()

    def judged(self, letters: str | None, sar: float | None, call_failed: bool = False) -> None:
        """The current judgment's verdict letters (``YNA``…; None: unscored)."""

    async def shutdown(self) -> None:
        """Export what is left and stop."""


NO_TRACING = Tracing()


def tracing_for(config: ServeConfig) -> Tracing:
    """Tracing as ``config`` and the standard OTEL_* environment variables ask: off unless ``config.otel``."""
    if not config.otel or _sdk_disabled():
        return NO_TRACING
    return OtelTracing.from_environment()


def trace_destination(config: ServeConfig) -> str:
    """Where spans go, for the ready line ("" when tracing is off). Imports nothing."""
    if not config.otel:
        return ""
    if _sdk_disabled():
        return "traces off (OTEL_SDK_DISABLED)"
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "console":
        return "traces to the console"
    return f"traces to OTLP/HTTP {redact_url(otlp_endpoint())}"


def _sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


@dataclass
class _Request:
    span: Span
    model: str = ""
    status: int = 0
    error: str | None = None
    upstream: bool = False


@dataclass
class _Judgment:
    span: Span


_REQUEST: ContextVar[_Request | None] = ContextVar("specalign_trace_request", default=None)
_JUDGMENT: ContextVar[_Judgment | None] = ContextVar("specalign_trace_judgment", default=None)


class OtelTracing(Tracing):
    """Spans through an OpenTelemetry SDK ``TracerProvider`` of the gateway's own (the global one is left alone)."""

    enabled = True

    def __init__(self, provider: TracerProvider):
        from opentelemetry import context as otel_context  # noqa: PLC0415
        from opentelemetry import trace  # noqa: PLC0415
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator  # noqa: PLC0415

        self.provider = provider
        self._tracer = provider.get_tracer("specalign.serve", __version__, schema_url=SCHEMA_URL)
        self._trace = trace
        self._context = otel_context
        self._propagator = TraceContextTextMapPropagator()
        self.observer = self._observe

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def with_exporter(cls, exporter: SpanExporter, *, batch: bool = True) -> OtelTracing:
        """Tracing that hands finished spans to ``exporter`` (in batches, or one by one for tests)."""
        try:
            from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
            from opentelemetry.sdk.trace import SpanLimits, TracerProvider  # noqa: PLC0415
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor  # noqa: PLC0415
        except ImportError:
            raise _missing() from None
        attributes: dict[str, Any] = {"service.version": __version__}
        if not os.environ.get("OTEL_SERVICE_NAME") and "service.name=" not in os.environ.get(
            "OTEL_RESOURCE_ATTRIBUTES", ""
        ):
            attributes["service.name"] = "specalign-gateway"
        provider = TracerProvider(
            resource=Resource.create(attributes),
            span_limits=SpanLimits(max_span_attribute_length=2 * MAX_VALUE, max_attribute_length=2 * MAX_VALUE),
        )
        provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
        return cls(provider)

    @classmethod
    def from_environment(cls) -> OtelTracing:
        """The exporter OTEL_TRACES_EXPORTER names (``otlp``, the default, over HTTP/protobuf; or ``console``)."""
        kinds = [k.strip().lower() for k in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if k.strip()]
        if len(kinds) != 1 or kinds[0] not in ("otlp", "console"):
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER={bounded(os.environ.get('OTEL_TRACES_EXPORTER', ''), 60)!r}: the gateway "
                "exports to one of 'otlp' (HTTP/protobuf) or 'console'",
                field="--otel",
            )
        if kinds[0] == "console":
            try:
                from opentelemetry.sdk.trace.export import ConsoleSpanExporter  # noqa: PLC0415
            except ImportError:
                raise _missing() from None
            return cls.with_exporter(ConsoleSpanExporter())
        protocol = (
            os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
        ).strip()
        if protocol not in ("", "http/protobuf"):
            raise ConfigError(
                f"OTLP protocol {bounded(protocol, 40)!r}: the gateway exports OTLP over http/protobuf only",
                field="--otel",
            )
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
        except ImportError:
            raise _missing() from None
        return cls.with_exporter(OTLPSpanExporter())

    async def shutdown(self) -> None:
        await asyncio.to_thread(self.provider.shutdown)

    # -- the request span -----------------------------------------------------------------------
    def install(self, app: Any) -> None:
        app.add_middleware(_TraceRequests, tracing=self)

    async def serve(self, app: Any, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Run ``app`` for one chat request inside its SERVER span."""
        trace = self._trace
        headers = {
            k.decode("latin-1"): v.decode("latin-1")[:512]
            for k, v in scope.get("headers", ())
            if k in (b"traceparent", b"tracestate")
        }
        remote = trace.get_current_span(self._propagator.extract(headers)).get_span_context()
        span = self._tracer.start_span(
            "chat",
            context=self._context.Context(),  # a root: a client's traceparent is a link, not a parent
            kind=trace.SpanKind.SERVER,
            links=[trace.Link(remote)] if remote.is_valid else None,
            attributes={
                "gen_ai.operation.name": "chat",
                "http.request.method": bounded(scope.get("method", ""), 16),
                "http.route": CHAT_PATH,
                "url.path": CHAT_PATH,
            },
        )
        state = _Request(span)
        attached = self._context.attach(trace.set_span_in_context(span))
        current = _REQUEST.set(state)

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state.status = int(message.get("status", 0))
            await send(message)

        try:
            await app(scope, receive, send_status)
        except asyncio.CancelledError:
            state.error = state.error or "cancelled"
            state.status = state.status or 503
            raise
        except Exception as e:
            state.error = state.error or type(e).__qualname__
            state.status = state.status or 500
            raise
        finally:
            _REQUEST.reset(current)
            self._context.detach(attached)
            self._end_request(state)

    def _end_request(self, state: _Request) -> None:
        span, status = state.span, state.status
        span.set_attribute("http.response.status_code", status)
        if status == 200:
            outcome = "answered"
        elif status == 499:
            outcome = "client_gone"
        elif state.upstream:
            outcome = "upstream_error"
        elif status >= 500 or state.error == "cancelled":
            outcome = "failed"
        else:
            outcome = "refused"
        span.set_attribute("specalign.outcome", outcome)
        if state.error or status >= 500:
            span.set_attribute("error.type", state.error or str(status))
        if status >= 500 or state.upstream or state.error == "cancelled":
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, state.error or str(status)))
        span.end()

    def requested(self, inp: ChatInput) -> None:
        state = _REQUEST.get()
        if state is None:
            return
        p = inp.prompt
        state.model = bounded(inp.model)
        chars = len(p.prompt) + len(p.system or "") + sum(len(t.content) for t in p.history or ())
        state.span.set_attributes(
            {
                "gen_ai.request.model": state.model,
                "gen_ai.request.stream": bool(inp.stream),
                "specalign.request.messages": 1 + len(p.history or ()) + (1 if p.system else 0),
                "specalign.request.chars": chars,
                **_numbers(inp.params),
            }
        )

    def resolved(self, method: str, scenario: str) -> None:
        state = _REQUEST.get()
        if state is None:
            return
        state.span.update_name(f"chat {state.model}" if state.model else "chat")  # the served name: resolved
        state.span.set_attributes({"specalign.method": bounded(method), "specalign.scenario": bounded(scenario)})

    def answered(self, out: MethodOutput) -> None:
        state = _REQUEST.get()
        if state is None:
            return
        state.span.set_attributes(
            {
                "gen_ai.usage.input_tokens": out.usage.prompt_tokens,
                "gen_ai.usage.output_tokens": out.usage.completion_tokens,
                "gen_ai.response.finish_reasons": ["length" if "max_tokens_reached" in out.flags else "stop"],
                "specalign.upstream_calls": out.calls,
                "specalign.flags": [bounded(f, 64) for f in out.flags[:16]],
                "specalign.answer.chars": len(out.response),
            }
        )

    def failed(self, error: GatewayError) -> None:
        state = _REQUEST.get()
        if state is None:
            return
        state.error = bounded(error.code or error.type, 64)
        state.upstream = bool(error.code and error.code.startswith("upstream_"))

    # -- upstream calls -------------------------------------------------------------------------
    def _observe(
        self, model: Model, request: ChatRequest, stage: str | None
    ) -> Callable[[Completion | None, BaseException | None], None]:
        """A CLIENT span for one backend call, a child of the current request or judgment."""
        trace, settings = self._trace, model.settings
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": bounded(provider_of(settings) or settings.backend, 32),
            "gen_ai.request.model": bounded(settings.model_name),
            "specalign.request.messages": len(request.messages),
            "specalign.request.chars": sum(len(m.content) for m in request.messages),
            **_numbers(request.params),
        }
        if stage:
            attributes["specalign.stage"] = bounded(stage, 64)
        if len(settings.base_urls) == 1:
            attributes.update(_server(settings.base_urls[0]))
        span = self._tracer.start_span(f"chat {bounded(settings.model_name)}", kind=trace.SpanKind.CLIENT)
        span.set_attributes(attributes)

        def ended(completion: Completion | None, error: BaseException | None) -> None:
            try:
                if completion is not None:
                    span.set_attributes(
                        {
                            "gen_ai.usage.input_tokens": completion.usage.prompt_tokens,
                            "gen_ai.usage.output_tokens": completion.usage.completion_tokens,
                            "gen_ai.usage.cache_read.input_tokens": completion.usage.cached_prompt_tokens,
                            "gen_ai.response.finish_reasons": [bounded(completion.finish_reason or "unknown", 32)],
                            "specalign.response.chars": len(completion.text),
                        }
                    )
                else:
                    kind = (
                        "cancelled"
                        if isinstance(error, (asyncio.CancelledError, GeneratorExit))
                        else (error.kind or "model_error")
                        if isinstance(error, ModelError)
                        else type(error).__qualname__
                    )
                    span.set_attribute("error.type", bounded(kind, 64))
                    if isinstance(error, ModelError) and error.status:
                        span.set_attribute("http.response.status_code", int(error.status))
                    span.set_status(trace.Status(trace.StatusCode.ERROR, bounded(kind, 64)))
            finally:
                span.end()

        return ended

    # -- monitor judgments ----------------------------------------------------------------------
    def capture(self) -> Any:
        state = _REQUEST.get()
        return None if state is None else state.span.get_span_context()

    @contextmanager
    def judging(self, request: Any, method: str, scenario: str) -> Iterator[_Judgment]:
        trace = self._trace
        span = self._tracer.start_span(
            f"judge {bounded(scenario)}",
            context=self._context.Context(),  # its own trace, linked to the request's
            kind=trace.SpanKind.INTERNAL,
            links=[trace.Link(request, {"specalign.link": "judged_request"})] if request is not None else None,
            attributes={"specalign.method": bounded(method), "specalign.scenario": bounded(scenario)},
        )
        state = _Judgment(span)
        attached = self._context.attach(trace.set_span_in_context(span))
        current = _JUDGMENT.set(state)
        try:
            with call_stage("judge"):
                yield state
        except asyncio.CancelledError:
            span.set_attribute("error.type", "cancelled")
            span.set_status(trace.Status(trace.StatusCode.ERROR, "cancelled"))
            raise
        except Exception as e:
            span.set_attribute("error.type", bounded(type(e).__qualname__, 64))
            span.set_status(trace.Status(trace.StatusCode.ERROR, bounded(type(e).__qualname__, 64)))
            raise
        finally:
            _JUDGMENT.reset(current)
            self._context.detach(attached)
            span.end()

    def judged(self, letters: str | None, sar: float | None, call_failed: bool = False) -> None:
        state = _JUDGMENT.get()
        if state is None:
            return
        span = state.span
        span.set_attribute("specalign.judge.status", "scored" if letters is not None else "unscored")
        if letters is not None:
            span.set_attributes(
                {
                    "specalign.verdicts.yes": letters.count("Y"),
                    "specalign.verdicts.no": letters.count("N"),
                    "specalign.verdicts.na": letters.count("A"),
                    "specalign.violated": "N" in letters,
                }
            )
        if sar is not None and math.isfinite(sar):
            span.set_attribute("specalign.sar", float(sar))
        if call_failed:
            span.set_attribute("error.type", "judge_call_failed")
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, "judge_call_failed"))


class _TraceRequests:
    """ASGI middleware: a SERVER span around each ``POST /v1/chat/completions`` (streamed bodies included)."""

    def __init__(self, app: Any, tracing: OtelTracing):
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") != CHAT_PATH:
            await self.app(scope, receive, send)
            return
        await self.tracing.serve(self.app, scope, receive, send)


def _numbers(params: dict[str, Any]) -> dict[str, Any]:
    """The numeric sampling parameters of ``params`` as ``gen_ai.request.*`` attributes."""
    out: dict[str, Any] = {}
    for name, key in REQUEST_PARAMS.items():
        v = params.get(name)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if isinstance(v, int) and abs(v) < 2**63:
            out[key] = v
        elif isinstance(v, float) and math.isfinite(v):
            out[key] = v
    return out


def _server(url: str) -> dict[str, Any]:
    """``server.address`` and ``server.port`` of an upstream URL (never its credentials or path)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return {}
    out: dict[str, Any] = {}
    if host:
        out["server.address"] = bounded(host, 64)
    if port:
        out["server.port"] = port
    return out


def otlp_endpoint() -> str:
    """Where the OTLP/HTTP exporter sends spans, read as the exporter reads the environment."""
    traces = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if traces:
        return traces
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    return f"{base.rstrip('/')}/v1/traces" if base else DEFAULT_ENDPOINT


def _missing() -> ConfigError:
    return ConfigError(
        "--otel needs the OpenTelemetry SDK and OTLP exporter: pip install 'specalign[otel]'", field="--otel"
    )
