"""A light WebSocket client for gevent: websockets' sans-I/O protocol on a plain socket.

Locust users run in gevent greenlets, so the client is a blocking socket (cooperative once
Locust has patched the standard library) pumped through ``websockets.client.ClientProtocol``,
the same protocol core the ``websockets`` library runs under asyncio, for the opening
handshake and for every frame the client sends. What the server sends afterwards is split
into frames here (``server_frames``): the service's frames are unmasked, unfragmented and
without extensions, and splitting those takes 0.2 µs a frame against 3 µs through the
protocol's parser. A ping is answered and a close ends the connection through the protocol;
anything else the service never sends (a fragment, an extension bit) fails the connection
loudly. A connection is read either by a greenlet of its own (``WsClient.run``) or, with
many others, by one greenlet (``WsMux``); each text frame's bytes go to a callback and
nothing else runs per frame.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from collections.abc import Callable

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidState, ProtocolError
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

RECV_BYTES = 65536
FramesHandler = Callable[[list[bytes], float], None]
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


class WsError(Exception):
    """The connection failed or was closed."""


def server_frames(buf: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """The whole frames at the start of ``buf`` as ``(opcode, payload)``, and how many bytes
    they took; a frame the service never sends raises ``WsError`` (pure)."""
    out: list[tuple[int, bytes]] = []
    pos, size = 0, len(buf)
    while size - pos >= 2:
        head, n = buf[pos], buf[pos + 1]
        if head & 0x70 or not head & 0x80 or n & 0x80:
            raise WsError(f"unexpected frame from the server: first bytes {head:#04x} {n:#04x}"
                          " (extension bits, a fragment or a mask)")
        n &= 0x7F
        start = pos + 2
        if n == 126:
            if size - pos < 4:
                break
            n, start = int.from_bytes(buf[pos + 2:pos + 4], "big"), pos + 4
        elif n == 127:
            if size - pos < 10:
                break
            n, start = int.from_bytes(buf[pos + 2:pos + 10], "big"), pos + 10
        if size - start < n:
            break
        out.append((head & 0x0F, buf[start:start + n]))
        pos = start + n
    return out, pos


class WsClient:
    """One client connection.

    Args:
        url: ``ws://host:port/path``.
        subprotocol: offered to the server (``newretail.json`` for JSON text frames).
        timeout: seconds for the TCP connect and the opening handshake.
    """

    def __init__(self, url: str, subprotocol: str = "newretail.json",
                 timeout: float = 30.0) -> None:
        uri = parse_uri(url)
        self.proto = ClientProtocol(uri, subprotocols=[Subprotocol(subprotocol)],
                                    max_size=None)
        self.sock = socket.create_connection((uri.host, uri.port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.closed = False
        self.proto.send_request(self.proto.connect())
        self._flush()
        while self.proto.state is State.CONNECTING:
            self._feed(self._recv())
            for event in self.proto.events_received():
                if isinstance(event, Response) and event.status_code != 101:
                    raise WsError(f"handshake refused: HTTP {event.status_code}")
        if self.proto.handshake_exc is not None:
            raise WsError(f"handshake failed: {self.proto.handshake_exc}")
        # The server speaks only after hello, so the handshake's read held nothing more.
        self._rest = b""
        self.sock.settimeout(None)  # from now on the reader waits as long as it takes

    def _recv(self) -> bytes:
        try:
            return self.sock.recv(RECV_BYTES)
        except OSError as exc:
            raise WsError(f"receive failed: {exc}") from exc

    def _feed(self, data: bytes) -> None:
        if data:
            self.proto.receive_data(data)
        else:
            self.proto.receive_eof()
            self.closed = True

    def _flush(self) -> None:
        for chunk in self.proto.data_to_send():
            if chunk:
                try:
                    self.sock.sendall(chunk)
                except OSError as exc:
                    self.closed = True
                    raise WsError(f"send failed: {exc}") from exc

    def send_text(self, data: bytes) -> None:
        """Send one text frame (``data`` is UTF-8 already, e.g. from orjson)."""
        if self.closed:
            raise WsError("the connection is closed")
        self.proto.send_text(data)
        self._flush()

    def recv_frames(self) -> list[bytes]:
        """Block until at least one read came in; the text/binary payloads it completed."""
        return self.frames_from(self._recv())

    def frames_from(self, data: bytes) -> list[bytes]:
        """Bytes read from the socket (``b""``: it ended); the payloads they completed."""
        if not data:
            self.closed = True
            return []
        buf = self._rest + data if self._rest else data
        frames, used = server_frames(buf)
        self._rest = buf[used:]
        out: list[bytes] = []
        for opcode, payload in frames:
            if opcode == TEXT or opcode == BINARY:
                out.append(payload)
            elif opcode == PING:
                self.proto.send_pong(payload)
                self._flush()
            elif opcode == CLOSE:
                self._answer_close(payload)
                break
            elif opcode != PONG:
                raise WsError(f"unexpected frame from the server: opcode {opcode:#x}")
        return out

    def _answer_close(self, payload: bytes) -> None:
        """The closing handshake: echo the server's code; the caller closes the socket."""
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1000
        with contextlib.suppress(WsError, ProtocolError, InvalidState):
            self.proto.send_close(code)  # a code one may not send back is not answered
            self._flush()
        self.closed = True

    def run(self, on_frames: FramesHandler) -> None:
        """Read until the connection ends: ``on_frames(payloads, read_at)`` per read with
        frames, as ``WsMux`` calls it; then close."""
        try:
            while not self.closed:
                frames = self.recv_frames()
                if frames:
                    on_frames(frames, time.time())
        finally:
            self.close()

    def close(self) -> None:
        if self.sock.fileno() == -1:
            return
        if not self.closed and self.proto.state is State.OPEN:
            try:
                self.proto.send_close(1000)
                self._flush()
            except WsError:
                pass
        self.closed = True
        self.sock.close()



def _real_epoll() -> select.epoll:
    """An epoll object even where gevent's monkey-patching took ``select.epoll`` away."""
    try:
        from gevent.monkey import get_original
    except ImportError:  # pragma: no cover - gevent comes with Locust
        return select.epoll()
    epoll: type[select.epoll] = get_original("select", "epoll")
    return epoll()


class WsMux:
    """Many connections read by one greenlet.

    A greenlet per connection costs a wake-up, two switches and a watcher of gevent's loop
    for every message: in the load test that was most of the 23 µs a viewer's message cost.
    Here one greenlet waits on an epoll object that holds every connection; when the
    server writes one event to every viewer, one wake-up reads all that are ready, one
    ``recv`` each. Sends still go through each ``WsClient`` (cooperative ``sendall``).
    """

    def __init__(self) -> None:
        self._epoll = _real_epoll()
        self._conns: dict[int, tuple[WsClient, FramesHandler]] = {}

    def __len__(self) -> int:
        return len(self._conns)

    def add(self, ws: WsClient, on_frames: FramesHandler) -> None:
        """Read ``ws`` from now on: ``on_frames(payloads, read_at)`` per read with frames."""
        fd = ws.sock.fileno()
        self._conns[fd] = (ws, on_frames)
        self._epoll.register(fd, select.EPOLLIN)

    def drop(self, ws: WsClient) -> None:
        fd = ws.sock.fileno()
        if fd != -1 and self._conns.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    def read_ready(self, timeout: float = 0.0) -> int:
        """One pass: every connection epoll reports readable is read once. Returns the
        number of connections read."""
        ready = self._epoll.poll(timeout)
        for fd, _ in ready:
            entry = self._conns.get(fd)
            if entry is None:
                continue
            ws, on_frames = entry
            try:
                # level-triggered and reported readable: this read does not block
                frames = ws.frames_from(os.read(fd, RECV_BYTES))
            except (OSError, WsError):
                frames, ws.closed = [], True
            if frames:
                on_frames(frames, time.time())
            if ws.closed:
                self._conns.pop(fd, None)
                self._epoll.unregister(fd)
                ws.close()
        return len(ready)

    def run(self) -> None:
        """Read every connection added, now or later, until killed (run it in a greenlet);
        then close them all."""
        from gevent.socket import wait_read

        try:
            while True:
                wait_read(self._epoll.fileno())
                self.read_ready()
        finally:
            self.close()

    def close(self) -> None:
        """Close every connection still read, and the epoll object."""
        for ws, _ in list(self._conns.values()):
            ws.close()
        self._conns.clear()
        self._epoll.close()
