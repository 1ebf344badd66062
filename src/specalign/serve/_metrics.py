"""The gateway's Prometheus metrics, kept by ``prometheus_client``.

One process (``--workers 1``): the metrics live in a private registry. Several workers: the supervisor
gives each worker a shared folder (``SPECALIGN_METRICS_DIR``, and ``PROMETHEUS_MULTIPROC_DIR`` for the
library); every worker writes its counters there, and whichever worker answers ``/metrics`` renders the
sum over all of them with the library's multiprocess collector. Gauges computed from the monitor's
windows are read at scrape time from the store every worker shares, so they need no summing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

#: the folder shared by a supervisor's workers; unset in a single gateway process
METRICS_DIR_ENV = "SPECALIGN_METRICS_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: request latency buckets in seconds: a vanilla call takes milliseconds, Align3 on a slow model minutes
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
#: metrics the status page reads that /metrics does not show
HIDDEN = "specalign_status_"

prometheus_client.disable_created_metrics()  # no *_created samples: the documented series only


def clean(value: object) -> str:
    """A label value that can be stored and rendered: text, with lone surrogates replaced. Quotes,
    backslashes and newlines are escaped by the exposition writer."""
    return str(value).encode("utf-8", "replace").decode("utf-8")


class _Labelled:
    def __init__(self, metric: Any, labelnames: tuple[str, ...]):
        self._metric = metric
        self._labelnames = labelnames

    def _child(self, labels: dict[str, str]) -> Any:
        if not self._labelnames:
            return self._metric
        return self._metric.labels(**{k: clean(labels[k]) for k in self._labelnames})


class Counter(_Labelled):
    """A counter with fixed label names; ``inc(amount, **labels)``."""

    def inc(self, amount: float = 1.0, /, **labels: str) -> None:
        self._child(labels).inc(amount)

    def get(self, **labels: str) -> float:
        """This process's count for ``labels`` (0 when never counted)."""
        want = {k: clean(v) for k, v in labels.items()}
        for family in self._metric.collect():
            for s in family.samples:
                if s.name.endswith("_total") and s.labels == want:
                    return float(s.value)
        return 0.0


class Histogram(_Labelled):
    def observe(self, value: float, **labels: str) -> None:
        self._child(labels).observe(value)


class Gauge(_Labelled):
    """A gauge set by its process; with several workers /metrics shows the sum over the live ones."""

    def set(self, value: float, **labels: str) -> None:
        self._child(labels).set(value)


class _Computed:
    """A collector of gauges computed when scraped: ``read`` yields (labels, value) pairs."""

    def __init__(self, name: str, help: str, read: Callable[[], Iterable[tuple[dict[str, str], float]]]):  # noqa: A002
        self.name, self.help, self.read = name, help, read

    def collect(self) -> Iterator[Metric]:
        rows = list(self.read())
        names = sorted(rows[0][0]) if rows else []
        family = GaugeMetricFamily(self.name, self.help, labels=names)
        for labels, value in rows:
            family.add_metric([clean(labels[k]) for k in names], float(value))
        yield family


class _Shown:
    """``inner``'s metrics without the hidden ones."""

    def __init__(self, inner: Any):
        self.inner = inner

    def collect(self) -> Iterator[Metric]:
        return (m for m in self.inner.collect() if not m.name.startswith(HIDDEN))


class Registry:
    """What ``/metrics`` renders: this process's metrics, or every worker's summed."""

    def __init__(self, shared_dir: str | None):
        self.shared_dir = shared_dir
        self.own = None if shared_dir else CollectorRegistry(auto_describe=True)
        self.shown = CollectorRegistry(auto_describe=False)
        if shared_dir:
            self.shown.register(_Shown(MultiProcessCollector(None, shared_dir)))
        self._computed: list[_Computed] = []

    def _make(self, kind: type, name: str, help: str, labelnames: tuple[str, ...], **kw: Any) -> Any:  # noqa: A002
        # label names sorted: a series reads the same in every version of the exposition
        metric = kind(name, help, labelnames=sorted(labelnames), registry=self.own, **kw)
        if self.own is not None and not name.startswith(HIDDEN):
            self.shown.register(_Single(metric))
        return metric

    def counter(self, name: str, help: str, labels: tuple[str, ...] = ()) -> Counter:  # noqa: A002
        m = self._make(prometheus_client.Counter, name.removesuffix("_total"), help, labels)
        return Counter(m, tuple(sorted(labels)))

    def histogram(self, name: str, help: str, labels: tuple[str, ...] = ()) -> Histogram:  # noqa: A002
        m = self._make(prometheus_client.Histogram, name, help, labels, buckets=LATENCY_BUCKETS)
        return Histogram(m, tuple(sorted(labels)))

    def gauge(self, name: str, help: str, labels: tuple[str, ...] = ()) -> Gauge:  # noqa: A002
        m = self._make(prometheus_client.Gauge, name, help, labels, multiprocess_mode="livesum")
        return Gauge(m, tuple(sorted(labels)))

    def computed(self, name: str, help: str, read: Callable[[], Iterable[tuple[dict[str, str], float]]]) -> None:  # noqa: A002
        self.shown.register(_Computed(name, help, read))

    def render(self) -> str:
        return generate_latest(self.shown).decode("utf-8")

    def families(self) -> Iterator[Metric]:
        """Every metric, hidden ones included, summed over the workers."""
        if self.shared_dir:
            yield from MultiProcessCollector(None, self.shared_dir).collect()
        else:
            assert self.own is not None
            yield from self.own.collect()


class _Single:
    """One metric of a single process's registry, registered again in the rendered one."""

    def __init__(self, metric: Any):
        self.metric = metric

    def collect(self) -> Iterator[Metric]:
        return iter(self.metric.collect())


class GatewayMetrics:
    """Everything the gateway counts; the monitor adds its own metrics to the same registry.

    ``in_flight`` is accepted for compatibility and unused: the gateway sets ``requests_in_flight``.
    """

    def __init__(self, in_flight: Callable[[], int] | None = None):
        r = self.registry = Registry(os.environ.get(METRICS_DIR_ENV) or None)
        self.requests = r.counter(
            "specalign_requests_total",
            "Chat requests answered, by method, scenario and HTTP status.",
            ("method", "scenario", "code"),
        )
        self.latency = r.histogram(
            "specalign_request_duration_seconds",
            "Time from a chat request's arrival to its answer, by method.",
            ("method",),
        )
        self.tokens = r.counter(
            "specalign_tokens_total",
            "Upstream tokens spent, by method and type (prompt, completion).",
            ("method", "type"),
        )
        self.upstream_calls = r.counter(
            "specalign_upstream_calls_total", "Calls made to the upstream model, by method.", ("method",)
        )
        self.upstream_errors = r.counter(
            "specalign_upstream_errors_total",
            "Requests that failed at the upstream model, by kind of failure.",
            ("kind",),
        )
        self.rejected = r.counter(
            "specalign_requests_rejected_total",
            "Requests refused before any model call, by reason (auth, too_large, busy, invalid, "
            "headers_too_large, header_timeout, body_timeout, bad_http, connections, "
            "shutting_down, ...).",
            ("reason",),
        )
        self.disconnects = r.counter(
            "specalign_client_disconnects_total",
            "Chat requests whose client hung up before its answer, by stage (body, answer); "
            "their upstream calls are cancelled (counted as code 499 in requests_total).",
            ("stage",),
        )
        self.in_flight = r.gauge("specalign_requests_in_flight", "Chat requests being answered now.")
        self.in_flight.set(0)
        self.enforce_checks = r.counter(
            "specalign_enforce_checks_total",
            "Answers (or stream windows) judged by enforcement, by outcome (pass, violation, error).",
            ("outcome",),
        )
        self.enforce_violations = r.counter(
            "specalign_enforce_violations_total",
            "Safety specs enforcement found broken, by scenario and spec.",
            ("scenario", "spec"),
        )
        self.enforce_actions = r.counter(
            "specalign_enforce_actions_total",
            "Enforced answers by what was done (none, regenerated, refused, flagged).",
            ("action",),
        )
        self.enforce_latency = r.histogram(
            "specalign_enforce_duration_seconds", "Time the enforcement judge added to one answer."
        )
        self.status_tokens = r.counter(
            HIDDEN + "completion_tokens", "Completion tokens per method and scenario.", ("method", "scenario")
        )

    # -- reading: the status page ---------------------------------------------------------------
    def total(self, sample: str, **labels: str) -> float:
        """The sum of ``sample``'s values over the series whose labels include ``labels``, all workers."""
        want = {k: clean(v) for k, v in labels.items()}
        return sum(
            s.value
            for family in self.registry.families()
            for s in family.samples
            if s.name == sample and all(s.labels.get(k) == v for k, v in want.items())
        )

    def traffic(self) -> list[dict[str, Any]]:
        """Per method and scenario: requests answered, failed, and completion tokens, all workers."""
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for family in self.registry.families():
            for s in family.samples:
                if s.name == "specalign_requests_total" and s.labels.get("method"):
                    key = (s.labels["method"], s.labels["scenario"])
                    row = rows.setdefault(key, _row(key))
                    if s.labels["code"] == "200":
                        row["ok"] += int(s.value)
                    elif s.labels["code"] != "499":
                        row["errors"] += int(s.value)
                elif s.name == HIDDEN + "completion_tokens_total":
                    key = (s.labels["method"], s.labels["scenario"])
                    rows.setdefault(key, _row(key))["completion_tokens"] += int(s.value)
        return [rows[k] for k in sorted(rows)]


def _row(key: tuple[str, str]) -> dict[str, Any]:
    return {"method": key[0], "scenario": key[1], "ok": 0, "errors": 0, "completion_tokens": 0}
