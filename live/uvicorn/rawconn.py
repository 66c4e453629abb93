"""The raw writer: frames written straight to the socket of uvicorn's sans-I/O WebSocket
protocol."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from starlette.types import Send
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from live.metrics import FAST_PATHS
from live.protocol.frames import Format
from live.protocol.messages import ConnId
from live.writers.base import CLOSE_GRACE, Conn


class RawConn(Conn):
    """A connection served by uvicorn's ``WebSocketsSansIOProtocol``: frames go straight to
    its transport."""

    __slots__ = ("proto", "transport", "sock_send")

    def __init__(
        self, conn_id: ConnId, fmt: Format, bound: int, proto: Any, direct_send: bool = True
    ) -> None:
        super().__init__(conn_id, fmt, bound)
        self.proto = proto
        self.transport: asyncio.Transport = proto.transport
        # asyncio's selector transport keeps its socket as ``_sock``; sending on it while
        # the transport holds nothing saves about a tenth of the CPU per delivery (the
        # transport's own checks). Other transports (uvloop) are written to as usual.
        sock = getattr(self.transport, "_sock", None) if direct_send else None
        self.sock_send = sock.send if isinstance(sock, socket.socket) else None
        if self.sock_send is not None:
            FAST_PATHS.raw_send += 1
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


def raw_conn(
    conn_id: ConnId, fmt: Format, bound: int, send: Send, direct_send: bool = True
) -> RawConn | None:
    """A raw connection when ``send`` is bound to uvicorn's sans-I/O protocol, else none."""
    proto = getattr(send, "__self__", None)
    if (
        proto is not None
        and isinstance(proto, WebSocketsSansIOProtocol)
        and hasattr(proto, "transport") and hasattr(proto, "conn")
    ):
        return RawConn(conn_id, fmt, bound, proto, direct_send)
    return None
