"""Load generator for the fan-out benchmark: N WebSocket clients in one process.

The project's ``loadtests.wsclient.LightClient`` (an ``asyncio.Protocol``: HTTP upgrade,
frame splitter, pong), told to do nothing per frame but read a pin's ``ts``, because a
full client library spends more CPU per message than the servers being measured. It
speaks the hub's hello, Engine.IO v4 / Socket.IO, or plain WebSocket.

Driven over stdin/stdout with JSON lines: it prints ``{"ready": n}`` once connected, then
answers ``reset`` and ``report`` commands. With several ``--port`` values (web processes
of one service) the clients are spread over them in turn. Latency = receive wall time -
the ``ts`` (ms) carried by each event; only frames of ``pinned``/``unpinned`` events are
counted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import orjson

from loadtests.wsclient import JSON, LightClient

PINNED = b'"type":"pinned"'
UNPINNED = b'"type":"unpinned"'
TS = b'"ts":'


class Stats:
    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0
        self.lat: list[float] = []
        self.cpu0 = time.process_time()

    def reset(self) -> None:
        self.count, self.last, self.lat = 0, 0.0, []
        self.cpu0 = time.process_time()


class BenchClient(LightClient):
    """The shared client, doing as little as it can per frame: the ``ts`` of pins and
    unpins is read from the bytes, nothing is decoded or kept."""

    def __init__(self, kind: str, path: str, hello: bytes | None, stats: Stats,
                 opened: asyncio.Future[bool]) -> None:
        super().__init__(path, JSON if kind == "hub" else None)
        self.kind = kind
        self.hello_frame = hello
        self.stats = stats
        self.opened = opened

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.opened.done():
            self.opened.set_result(False)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.status and self.status != 101 and not self.opened.done():
            self.opened.set_result(False)

    def on_open(self) -> None:
        if self.hello_frame is not None:
            self.send_raw(self.hello_frame)
        if self.kind in ("ws", "raw") and not self.opened.done():
            self.opened.set_result(True)

    def on_frame(self, opcode: int, payload: bytes, now: float) -> bool:
        if PINNED in payload or UNPINNED in payload:
            i = payload.find(TS) + 5
            stats = self.stats
            stats.count += 1
            stats.last = now * 1000.0
            stats.lat.append(now * 1000.0 - float(payload[i:payload.find(b",", i)]))
            return False
        if self.kind == "hub":  # ready once welcomed: joined the session
            if not self.opened.done() and b'"type":"welcome"' in payload:
                self.opened.set_result(True)
        elif self.kind == "sio":
            if payload[:1] == b"0":  # Engine.IO open: join the default namespace
                self.send_raw(b"40")
            elif payload[:2] == b"40" and not self.opened.done():
                self.opened.set_result(True)
            elif payload == b"2":
                self.send_raw(b"3")
        return False


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def run(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stats = Stats()
    hellos: list[bytes | None] = [None] * args.n
    if args.kind == "hub":
        from identity.tokens import KeyRing

        ring = KeyRing.from_spec(args.keys)
        hellos = [orjson.dumps({"op": "hello", "token": ring.issue(f"bench-{i}", "viewer",
                                                                   ttl=3600)})
                  for i in range(args.n)]
    transports = []
    failed = 0
    ports = [int(p) for p in str(args.port).split(",")]
    for lo in range(0, args.n, args.concurrency):
        batch = []
        for i in range(lo, min(args.n, lo + args.concurrency)):
            opened: asyncio.Future[bool] = loop.create_future()
            t, _ = await loop.create_connection(
                lambda i=i, opened=opened: BenchClient(args.kind, args.path, hellos[i], stats,
                                                       opened),
                "127.0.0.1", ports[i % len(ports)])
            transports.append(t)
            batch.append(opened)
        for ok in await asyncio.wait_for(asyncio.gather(*batch), 60):
            failed += 0 if ok else 1
    print(orjson.dumps({"ready": len(transports) - failed, "failed": failed}).decode(),
          flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        cmd = orjson.loads(line)
        reply: dict[str, Any]
        if cmd["cmd"] == "reset":
            stats.reset()
            reply = {"ok": True}
        elif cmd["cmd"] == "report":
            reply = {"count": stats.count, "last": stats.last / 1000.0,
                     "p50": _pct(stats.lat, 0.5), "p99": _pct(stats.lat, 0.99),
                     "max": max(stats.lat) if stats.lat else float("nan"),
                     "cpu": time.process_time() - stats.cpu0}
        else:
            break
        print(orjson.dumps(reply).decode(), flush=True)
    for t in transports:
        t.abort()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--kind", choices=["hub", "sio", "ws", "raw"], required=True)
    p.add_argument("--port", required=True, help="port, or ports comma separated: the "
                   "clients are spread over them in turn")
    p.add_argument("--path", default="/")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--keys", default="")
    p.add_argument("--concurrency", type=int, default=100)
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
