"""A light WebSocket client for the fault and flood tests: thousands in one process.

An ``asyncio.Protocol`` (HTTP upgrade, the load test's frame splitter, pong, close) in the
manner of ``loadtests/fanout_loadgen.py``, keeping every decoded JSON message with its arrival time,
so a test can hold a few thousand viewers and still check each one's events.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import orjson

from loadtests.fanout_loadgen import client_frame
from loadtests.sale.wsclient import server_frames

Message = dict[str, Any]


class LightClient(asyncio.Protocol):
    """One WebSocket connection. ``status`` is the handshake's HTTP status (101 when
    open), ``close_code`` the server's close code once it closed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.buf = bytearray()
        self.status = 0
        self.head = b""  # the handshake answer's status line and headers
        self.refusal = b""
        self.upgraded = False
        self.transport: asyncio.Transport | None = None
        self.messages: list[Message] = []
        self.arrived: list[float] = []  # wall-clock seconds, to compare with events' ts
        self.close_code: int | None = None
        self.lost = False
        self.changed = asyncio.Event()
        self.handshake: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    # asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(  # type: ignore[attr-defined]
            f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: newretail.json\r\n\r\n"
            .encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.handshake.done():
            self.handshake.set_result(self.status)
        self.changed.set()

    def data_received(self, data: bytes) -> None:
        if self.status and self.status != 101:
            self.refusal += data  # the rest of a refusal's body
            return
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end])
            self.head = head
            self.status = int(head.split(b" ", 2)[1])
            del self.buf[:end + 4]
            if self.status != 101:
                self.refusal = bytes(self.buf)  # the error body (see data_received)
                if not self.handshake.done():
                    self.handshake.set_result(self.status)
                return
            self.upgraded = True
            self.handshake.set_result(101)
        self._frames()

    # Frames ----------------------------------------------------------------------

    def _frames(self) -> None:
        frames, used = server_frames(bytes(self.buf))
        del self.buf[:used]
        got = False
        for opcode, payload in frames:
            if opcode == 0x9:
                self._write(client_frame(payload, 0xA))
            elif opcode == 0x8:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self._write(client_frame(payload[:2], 0x8))
            elif opcode == 0x1:
                self.messages.append(orjson.loads(payload))
                self.arrived.append(time.time())
                got = True
        if got or self.close_code is not None:
            self.changed.set()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # Use -------------------------------------------------------------------------

    def send(self, obj: Message) -> None:
        self._write(client_frame(orjson.dumps(obj)))

    def hello(self, token: str, since: Message | None = None) -> None:
        frame: Message = {"op": "hello", "token": token}
        if since is not None:
            frame["since"] = since
        self.send(frame)

    @property
    def welcome(self) -> Message | None:
        return next((m for m in self.messages if m.get("type") == "welcome"), None)

    def events(self) -> list[Message]:
        """Session events (they carry a seq; the welcome's seq is its snapshot's)."""
        return [m for m in self.messages if "seq" in m and m.get("type") != "welcome"]

    def first(self, cond: Callable[[Message], bool]) -> Message | None:
        return next((m for m in self.messages if cond(m)), None)

    async def until(self, cond: Callable[[LightClient], bool], timeout: float = 20.0) -> None:
        """Wait until ``cond(self)``; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not cond(self):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"condition not met within {timeout} s on {self.path}")
            self.changed.clear()
            if cond(self):
                return
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                pass

    def pause(self) -> None:
        """Stop reading: the socket's receive buffer fills and the server's backs up."""
        assert self.transport is not None
        self.transport.pause_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_client(port: int, path: str, rcvbuf: int | None = None,
                      timeout: float = 20.0, source: str | None = None) -> LightClient:
    """Connect and finish the handshake (``status`` says whether it was accepted).

    Args:
        rcvbuf: a small receive buffer for a client meant to stop reading, so the server's
            side backs up after kilobytes rather than the megabytes loopback allows.
        source: the local address to connect from (any of 127.0.0.0/8 works on Linux),
            to look like another client to per-address limits.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if source is not None:
        sock.bind((source, 0))
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), timeout)
    except BaseException:
        sock.close()
        raise
    _, client = await loop.create_connection(lambda: LightClient(path), sock=sock)
    await asyncio.wait_for(asyncio.shield(client.handshake), timeout)
    return client


async def wait_all(clients: list[LightClient], cond: Callable[[LightClient], bool],
                   timeout: float) -> list[LightClient]:
    """Wait until every client meets ``cond`` (or the deadline); return the ones that
    did not."""
    deadline = time.monotonic() + timeout
    for c in clients:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            await c.until(cond, left)
        except TimeoutError:
            break
    return [c for c in clients if not cond(c)]
