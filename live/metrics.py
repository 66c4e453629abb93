"""Prometheus metrics of a web process, and the middleware that times every route."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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

