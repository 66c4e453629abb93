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

import logging
from typing import Any

from live.metrics import WS_DISCONNECTS
from live.protocol.frames import Format, encode, frame
from live.protocol.messages import CLOSE_SLOW_CONSUMER, ConnId
from live.protocol.states import ConnState, conn_transition

log = logging.getLogger("newretail.live")

# A connection closed by the server stays open this long for the close handshake; a
# client that does not read by then is dropped.
CLOSE_GRACE = 5.0


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

