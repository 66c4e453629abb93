"""Per-address limits on WebSocket handshakes: a client opening connections in a loop is
refused before it costs a connection, a hello or a join.

Two limits per client address (the ASGI ``client``, which uvicorn takes from
``X-Forwarded-For`` when the proxy is in ``FORWARDED_ALLOW_IPS``): connections open at
once, and new connections per second (a token bucket, so a page reload or a reconnect
after a dropped network passes, a loop does not). Addresses in the trusted list (by
default the loopback, where the benchmarks and load tests run) are not limited.

Over a limit the handshake is answered with HTTP 429 and the usual error body
(``too_many_connections``) and a ``Retry-After``; the WebSocket is never opened.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from live.errors import error_body
from live.metrics import WS_DISCONNECTS
from live.web.settings import Settings

TOO_MANY = "too_many_connections"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class _Bucket:
    tokens: float
    at: float
    open: int = 0


@dataclass
class ConnectionLimits:
    """Counts open connections and recent handshakes per address (one web process).

    Args:
        per_address: connections one address may hold open at once.
        rate: new connections per second one address may open, on average.
        burst: new connections one address may open at once before ``rate`` applies.
        trusted: addresses or networks that are never limited.
    """

    per_address: int
    rate: float
    burst: int
    trusted: tuple[Network, ...] = ()
    clock: Any = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _swept: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            per_address=settings.ws_conn_per_address, rate=settings.ws_conn_rate,
            burst=settings.ws_conn_burst,
            trusted=tuple(ipaddress.ip_network(a, strict=False) for a in settings.ws_trusted),
        )

    def is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:  # a unix socket or a test client: no address to limit
            return True
        return any(ip in net for net in self.trusted)

    def admit(self, address: str) -> tuple[bool, str]:
        """Whether a new connection from ``address`` may open, and why not when refused.
        An admitted connection must be given back with ``release``."""
        if self.is_trusted(address):
            return True, ""
        now = self.clock()
        self._sweep(now)
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = self._buckets[address] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.open >= self.per_address:
            return False, f"at most {self.per_address} open connections per address"
        if bucket.tokens < 1.0:
            return False, f"at most {self.rate:g} new connections per second per address"
        bucket.tokens -= 1.0
        bucket.open += 1
        return True, ""

    def release(self, address: str) -> None:
        bucket = self._buckets.get(address)
        if bucket is not None and bucket.open > 0:
            bucket.open -= 1

    def open_count(self, address: str) -> int:
        bucket = self._buckets.get(address)
        return bucket.open if bucket else 0

    def _sweep(self, now: float) -> None:
        """Forget idle addresses whose bucket is full again, once a minute, so a scan
        from many addresses does not grow the table for ever."""
        if now - self._swept < 60.0:
            return
        self._swept = now
        full = self.burst / self.rate if self.rate > 0 else 0.0
        for address, b in list(self._buckets.items()):
            if b.open == 0 and now - b.at >= full:
                del self._buckets[address]


class ConnectionLimiter:
    """ASGI middleware ahead of the WebSocket endpoints: each handshake is admitted or
    refused by the process's ``ConnectionLimits``; plain HTTP passes untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        limits, address = limits_for(scope["app"].state), client_address(scope)
        admitted, why = limits.admit(address)
        if not admitted:
            await refuse(scope, receive, send, why)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            limits.release(address)


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


def limits_for(state: Any) -> ConnectionLimits:
    """The process's limits, made from its settings on first use."""
    limits: ConnectionLimits | None = getattr(state, "ws_limits", None)
    if limits is None:
        limits = state.ws_limits = ConnectionLimits.from_settings(state.settings)
    return limits


async def refuse(scope: Scope, receive: Receive, send: Send, reason: str) -> None:
    """Answer the handshake with 429 and an error body (the WebSocket denial response);
    a server without that extension closes the handshake instead (HTTP 403)."""
    WS_DISCONNECTS.labels("address_limit").inc()
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008, "reason": reason[:120]})
        return
    body = orjson.dumps(error_body(TOO_MANY, reason))
    await send({
        "type": "websocket.http.response.start", "status": 429,
        "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1"),
                    (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "websocket.http.response.body", "body": body})
