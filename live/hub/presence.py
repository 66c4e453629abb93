"""Who is watching, and the high-rate figures: viewer counts and presence per session,
coalesced events flushed a few times a second, and the pacing of the cycle collector."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

from live.hub.keys import channel
from live.hub.rooms import (
    HubConfig,
    Refresher,
    Room,
)
from live.hub.sessions import Sessions
from live.protocol.states import (
    Coalescer,
    GcPlan,
    coalesced_events,
)

log = logging.getLogger("newretail.live")

# Seconds between full rewrites of a session's presence (it expires after three).
PRESENCE_REFRESH = 20.0
# A coalesced flush holds its pair this long at most (a process that dies mid-flush).
FLUSH_HOLD_MS = 5000


class Presence:
    """The hub's counting side (a part of ``Hub``, which sets these attributes)."""

    config: HubConfig
    sessions: Sessions
    proc: str
    rooms: dict[str, Room]
    refreshers: dict[str, Refresher]
    coalescer: Coalescer
    gc_plan: GcPlan
    _pubsub: Any
    _subscribed: dict[str, asyncio.Event]
    _rooms_lock: asyncio.Lock
    _viewer_totals: dict[str, int]
    _viewers_due: float

    async def _unshown_now(self, sid: str, kind: str, values: dict[str, Any]) -> dict[str, Any]:
        """The ``kind`` figures of ``values``' keys as they are now (read by the kind's
        refresher), those that differ from the ones last shown in the session."""
        return await self.sessions.unshown(sid, kind, await self.refreshers[kind](sid, values))

    async def publish_coalesced(self, session_id: str, kind: str, key: str, value: Any) -> None:
        """High-rate state: the latest value per key (reactions: the sum) goes out as one
        ``kind`` event per session at most every ``coalesce_interval`` seconds."""
        await self.sessions.stage(session_id, kind, key, value)
        self.coalescer.mark(session_id, kind)

    async def viewers(self, session_id: str) -> list[str]:
        """Users connected to the session now on any process (refreshed every few seconds)."""
        return await self.sessions.present(session_id)

    async def _flush_loop(self) -> None:
        interval_ms = int(self.config.coalesce_interval * 1000)
        while True:
            await asyncio.sleep(self.config.coalesce_interval / 2)
            for sid, kind in self.coalescer.due(time.monotonic()):
                try:
                    values = await self.sessions.drain(sid, kind, FLUSH_HOLD_MS)
                    if values is None:
                        self.coalescer.retry(sid, kind)
                        continue
                    if values and kind in self.refreshers:
                        values = await self._unshown_now(sid, kind, values)
                    if values:  # one call: consecutive seqs, read together everywhere
                        await self.sessions.publish_many(sid, coalesced_events(kind, values))
                    await self.sessions.flushed(sid, kind, interval_ms)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("session %s: flushing %s failed", sid, kind)
                    self.coalescer.retry(sid, kind)

    def _tend_gc(self) -> None:
        step = self.gc_plan.due(time.monotonic())
        if step == "compact":
            started, before = time.perf_counter(), gc.get_freeze_count()
            gc.unfreeze()
            found = gc.collect()
            gc.freeze()
            log.info("gc: %d frozen objects, %d unreachable collected, in %.0f ms", before,
                     found, (time.perf_counter() - started) * 1000)
        elif step == "freeze":
            gc.freeze()
            log.info("gc: %d objects frozen after a wave of joins", gc.get_freeze_count())

    async def _viewers_loop(self) -> None:
        every = self.config.viewers_interval
        while True:
            await asyncio.sleep(min(every, self.gc_plan.settle))
            self._tend_gc()
            if time.monotonic() < self._viewers_due:
                continue
            self._viewers_due = time.monotonic() + every
            try:
                await self.report_viewers(ttl=max(5.0, every * 5))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("viewer count update failed")

    async def report_viewers(self, ttl: float) -> None:
        """Write this process's viewer count per session and who arrived or left; publish
        totals that changed; forget sessions with no local viewer left."""
        counts: dict[str, int] = {}
        now = time.monotonic()
        for sid, room in list(self.rooms.items()):
            if not room.ready.is_set():
                continue
            counts[sid] = room.audience()
            if now - room.presence_at > PRESENCE_REFRESH:
                room.presence_at, room.arrived = now, room.users()
            arrived, room.arrived = room.arrived, set()
            departed, room.departed = room.departed, set()
            await self.sessions.update_presence(sid, arrived, departed, PRESENCE_REFRESH * 3)
        if not counts:
            return
        totals = await self.sessions.report_viewers(counts, self.proc, ttl)
        for sid, total in totals.items():
            if self._viewer_totals.get(sid) != total:
                self._viewer_totals[sid] = total
                await self.publish_coalesced(sid, "viewers", "count", total)
        for sid, room in list(self.rooms.items()):
            if sid in counts and len(room) == 0:
                await self._drop_room(sid)

    async def _drop_room(self, sid: str) -> None:
        async with self._rooms_lock:
            room = self.rooms.get(sid)
            if room is None or len(room) or not room.ready.is_set():
                return
            del self.rooms[sid]
            self._viewer_totals.pop(sid, None)
            self._subscribed.pop(channel(sid), None)
            if await self.sessions.sharded():
                await self._pubsub.sunsubscribe(channel(sid))
            else:
                await self._pubsub.unsubscribe(channel(sid))
