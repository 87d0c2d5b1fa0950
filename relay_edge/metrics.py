"""Prometheus metrics, one registry per process object (so tests can run several)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Gauges(Collector):
    """Gauges read at scrape time from live state, never stale."""

    def __init__(self, prefix: str, read: Callable[[], dict[str, tuple[str, float]]]) -> None:
        self._prefix = prefix
        self._read = read

    def collect(self) -> Iterable[Metric]:
        for name, (doc, value) in self._read().items():
            yield GaugeMetricFamily(f"{self._prefix}_{name}", doc, value=value)


class _HotCounters(Collector):
    """Per-tag counters kept as plain ints (a locked Counter.inc per tag cost ~8% of the
    edge's CPU at 100 streams) and exported as counters at scrape time."""

    def __init__(self, prefix: str, metrics: Metrics) -> None:
        self._prefix = prefix
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        m = self._metrics
        yield CounterMetricFamily(f"{self._prefix}_tags", "FLV tags received", value=m.tags_total)
        yield CounterMetricFamily(f"{self._prefix}_bytes", "FLV tag bytes received", value=m.bytes_total)


class Metrics:
    """Counters shared by the edge and the client (``prefix`` names the side)."""

    def __init__(self, prefix: str, gauges: Callable[[], dict[str, tuple[str, float]]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(f"{prefix}_{name}", doc, labels, registry=r)

        self.streams = counter("streams", "Streams started")
        # Hot path: bump these ints directly (see _HotCounters).
        self.tags_total = 0
        self.bytes_total = 0
        r.register(_HotCounters(prefix, self))
        self.gap_events = counter("gaps", "Gaps: buffer overflows reported to the app")
        self.gap_tags = counter("gap_tags", "Tags dropped by full buffers")
        self.resumes = counter("resumes", "Streams resumed on a new link")
        self.link_connects = counter("link_connects", "Links established")
        self.link_failures = counter("link_failures", "Link attempts or links that failed", ("reason",))
        self.publisher_reconnects = counter(
            "publisher_reconnects", "Publishers that came back with a live key"
        )
        self.auth_failures = counter("auth_failures", "Refused keys or link proofs", ("kind",))
        self.limit_breaches = counter("limit_breaches", "Connections closed for a breached limit", ("limit",))
        self.protocol_errors = counter(
            "protocol_errors", "Connections closed for a protocol error", ("kind",)
        )
        self.task_failures = counter(
            "task_failures",
            "Unexpected exceptions in background tasks, each logged with its traceback",
            ("task", "kind"),
        )
        r.register(_Gauges(prefix, gauges))

    def limit_breach(self, limit: str) -> None:
        self.limit_breaches.labels(limit).inc()

    def protocol_error(self, kind: str) -> None:
        self.protocol_errors.labels(kind).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
