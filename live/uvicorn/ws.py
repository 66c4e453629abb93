"""uvicorn's sans-I/O WebSocket protocol, with reading paused only when the app falls behind.

uvicorn stops reading a connection after every message it hands the app and starts again
when the app takes it: two ``epoll_ctl`` calls, and the selector's bookkeeping, per
message. In a flash sale's checkout burst that was a quarter of the WebSocket process's
CPU. Here a connection stops being read once ``QUEUE_HIGH`` messages wait for the app,
and is read again when the app has taken all but ``QUEUE_LOW``: a client still cannot make
the server hold more than one read's worth of frames beyond that, and a client the app
keeps up with costs no flow control at all.

A client's ordinary data frames (whole, masked, unfragmented, no extension bits) are taken
from the bytes read without the ``websockets`` parser and its event list, which cost
several times the frame itself; only at a frame boundary of ``websockets``' own parser,
and anything else (control frames, fragments, a frame cut across reads, oversized or
malformed frames) goes through ``websockets`` as before.

``newretail serve`` runs uvicorn with ``ws=WS_PROTOCOL``.
"""

from __future__ import annotations

from uvicorn._types import ASGIReceiveEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from live.metrics import FAST_PATHS
from live.websockets.parser import between_frames

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

WS_PROTOCOL = "live.uvicorn.ws:LiveWebSocketProtocol"
QUEUE_HIGH = 8
QUEUE_LOW = 2


class LiveWebSocketProtocol(WebSocketsSansIOProtocol):
    """``WebSocketsSansIOProtocol`` with reads paused past ``QUEUE_HIGH`` waiting messages."""

    def data_received(self, data: bytes) -> None:
        if not self.frames and between_frames(self.conn):
            data = self._take_frames(data)
            if not data:
                return
        super().data_received(data)

    def _take_frames(self, data: bytes) -> bytes:
        """Hand the app the ordinary data frames at the start of ``data``; the rest."""
        pos, end = 0, len(data)
        limit = self.conn.max_message_size
        while end - pos >= 6:
            first, second = data[pos], data[pos + 1]
            opcode = first & 0x0F
            # FIN without RSV bits, text (1) or binary (2), masked as a client's must be
            if first & 0xF0 != 0x80 or not 0 < opcode < 3 or not second & 0x80:
                break
            size, head = second & 0x7F, 6
            if size == 126:
                if end - pos < 8:
                    break
                size, head = int.from_bytes(data[pos + 2:pos + 4], "big"), 8
            elif size == 127:
                break
            if (limit is not None and size > limit) or end - pos < head + size:
                break
            start = pos + head
            payload = apply_mask(data[start:start + size], data[start - 4:start])
            pos = start + size
            self.curr_msg_data_type = "text" if opcode == 1 else "bytes"
            self.frames = [payload]
            self.send_receive_event_to_app()
            if self.transport.is_closing():  # uvicorn failed the connection (bad UTF-8)
                return b""
        if pos:
            FAST_PATHS.frames += 1  # reads whose frames took this path, once per read
        return data[pos:] if pos else data

    def send_receive_event_to_app(self) -> None:
        paused = self.read_paused
        # The parent pauses reading after every message unless it believes it already has.
        self.read_paused = True
        try:
            super().send_receive_event_to_app()
        finally:
            self.read_paused = paused
        if not paused and self.queue.qsize() >= QUEUE_HIGH:
            self.read_paused = True
            self.transport.pause_reading()

    async def receive(self) -> ASGIReceiveEvent:
        message = await self.queue.get()
        if self.read_paused and self.queue.qsize() <= QUEUE_LOW:
            self.read_paused = False
            self.transport.resume_reading()
        return message
