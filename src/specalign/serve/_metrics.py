"""Counters, gauges and histograms in the Prometheus text exposition format (version 0.0.4)."""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable

Labels = tuple[tuple[str, str], ...]
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: request latency buckets in seconds: a vanilla call takes milliseconds, Align3 on a slow model minutes
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels, extra: str = "") -> str:
    parts = [f'{k}="{escape_label(v)}"' for k, v in labels]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if math.isnan(v):
        return "NaN"
    return repr(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help: str):  # noqa: A002
        self.name = name
        self.help = help

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def lines(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help: str):  # noqa: A002
        super().__init__(name, help)
        self.values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, /, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        self.values[key] = self.values.get(key, 0.0) + amount

    def get(self, **labels: str) -> float:
        return self.values.get(tuple(sorted(labels.items())), 0.0)

    def lines(self) -> list[str]:
        return [f"{self.name}{_labels(k)} {_num(v)}" for k, v in sorted(self.values.items())]


class Gauge(_Metric):
    """A gauge read when scraped: ``read`` yields (labels, value) pairs."""

    kind = "gauge"

    def __init__(self, name: str, help: str, read: Callable[[], Iterable[tuple[dict[str, str], float]]]):  # noqa: A002
        super().__init__(name, help)
        self.read = read

    def lines(self) -> list[str]:
        return [f"{self.name}{_labels(tuple(sorted(lab.items())))} {_num(v)}" for lab, v in self.read()]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: tuple[float, ...] = LATENCY_BUCKETS):  # noqa: A002
        super().__init__(name, help)
        self.bounds = tuple(sorted(buckets))
        self.series: dict[Labels, list[float]] = {}  # per label set: bucket counts..., +Inf count, sum

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        s = self.series.get(key)
        if s is None:
            s = self.series[key] = [0.0] * (len(self.bounds) + 2)
        s[bisect.bisect_left(self.bounds, value)] += 1
        s[-1] += value

    def lines(self) -> list[str]:
        out = []
        for key, s in sorted(self.series.items()):
            running = 0.0
            for bound, n in zip(self.bounds, s, strict=False):
                running += n
                le = 'le="' + _num(bound) + '"'
                out.append(f"{self.name}_bucket{_labels(key, le)} {_num(running)}")
            running += s[len(self.bounds)]
            inf = 'le="+Inf"'
            out.append(f"{self.name}_bucket{_labels(key, inf)} {_num(running)}")
            out.append(f"{self.name}_sum{_labels(key)} {_num(s[-1])}")
            out.append(f"{self.name}_count{_labels(key)} {_num(running)}")
        return out


class Registry:
    """The gateway's metrics, rendered in registration order."""

    def __init__(self) -> None:
        self.metrics: list[_Metric] = []

    def add(self, metric: _Metric) -> _Metric:
        self.metrics.append(metric)
        return metric

    def counter(self, name: str, help: str) -> Counter:  # noqa: A002
        return self.add(Counter(name, help))  # type: ignore[return-value]

    def histogram(self, name: str, help: str) -> Histogram:  # noqa: A002
        return self.add(Histogram(name, help))  # type: ignore[return-value]

    def gauge(self, name: str, help: str, read: Callable[[], Iterable[tuple[dict[str, str], float]]]) -> Gauge:  # noqa: A002
        return self.add(Gauge(name, help, read))  # type: ignore[return-value]

    def render(self) -> str:
        lines: list[str] = []
        for m in self.metrics:
            lines += m.header() + m.lines()
        return "\n".join(lines) + "\n"


class GatewayMetrics:
    """Everything the gateway counts; the monitor adds its gauges to the same registry."""

    def __init__(self, in_flight: Callable[[], int]):
        r = self.registry = Registry()
        self.requests = r.counter(
            "specalign_requests_total", "Chat requests answered, by method, scenario and HTTP status."
        )
        self.latency = r.histogram(
            "specalign_request_duration_seconds", "Time from a chat request's arrival to its answer, by method."
        )
        self.tokens = r.counter(
            "specalign_tokens_total", "Upstream tokens spent, by method and type (prompt, completion)."
        )
        self.upstream_calls = r.counter(
            "specalign_upstream_calls_total", "Calls made to the upstream model, by method."
        )
        self.upstream_errors = r.counter(
            "specalign_upstream_errors_total", "Requests that failed at the upstream model, by kind of failure."
        )
        self.rejected = r.counter(
            "specalign_requests_rejected_total",
            "Requests refused before any model call, by reason (auth, too_large, busy, invalid, "
            "headers_too_large, header_timeout, body_timeout, bad_http, connections, "
            "shutting_down, ...).",
        )
        self.disconnects = r.counter(
            "specalign_client_disconnects_total",
            "Chat requests whose client hung up before its answer, by stage (body, answer); "
            "their upstream calls are cancelled (counted as code 499 in requests_total).",
        )
        r.gauge("specalign_requests_in_flight", "Chat requests being answered now.", lambda: [({}, in_flight())])
