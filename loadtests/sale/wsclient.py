"""A light WebSocket client for gevent: websockets' sans-I/O protocol on a plain socket.

Locust users run in gevent greenlets, so the client is a blocking socket (cooperative once
Locust has patched the standard library) pumped through ``websockets.client.ClientProtocol``,
the same protocol core the ``websockets`` library runs under asyncio. A connection is read
either by a greenlet of its own (``WsClient.run``) or, with many others, by one greenlet
(``WsMux``); each text frame's bytes go to a callback and nothing else runs per frame.
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Callable

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

RECV_BYTES = 65536


class WsError(Exception):
    """The connection failed or was closed."""


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
        """Feed bytes read from the socket (``b""``: it ended); the payloads they completed."""
        self._feed(data)
        # Payloads are bytes as the protocol builds them; the type allows other buffers.
        out: list[bytes] = [e.data for e in self.proto.events_received()  # type: ignore[misc]
                            if isinstance(e, Frame) and e.opcode in (Opcode.TEXT, Opcode.BINARY)]
        self._flush()  # pongs and the close handshake answer
        if self.proto.state is State.CLOSED:
            self.closed = True
        return out

    def run(self, on_frame: Callable[[bytes], None]) -> None:
        """Read until the connection ends, calling ``on_frame`` with each payload."""
        try:
            while not self.closed:
                for payload in self.recv_frames():
                    on_frame(payload)
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


FramesHandler = Callable[[list[bytes], float], None]


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
