"""The event log: an append-only Redis stream, durable with the store's AOF."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import redis.asyncio as aredis

from recommender.types import EVENT_KINDS, Event

LOG = "nr:events"


def _fields(event: Event) -> dict[Any, Any]:
    fields: dict[Any, Any] = {
        "u": event.user, "s": event.sku, "k": event.kind, "t": f"{event.ts:.3f}",
    }
    if event.session_id:
        fields["sess"] = event.session_id
    if event.store_id:
        fields["store"] = event.store_id
    if event.qty != 1:
        fields["q"] = str(event.qty)
    return fields


def _event(fields: Mapping[bytes, bytes]) -> Event:
    kind = fields[b"k"].decode()
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {kind!r} in the log")
    session = fields.get(b"sess")
    store = fields.get(b"store")
    return Event(
        user=fields[b"u"].decode(), sku=fields[b"s"].decode(), kind=kind,
        ts=float(fields[b"t"]), session_id=session.decode() if session else None,
        store_id=store.decode() if store else None, qty=int(fields.get(b"q", b"1")),
    )


class EventLog:
    """Appends events and reads them back in order."""

    def __init__(self, redis: aredis.Redis) -> None:
        self.redis = redis

    async def append(self, events: Iterable[Event], batch: int = 1000) -> int:
        """Append events in order; returns how many were written."""
        count = 0
        pipe = self.redis.pipeline(transaction=False)
        for event in events:
            pipe.xadd(LOG, _fields(event))
            count += 1
            if count % batch == 0:
                await pipe.execute()
        await pipe.execute()
        return count

    async def length(self) -> int:
        return int(await self.redis.xlen(LOG))

    async def read(self, after: str = "-", chunk: int = 10_000) -> AsyncIterator[tuple[str, Event]]:
        """Every event after stream id ``after`` (exclusive), oldest first."""
        start = after if after == "-" else f"({after}"
        while True:
            rows: Any = await self.redis.xrange(LOG, min=start, max="+", count=chunk)
            if not rows:
                return
            for entry_id, fields in rows:
                yield entry_id.decode(), _event(fields)
            start = f"({rows[-1][0].decode()}"

    async def delete_users(self, users: set[str], chunk: int = 5000) -> int:
        """Delete every event of ``users`` from the log (erasure); returns how many."""
        deleted = 0
        start = "-"
        while True:
            rows: Any = await self.redis.xrange(LOG, min=start, max="+", count=chunk)
            if not rows:
                return deleted
            doomed = [eid for eid, f in rows if f[b"u"].decode() in users]
            if doomed:
                deleted += int(await self.redis.xdel(LOG, *doomed))
            start = f"({rows[-1][0].decode()}"
