"""One WebSocket connection as the hub writes to it: whole frames, never awaited, bounded.

Under uvicorn's sans-I/O websockets protocol the hub writes pre-encoded frames straight
to the connection's socket: one ``send`` per write (which may join several frames), no
task and no await per recipient; whatever the socket does not take goes through the
transport, whose buffer size is the bound. Under any other ASGI server (or Starlette's
TestClient) a small writer task drains a bounded queue through ``send``.
Either way a connection whose pending output passes the bound is closed with
``CLOSE_SLOW_CONSUMER`` and the others never wait for it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import deque
from typing import Any

from starlette.types import Send
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from live.metrics import WS_DISCONNECTS
from live.protocol import (
    CLOSE_SLOW_CONSUMER,
    ConnId,
    ConnState,
    Format,
    conn_transition,
    encode,
    frame,
    frame_payloads,
)

log = logging.getLogger("newretail.live")

# A connection closed by the server stays open this long for the close handshake; a
# client that does not read by then is dropped.
CLOSE_GRACE = 5.0
# ``0`` writes every frame through the asyncio transport (uvloop, or to compare).
DIRECT_SEND = os.environ.get("NEWRETAIL_WS_DIRECT_SEND", "1") != "0"


class Conn:
    """What the hub needs of a connection. Subclasses decide how bytes reach the socket."""

    __slots__ = (
        "id", "fmt", "bound", "state", "user", "role", "member_id", "session_id",
        "pending", "after_seq", "sent", "closed", "session_host",
    )

    def __init__(self, conn_id: ConnId, fmt: Format, bound: int) -> None:
        self.id = conn_id
        self.fmt = fmt
        self.bound = bound
        self.state = ConnState.AWAITING_HELLO
        self.user = ""
        self.role = ""
        self.member_id: str | None = None
        self.session_id = ""
        self.session_host = ""  # who hosts the session joined: host ops are theirs alone
        # Events that arrive while the client is being welcomed, with their seq.
        self.pending: list[tuple[int, bytes]] | None = []
        self.after_seq = -1
        # The last session event written to it (set when it goes live).
        self.sent = -1
        self.closed = False

    def push(self, data: bytes) -> None:
        """Write one complete frame; close the connection when it cannot keep up."""
        raise NotImplementedError

    def close(self, code: int, reason: str) -> None:
        raise NotImplementedError

    def send_message(self, message: Any) -> None:
        """A personal message, encoded for this connection."""
        self.push(frame(encode(message, self.fmt), self.fmt))

    def send_messages(self, *messages: Any) -> None:
        """Personal messages in order, in one write."""
        fmt = self.fmt
        self.push(b"".join(frame(encode(m, fmt), fmt) for m in messages))

    def joined(self) -> None:
        self.state = conn_transition(self.state, ConnState.JOINED)

    def slow(self) -> None:
        log.info("conn %s: outgoing buffer past %d bytes; closing", self.id, self.bound)
        WS_DISCONNECTS.labels("slow_consumer").inc()
        self.close(CLOSE_SLOW_CONSUMER, "slow consumer")


class RawConn(Conn):
    """A connection served by uvicorn's ``WebSocketsSansIOProtocol``: frames go straight to
    its transport."""

    __slots__ = ("proto", "transport", "sock_send")

    def __init__(self, conn_id: ConnId, fmt: Format, bound: int, proto: Any) -> None:
        super().__init__(conn_id, fmt, bound)
        self.proto = proto
        self.transport: asyncio.Transport = proto.transport
        # asyncio's selector transport keeps its socket as ``_sock``; sending on it while
        # the transport holds nothing saves about a tenth of the CPU per delivery (the
        # transport's own checks). Other transports (uvloop) are written to as usual.
        sock = getattr(self.transport, "_sock", None) if DIRECT_SEND else None
        self.sock_send = sock.send if isinstance(sock, socket.socket) else None
        # The handshake's headers are not used once the connection is open and are a
        # good part of an idle connection's memory (the parser keeps the request alive).
        for message in (getattr(proto, "request", None), getattr(proto, "response", None)):
            if message is not None:
                message.headers.clear()
        proto.request = None
        proto.response = None

    def push(self, data: bytes) -> None:
        # The fan-out hot path: one size check and one send per delivery.
        if self.closed or self.proto.close_sent:
            return
        transport = self.transport
        send = self.sock_send
        if send is not None and not transport.get_write_buffer_size():
            try:
                n = send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:  # the connection is gone: the transport reports it as usual
                n = 0
            if n == len(data):
                return
            data = data[n:]  # the transport sends the rest, in order, when it can
        transport.write(data)
        if transport.get_write_buffer_size() > self.bound:
            self.slow()

    def close(self, code: int, reason: str) -> None:
        """Queue a close frame and hand the app its disconnect now; the transport goes
        once the client answers, or after ``CLOSE_GRACE`` whatever it does."""
        if self.closed:
            return
        self.closed = True
        proto = self.proto
        if proto.close_sent or self.transport.is_closing():
            return
        proto.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        proto.conn.send_close(code, reason)
        self.transport.write(b"".join(proto.conn.data_to_send()))
        proto.close_sent = True
        if proto.read_paused:
            proto.read_paused = False
            self.transport.resume_reading()
        proto.close_timer = proto.loop.call_later(CLOSE_GRACE, self.transport.abort)


class QueuedConn(Conn):
    """A connection under any ASGI server: a writer task drains a byte-bounded queue."""

    __slots__ = ("send", "queue", "queued", "wake", "task")

    def __init__(self, conn_id: ConnId, fmt: Format, bound: int, send: Send) -> None:
        super().__init__(conn_id, fmt, bound)
        self.send = send
        self.queue: deque[bytes | tuple[int, str]] = deque()
        self.queued = 0
        self.wake = asyncio.Event()
        self.task = asyncio.ensure_future(self._write())

    def push(self, data: bytes) -> None:
        if self.closed:
            return
        self.queue.append(data)
        self.queued += len(data)
        self.wake.set()
        if self.queued > self.bound:
            self.slow()

    def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.queue.append((code, reason))
        self.wake.set()

    async def _write(self) -> None:
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                while self.queue:
                    item = self.queue.popleft()
                    if isinstance(item, tuple):
                        await self.send({"type": "websocket.close", "code": item[0],
                                         "reason": item[1]})
                        return
                    self.queued -= len(item)
                    for message in _unframe(item, self.fmt):
                        await self.send(message)
        except Exception:  # the client went away; the receive loop sees the disconnect
            self.closed = True

    def stop(self) -> None:
        self.task.cancel()


def _unframe(data: bytes, fmt: Format) -> list[dict[str, Any]]:
    """The ASGI messages for frames built by ``protocol.frame`` (one write may join
    several)."""
    if fmt is Format.JSON:
        return [{"type": "websocket.send", "text": p.decode()} for p in frame_payloads(data)]
    return [{"type": "websocket.send", "bytes": p} for p in frame_payloads(data)]


def make_conn(conn_id: ConnId, fmt: Format, bound: int, send: Send) -> Conn:
    """A raw connection when ``send`` is uvicorn's sans-I/O protocol, else a queued one."""
    proto = getattr(send, "__self__", None)
    if (
        proto is not None
        and isinstance(proto, WebSocketsSansIOProtocol)
        and hasattr(proto, "transport") and hasattr(proto, "conn")
    ):
        return RawConn(conn_id, fmt, bound, proto)
    return QueuedConn(conn_id, fmt, bound, send)
