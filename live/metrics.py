"""The Prometheus metrics of a web process (served by ``live.web.metrics``)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric

REQUEST_SECONDS = Histogram(
    "newretail_http_request_seconds",
    "HTTP request latency by route template",
    ["method", "route", "status"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
WS_CONNECTIONS = Gauge("newretail_ws_connections", "Open WebSocket connections", ["kind"])
WS_MESSAGES_SENT = Counter(
    "newretail_ws_messages_sent_total", "WebSocket messages written to clients", ["kind"]
)
WS_DISCONNECTS = Counter(
    "newretail_ws_disconnects_total", "WebSocket connections closed by the server", ["reason"]
)


class FastPaths:
    """How often this process took each fast path that relies on uvicorn's and websockets'
    internals: raw socket writes (connections), reads whose frames skipped the websockets
    parser, responses whose head went out with their body. Plain integers, not Prometheus
    counters, as the paths are hotter than a counter is cheap; read at scrape time."""

    __slots__ = ("raw_send", "frames", "one_write")

    def __init__(self) -> None:
        self.raw_send = 0
        self.frames = 0
        self.one_write = 0


FAST_PATHS = FastPaths()


class _FastPathCollector:
    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "newretail_fastpath_taken", "Times each library fast path was taken", labels=["path"]
        )
        for path in FastPaths.__slots__:
            family.add_metric([path], getattr(FAST_PATHS, path))
        yield family


REGISTRY.register(_FastPathCollector())

PAYMENT_WEBHOOKS = Counter(
    "newretail_payment_webhooks_total",
    "Payment webhooks received, by provider, event kind and result "
    "(handled, duplicate, ignored, bad_signature, amount_mismatch, bad_event, failed)",
    ["provider", "kind", "result"],
)
