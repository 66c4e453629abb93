"""The queued writer: a task drains a bounded queue through the ASGI send, under any server."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from starlette.types import Send

from live.protocol.frames import Format, frame_payloads
from live.protocol.messages import ConnId
from live.writers.base import Conn


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
