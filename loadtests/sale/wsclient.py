"""A light WebSocket client for gevent: websockets' sans-I/O protocol on a plain socket.

Locust users run in gevent greenlets, so the client is a blocking socket (cooperative once
Locust has patched the standard library) pumped through ``websockets.client.ClientProtocol``,
the same protocol core the ``websockets`` library runs under asyncio. One reader greenlet per
connection hands each text frame's bytes to a callback; nothing else runs per frame, which
keeps a load generator holding thousands of viewers at a few microseconds per delivery.
"""

from __future__ import annotations

import socket
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
        self._feed(self._recv())
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
