"""uvicorn's sans-I/O WebSocket protocol, with reading paused only when the app falls behind.

uvicorn stops reading a connection after every message it hands the app and starts again
when the app takes it: two ``epoll_ctl`` calls, and the selector's bookkeeping, per
message. In a flash sale's checkout burst that was a quarter of the WebSocket process's
CPU. Here a connection stops being read once ``QUEUE_HIGH`` messages wait for the app,
and is read again when the app has taken all but ``QUEUE_LOW``: a client still cannot make
the server hold more than one read's worth of frames beyond that, and a client the app
keeps up with costs no flow control at all.

``newretail serve`` runs uvicorn with ``ws=WS_PROTOCOL``.
"""

from __future__ import annotations

from uvicorn._types import ASGIReceiveEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

WS_PROTOCOL = "live.wsproto:LiveWebSocketProtocol"
QUEUE_HIGH = 8
QUEUE_LOW = 2


class LiveWebSocketProtocol(WebSocketsSansIOProtocol):
    """``WebSocketsSansIOProtocol`` with reads paused past ``QUEUE_HIGH`` waiting messages."""

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
