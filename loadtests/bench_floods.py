"""Floods benchmark: what the flood tests (``tests/test_floods.py``) check as behaviour,
measured here as time.

- ``slow-consumer``: 20 reading viewers, the host pins and unpins 100 times 20 ms apart
  with a 48 KB event between pins; once alone, once with a viewer that never reads. The
  readers' pin latency (arrival minus the event's store time) p50/p99/max both times, and
  how long until the stuck one was cut off (4001).
- ``storm``: N viewers reconnect at the same instant with ``since``: seconds until all were
  welcomed, and ``/healthz`` during the storm (median, worst).
- ``chat-spam``: a member sends 150 chats at once while four others chat: the others'
  acknowledgement time (median, worst) and how long until every spam message was answered.

Run: ``python -m loadtests.bench_floods [--storm 2000] [--redis-url URL]``; prints one table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from identity.tokens import KeyRing
from live.commerce.catalog import Catalog
from live.db.client import connect
from live.hub.sessions import Sessions
from live.money import Money
from live.types import Product, Sku
from loadtests.bench_fanout import bench_store
from loadtests.server import ServerProcess, run_server
from loadtests.wsclient import LightClient, open_client, wait_all

KEYS = "k1:" + "floods-bench-key-0123456789abcdef0123456789"
RING = KeyRing.from_spec(KEYS)
PAD = "x" * 48_000


def token(sub: str, role: str) -> str:
    return RING.issue(sub, role, ttl=3600)  # type: ignore[arg-type]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


async def seed(store_url: str) -> None:
    redis = connect(store_url)
    try:
        await Catalog(redis).put_products(
            Product(Sku(s), f"Thing {s}", "home",
                    Money(950, "GBP"), "") for s in ("mug", "pot", "kite"))
    finally:
        await redis.aclose()


def open_session(server: ServerProcess) -> str:
    r = httpx.post(f"{server.url}/live/sessions", json={"title": "Floods",
                                                        "products": ["mug", "pot", "kite"]},
                   headers={"authorization": f"Bearer {token('host-1', 'host')}"}, timeout=10)
    r.raise_for_status()
    return str(r.json()["session_id"])


async def join(server: ServerProcess, sid: str, names: list[str], role: str = "viewer",
               **kw: Any) -> list[LightClient]:
    clients = []
    for lo in range(0, len(names), 500):
        part = await asyncio.gather(*(open_client(server.port, f"/ws/live/{sid}", **kw)
                                      for _ in names[lo:lo + 500]))
        for c, name in zip(part, names[lo:lo + 500], strict=True):
            c.hello(token(name, role))
        if await wait_all(list(part), lambda c: c.welcome is not None, 120):
            raise RuntimeError("viewers were not welcomed")
        clients += part
    return clients


async def pin_run(store_url: str, sid: str, host: LightClient, readers: list[LightClient],
                  tag: str, pins: int) -> dict[str, float]:
    redis = connect(store_url)
    store = Sessions(redis, 1000)
    start = [len(c.messages) for c in readers]
    try:
        for i in range(pins):
            await host.op("pin" if i % 2 == 0 else "unpin", f"{tag}{i}", sku="kite")
            await store.publish(sid, {"type": "note", "pad": PAD})
            await asyncio.sleep(0.02)  # the pace of the stream being measured
        final = await store.publish(sid, {"type": "note", "n": "end"})
    finally:
        await redis.aclose()
    if await wait_all(readers, lambda c: c.last_seq() >= final, 60):
        raise RuntimeError("a reader did not get the whole stream")
    lat = [(t - m["ts"] / 1000.0) * 1000.0 for c, n in zip(readers, start, strict=True)
           for m, t in zip(c.messages[n:], c.arrived[n:], strict=True)
           if m.get("type") in ("pinned", "unpinned")]
    return {"p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99), "max_ms": max(lat)}


def slow_consumers(server: ServerProcess) -> float:
    """Connections the server has closed as slow consumers so far (its /metrics)."""
    name = 'newretail_ws_disconnects_total{reason="slow_consumer"} '
    for row in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        if row.startswith(name):
            return float(row.rsplit(" ", 1)[1])
    return 0.0


async def slow_consumer(server: ServerProcess, store_url: str) -> list[tuple[str, str]]:
    sid = open_session(server)
    (host,) = await join(server, sid, ["host-1"], "host")
    readers = await join(server, sid, [f"r{i}" for i in range(20)])
    alone = await pin_run(store_url, sid, host, readers, "a", 100)
    (stuck,) = await join(server, sid, ["stuck"], rcvbuf=4096)
    before = slow_consumers(server)
    stuck.pause()
    t0 = time.monotonic()
    with_stuck = await pin_run(store_url, sid, host, readers, "b", 100)
    redis = connect(store_url)
    try:  # more, until the stuck one is cut off
        for _ in range(200):
            if slow_consumers(server) > before:
                break
            await Sessions(redis, 1000).publish(sid, {"type": "note", "pad": PAD})
            await asyncio.sleep(0.02)
    finally:
        await redis.aclose()
    cut = time.monotonic() - t0
    stuck.resume()
    await stuck.until(lambda c: c.close_code is not None or c.lost, 60, "the cut-off")
    for c in [host, stuck, *readers]:
        c.close()
    return [
        ("slow consumer: readers alone, pin p50 / p99 / max ms",
         f"{alone['p50_ms']:.1f} / {alone['p99_ms']:.1f} / {alone['max_ms']:.1f}"),
        ("slow consumer: with a stuck viewer, pin p50 / p99 / max ms",
         f"{with_stuck['p50_ms']:.1f} / {with_stuck['p99_ms']:.1f} / "
         f"{with_stuck['max_ms']:.1f}"),
        ("slow consumer: p99 added by the stuck viewer, ms",
         f"{with_stuck['p99_ms'] - alone['p99_ms']:+.1f}"),
        ("slow consumer: stuck viewer closed (code) after s",
         f"{stuck.close_code} after {cut:.2f}"),
    ]


async def storm(server: ServerProcess, n: int) -> list[tuple[str, str]]:
    sid = open_session(server)
    health: list[float] = []

    async def health_during() -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            for _ in range(5):
                t = time.monotonic()
                (await http.get(f"{server.url}/healthz")).raise_for_status()
                health.append(time.monotonic() - t)

    t0 = time.monotonic()
    probe = asyncio.create_task(health_during())
    viewers = await join(server, sid, [f"v{i}" for i in range(n)])
    welcomed = time.monotonic() - t0
    await probe
    for c in viewers:
        c.close()
    return [(f"storm: {n} viewers all welcomed, s", f"{welcomed:.2f}"),
            ("storm: /healthz during it, median / worst ms",
             f"{statistics.median(health) * 1000:.1f} / {max(health) * 1000:.1f}")]


async def chat_spam(server: ServerProcess) -> list[tuple[str, str]]:
    sid = open_session(server)
    spammer, *others = await join(server, sid, ["spammer", "m1", "m2", "m3", "m4"], "member")
    t0 = time.monotonic()
    for i in range(150):
        spammer.send({"op": "chat", "ref": f"s{i}", "text": f"buy {i}"})
    took = []
    for round_ in range(3):
        for c in others:
            sent = time.monotonic()
            await c.op("chat", f"o{round_}", text="hello")
            took.append(time.monotonic() - sent)
    await spammer.until(lambda c: sum(1 for m in c.messages if m.get("type") in ("ack", "error")
                                      and str(m.get("ref", "")).startswith("s")) == 150, 60)
    spam_s = time.monotonic() - t0
    for c in [spammer, *others]:
        c.close()
    return [("chat spam: others' acks, median / worst ms",
             f"{statistics.median(took) * 1000:.1f} / {max(took) * 1000:.1f}"),
            ("chat spam: all 150 answered after, s", f"{spam_s:.2f}")]


async def run(server: ServerProcess, store_url: str, n: int) -> list[tuple[str, str]]:
    return [*await slow_consumer(server, store_url), *await storm(server, n),
            *await chat_spam(server)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--storm", type=int, default=2000, help="viewers in the reconnect storm")
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL"))
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, bench_store(args.redis_url, Path(tmp)) as url:
        asyncio.run(seed(url))
        env = {"NEWRETAIL_JWT_KEYS": KEYS, "NEWRETAIL_WS_SEND_BUFFER": str(64 * 1024)}
        with run_server(url, Path(tmp) / "web", env=env) as server:
            rows = asyncio.run(run(server, url, args.storm))
    print("| floods | figure |\n|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
