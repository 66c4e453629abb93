"""Helpers for the live hub tests: tokens from the servers' key ring, products, sessions,
and a thin WebSocket client that waits on conditions with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import msgpack
import orjson
from websockets.asyncio.client import ClientConnection, connect

from identity.tokens import KeyRing
from live.commerce.catalog import Catalog
from live.money import Money
from live.types import Product, Sku

KEYS = "k1:" + "s3cret-for-the-live-hub-tests-0123456789"
RING = KeyRing.from_spec(KEYS)
ENV = {"NEWRETAIL_JWT_KEYS": KEYS}
SKUS = [f"SKU{i}" for i in range(1, 7)]


def token(sub: str, role: str) -> str:
    return RING.issue(sub, role, ttl=600)  # type: ignore[arg-type]


async def seed_products(redis: Any) -> None:
    await Catalog(redis).put_products(
        Product(Sku(s), f"Thing {s}", "home",
                Money(950, "GBP"), f"/catalog/images/{s}.svg") for s in SKUS
    )


def create_session(base_url: str, title: str = "Spring drop") -> str:
    resp = httpx.post(
        f"{base_url}/live/sessions", json={"title": title, "products": SKUS[:3]},
        headers={"authorization": f"Bearer {token('host-1', 'host')}"}, timeout=5,
    )
    resp.raise_for_status()
    sid: str = resp.json()["session_id"]
    return sid


class Client:
    """One WebSocket client of a session; ``events`` keeps every session event seen."""

    def __init__(self, ws: ClientConnection, msgpack_format: bool) -> None:
        self.ws = ws
        self.msgpack = msgpack_format
        self.events: list[dict[str, Any]] = []
        self.personal: list[dict[str, Any]] = []
        self.welcome: dict[str, Any] = {}

    @classmethod
    async def open(cls, ws_url: str, path: str, msgpack_format: bool = False,
                   **kwargs: Any) -> Client:
        sub = ["newretail.msgpack"] if msgpack_format else ["newretail.json"]
        ws = await connect(f"{ws_url}{path}", subprotocols=sub,  # type: ignore[list-item]
                           open_timeout=10, **kwargs)
        return cls(ws, msgpack_format)

    async def send(self, obj: dict[str, Any]) -> None:
        await self.ws.send(msgpack.packb(obj) if self.msgpack else orjson.dumps(obj).decode())

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        if self.msgpack:
            if not isinstance(raw, bytes):
                raise AssertionError("msgpack clients get binary frames")
            msg: dict[str, Any] = msgpack.unpackb(raw)
        else:
            if not isinstance(raw, str):
                raise AssertionError("json clients get text frames")
            msg = orjson.loads(raw)
        if "seq" in msg and msg.get("type") != "welcome":
            self.events.append(msg)
        else:
            self.personal.append(msg)
        return msg

    async def hello(self, tok: str, since: dict[str, Any] | None = None) -> dict[str, Any]:
        frame: dict[str, Any] = {"op": "hello", "token": tok}
        if since is not None:
            frame["since"] = since
        await self.send(frame)
        msg = await self.until(lambda m: m.get("type") in ("welcome", "error"))
        if msg["type"] == "welcome":
            self.welcome = msg
        return msg

    async def until(self, cond: Callable[[dict[str, Any]], bool],
                    timeout: float = 15.0) -> dict[str, Any]:
        """Read until a message satisfies ``cond``; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.recv(max(0.01, deadline - time.monotonic()))
            if cond(msg):
                return msg

    async def op(self, op: str, ref: str, **payload: Any) -> dict[str, Any]:
        """Send an op and return its ack or error (events seen meanwhile are kept)."""
        await self.send({"op": op, "ref": ref, **payload})
        return await self.until(
            lambda m: m.get("type") in ("ack", "error") and m.get("ref") == ref
        )

    async def close(self) -> None:
        await self.ws.close()


def session_events(client: Client, after: int) -> list[tuple[int, str]]:
    return [(e["seq"], e["type"]) for e in client.events if e["seq"] > after]
