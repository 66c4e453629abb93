"""A process's rooms: the local connections to one session, and the writer that brings
each of them up to the newest event (one frame per format, the same bytes for all)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import orjson

from live.hub.outbox import Outbox
from live.metrics import WS_MESSAGES_SENT
from live.protocol.frames import Format, frame, frame_payloads
from live.protocol.messages import HOST_ROLES, ConnId
from live.writers.base import Conn

log = logging.getLogger("newretail.live")


@dataclass(frozen=True)
class OpContext:
    """Who sent an op, on which session and connection."""

    session_id: str
    user: str
    role: str
    member_id: str | None
    conn_id: str


OpHandler = Callable[[OpContext, dict[str, Any]], Awaitable[dict[str, Any] | None]]


PersonalState = Callable[[str], Awaitable[dict[str, Any] | None]]


SnapshotProvider = Callable[[str, str | None], Awaitable[Any]]


Refresher = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


# The process re-resyncs a session's viewers (close 4002, they resume) when events it
# missed are no longer in history.
CLOSE_RESYNC = 4002



async def cancel_and_wait(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until each has ended, cancelling again every second: on
    Python 3.11 a cancellation that lands as an ``asyncio.timeout`` expires can be lost,
    and the listener's store reads run under one (a stop would then wait forever)."""
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: a task that failed on its way out is not logged


@dataclass(frozen=True)
class HubConfig:
    history: int = 1000
    coalesce_interval: float = 0.25
    viewers_interval: float = 1.0
    send_buffer: int = 256 * 1024
    pubsub: str = "auto"
    # Connections written between turns of the event loop; 0: a whole room in one turn. A
    # pause lets ops run during a fan-out (a host's ack in half the time) but, with HTTP
    # processes on the same cores, their p99 was 10-25 ms higher in the load test.
    fanout_chunk: int = 0
    # Frames straight to the socket where the server allows (``live.uvicorn.rawconn``);
    # off: every frame goes through the asyncio transport (uvloop, or to compare).
    direct_send: bool = True

    def __post_init__(self) -> None:
        if self.fanout_chunk < 0:
            raise ValueError(f"NEWRETAIL_LIVE_FANOUT_CHUNK must be 0 or more, got "
                             f"{self.fanout_chunk}")


def msgpack_frame(data: bytes) -> bytes:
    """The msgpack frame of an event stored as JSON."""
    return frame(msgpack.packb(orjson.loads(data), use_bin_type=True), Format.MSGPACK)


def frame_for(data: bytes, fmt: Format) -> bytes:
    """The frame of an event stored as JSON, in ``fmt``."""
    if fmt is Format.JSON:
        return frame(data, Format.JSON)
    return msgpack_frame(data)


def reframe(json_frame: bytes) -> bytes:
    """The msgpack frame of an event's JSON frame."""
    return msgpack_frame(frame_payloads(json_frame)[0])


class Room:
    """The local connections to one session."""

    __slots__ = ("sid", "fanout_chunk", "live", "joining", "last_seq", "ready", "arrived",
                 "departed", "presence_at", "outbox", "writer")

    def __init__(self, sid: str, fanout_chunk: int = 0) -> None:
        self.sid = sid
        # Connections written between turns of the event loop; 0: all in one turn.
        self.fanout_chunk = fanout_chunk
        self.live: dict[ConnId, Conn] = {}
        self.joining: dict[ConnId, Conn] = {}
        self.last_seq = 0
        # Events not yet written to every live connection, and the task writing them.
        self.outbox = Outbox(msgpack_frame)
        self.writer: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        # Presence is written as it changes; all of it only every PRESENCE_REFRESH.
        self.arrived: set[str] = set()
        self.departed: set[str] = set()
        self.presence_at = 0.0

    def promote(self) -> None:
        """Move welcomed connections to the live set once this process has delivered
        every event up to their welcome seq; send what they buffered after it."""
        for cid, conn in list(self.joining.items()):
            if conn.after_seq < 0 or self.last_seq < conn.after_seq:
                continue
            pending, conn.pending = conn.pending or [], None
            for seq, data in pending:
                if seq > conn.after_seq:
                    conn.push(data if conn.fmt is Format.JSON else reframe(data))
            del self.joining[cid]
            if not conn.closed:
                conn.sent = self.last_seq  # its pending frames reach that far
                self.live[cid] = conn

    def deliver(self, seq: int, data: bytes) -> None:
        """Hand one event to every local viewer: the live ones get it from the self's
        writer (one frame per format, the same bytes for all), the joining ones once
        welcomed."""
        self.last_seq = seq
        json_frame = frame(data, Format.JSON)
        if self.live or len(self.outbox):
            self.outbox.add(seq, data, json_frame)
            if self.writer is None:
                self.writer = asyncio.get_running_loop().create_task(self._write_out())
        for conn in self.joining.values():
            if conn.pending is not None:
                conn.pending.append((seq, json_frame))
        if self.joining:
            self.promote()

    async def _write_out(self) -> None:
        """Bring every live connection of ``self`` up to the newest event (a chunk of
        connections between turns of the event loop when ``fanout_chunk`` says so); each
        connection gets everything it lacks in one write."""
        outbox = self.outbox
        try:
            while len(outbox):
                start = outbox.top
                conns = list(self.live.values())
                chunk = self.fanout_chunk or len(conns) or 1
                sent = 0
                for lo in range(0, len(conns), chunk):
                    if lo:
                        await asyncio.sleep(0)  # ops and store replies run in between
                    top = outbox.top
                    # The bytes for the last point asked: most connections share it.
                    last_at, last_fmt, data, n = -2, Format.JSON, b"", 0
                    for conn in conns[lo:lo + chunk]:
                        at = conn.sent
                        if at >= top or conn.closed:
                            continue
                        if at != last_at or conn.fmt is not last_fmt:
                            last_at, last_fmt = at, conn.fmt
                            data, n = outbox.after(at, last_fmt)
                        conn.sent = top
                        conn.push(data)
                        sent += n
                if sent:
                    WS_MESSAGES_SENT.labels("event").inc(sent)
                outbox.trim(start)  # every connection has it up to there (all, if no more)
        except Exception:
            # They would miss events otherwise: each resumes from what it has.
            log.exception("session %s: writing events to its viewers failed", self.sid)
            outbox.clear()
            for conn in list(self.live.values()):
                conn.close(CLOSE_RESYNC, "resync")
        finally:
            self.writer = None

    def users(self) -> set[str]:
        return {c.user for c in (*self.live.values(), *self.joining.values())}

    def __len__(self) -> int:
        return len(self.live) + len(self.joining)

    def audience(self) -> int:
        """Connections of viewers and members: the viewer count leaves hosts' consoles
        (and admins) out."""
        staff = sum(c.role in HOST_ROLES for c in self.live.values()) + sum(
            c.role in HOST_ROLES for c in self.joining.values())
        return len(self) - staff


@dataclass(frozen=True)
class Op:
    handler: OpHandler
    roles: frozenset[str]
    # Only for hosts and admins: then only the session's own host (or an admin) may run it.
    hosts_only: bool
