"""Load generator for the fan-out benchmark: N WebSocket clients in one process.

A hand-written ``asyncio.Protocol`` client (HTTP upgrade, frame parser, pong), because a
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
import base64
import os
import sys
import time
from typing import Any

import orjson

PINNED = b'"type":"pinned"'
UNPINNED = b'"type":"unpinned"'
TS = b'"ts":'


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked client frame."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


class Stats:
    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0
        self.lat: list[float] = []
        self.cpu0 = time.process_time()

    def reset(self) -> None:
        self.count, self.last, self.lat = 0, 0.0, []
        self.cpu0 = time.process_time()


class BenchClient(asyncio.Protocol):
    def __init__(self, kind: str, path: str, hello: bytes | None, stats: Stats,
                 opened: asyncio.Future[bool]) -> None:
        self.kind = kind
        self.path = path
        self.hello = hello
        self.stats = stats
        self.opened = opened
        self.buf = bytearray()
        self.upgraded = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        proto = "Sec-WebSocket-Protocol: newretail.json\r\n" if self.kind == "hub" else ""
        req = (f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n{proto}\r\n")
        transport.write(req.encode())  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_result(False)

    def send(self, payload: bytes, opcode: int = 0x1) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(payload, opcode))

    def data_received(self, data: bytes) -> None:
        # One clock read per read from the socket: frames that arrived together share it.
        now = time.time() * 1000.0
        if self.upgraded and not self.buf:
            rest = self._frames(data, now)  # the common case: no copy into the buffer
            if rest:
                self.buf += data[len(data) - rest:]
            return
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buf[:end])
            del self.buf[:end + 4]
            if b" 101 " not in status.split(b"\r\n")[0]:
                self.opened.set_result(False)
                return
            self.upgraded = True
            if self.hello is not None:
                self.send(self.hello)
            if self.kind in ("ws", "raw") and not self.opened.done():
                self.opened.set_result(True)
        buf = bytes(self.buf)
        rest = self._frames(buf, now)
        self.buf = bytearray(buf[len(buf) - rest:]) if rest else bytearray()

    def _frames(self, buf: bytes, now: float) -> int:
        """Handle every whole frame in ``buf``; returns how many bytes are left over."""
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            opcode = buf[pos] & 0x0F
            n = buf[pos + 1] & 0x7F
            start = pos + 2
            if n == 126:
                if size - pos < 4:
                    break
                n = int.from_bytes(buf[pos + 2:pos + 4], "big")
                start = pos + 4
            elif n == 127:
                if size - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2:pos + 10], "big")
                start = pos + 10
            if size - start < n:
                break
            self._message(opcode, buf[start:start + n], now)
            pos = start + n
        return size - pos

    def _message(self, opcode: int, payload: bytes, now: float) -> None:
        if opcode == 0x9:
            self.send(payload, 0xA)
            return
        if opcode == 0x8:
            return
        if PINNED in payload or UNPINNED in payload:
            i = payload.find(TS) + 5
            stats = self.stats
            stats.count += 1
            stats.last = now
            stats.lat.append(now - float(payload[i:payload.find(b",", i)]))
            return
        if self.kind == "hub":  # ready once welcomed: joined the session
            if not self.opened.done() and b'"type":"welcome"' in payload:
                self.opened.set_result(True)
        elif self.kind == "sio":
            if payload[:1] == b"0":  # Engine.IO open: join the default namespace
                self.send(b"40")
            elif payload[:2] == b"40" and not self.opened.done():
                self.opened.set_result(True)
            elif payload == b"2":
                self.send(b"3")


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
