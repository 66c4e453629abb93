"""The event log: an append-only Redis stream, durable with the datastore's AOF.

Appending is one datastore script per batch: it refuses users in the erased set, adds each event
to the stream, to its user's index of stream ids, to the user's recent history and to the
trending scores, all at once. Nothing can slip between the erased check and the write, so a
late event of an erased user cannot come back, and erasure finds every event of a user
through the index instead of scanning the log.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

import redis.asyncio as aredis

from recommender.keys import ERASED, HISTORY, LOG, TRENDING, USER_INDEX
from recommender.train import event_weight
from recommender.types import EVENT_KINDS, Event, History

HISTORY_LEN = 200

Weight = Callable[[Event], float]

# KEYS: log, erased set, trending, then per event its user's index and history.
# ARGV: history length, then per event: user sku kind ts session store qty weight tag.
_APPEND = """
local hist_len = tonumber(ARGV[1])
local n = (#ARGV - 1) / 9
local kept = 0
for i = 0, n - 1 do
  local a = 2 + i * 9
  local user = ARGV[a]
  if redis.call('SISMEMBER', KEYS[2], ARGV[a + 8]) == 0 then
    local f = {'u', user, 's', ARGV[a + 1], 'k', ARGV[a + 2], 't', ARGV[a + 3]}
    if ARGV[a + 4] ~= '' then f[#f + 1] = 'sess'; f[#f + 1] = ARGV[a + 4] end
    if ARGV[a + 5] ~= '' then f[#f + 1] = 'store'; f[#f + 1] = ARGV[a + 5] end
    if ARGV[a + 6] ~= '1' then f[#f + 1] = 'q'; f[#f + 1] = ARGV[a + 6] end
    local id = redis.call('XADD', KEYS[1], '*', unpack(f))
    redis.call('RPUSH', KEYS[4 + 2 * i], id)
    if ARGV[a + 1] ~= '' then
      local hist = KEYS[5 + 2 * i]
      redis.call('LPUSH', hist,
        ARGV[a + 1] .. '\\t' .. ARGV[a + 2] .. '\\t' .. ARGV[a + 3] .. '\\t' .. ARGV[a + 6])
      redis.call('LTRIM', hist, 0, hist_len - 1)
    end
    local w = tonumber(ARGV[a + 7])
    if w > 0 then redis.call('ZINCRBY', KEYS[3], w, ARGV[a + 1]) end
    kept = kept + 1
  end
end
return kept
"""


@functools.lru_cache(maxsize=65536)
def erased_tag(user: str) -> str:
    """What the datastore keeps of an erased user: a hash, so that erasure leaves no id behind."""
    return hashlib.sha256(f"nr-erased:{user}".encode()).hexdigest()[:32]


def history_key(user: str) -> str:
    return HISTORY.format(user=user)


def index_key(user: str) -> str:
    return USER_INDEX.format(user=user)


def trending_weight(event: Event) -> float:
    """An event's confidence when it happens (recency decays it later, in training)."""
    return event_weight(event.kind, event.ts, event.ts, event.qty)


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
    """Appends events and reads them back in order.

    Args:
        weight: what an event adds to its product's trending score.
    """

    def __init__(self, redis: aredis.Redis, weight: Weight = trending_weight) -> None:
        self.redis = redis
        self.weight = weight
        self._append = redis.register_script(_APPEND)

    async def append(self, events: Iterable[Event], batch: int = 500) -> int:
        """Append events in order, refusing users in the erased set; returns how many
        were written. Each batch is one atomic store script."""
        count = 0
        keys: list[str] = []
        args: list[Any] = []
        for event in events:
            keys += [index_key(event.user), history_key(event.user)]
            args += [event.user, event.sku, event.kind, f"{event.ts:.3f}",
                     event.session_id or "", event.store_id or "", str(event.qty),
                     repr(self.weight(event)), erased_tag(event.user)]
            if len(keys) >= 2 * batch:
                count += await self._run(keys, args)
                keys, args = [], []
        if keys:
            count += await self._run(keys, args)
        return count

    async def _run(self, keys: list[str], args: list[Any]) -> int:
        return int(await self._append(keys=[LOG, ERASED, TRENDING, *keys],
                                      args=[HISTORY_LEN, *args]))

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

    async def delete_users(self, users: set[str], chunk: int = 1000) -> int:
        """Delete every event of ``users`` from the log (erasure) through their indexes, so
        the cost follows their own events, not the size of the log; returns how many."""
        deleted = 0
        for user in sorted(users):
            key = index_key(user)
            while True:
                ids: Any = await self.redis.lrange(key, 0, chunk - 1)
                if not ids:
                    break
                deleted += int(await self.redis.xdel(LOG, *ids))
                await self.redis.ltrim(key, len(ids), -1)
            await self.redis.delete(key)
        return deleted


def parse_history(raw: Sequence[bytes | str]) -> History:
    """A user's recent events as read from their history list, newest first."""
    out = []
    for line in raw:
        sku, kind, ts, qty = (line.decode() if isinstance(line, bytes) else line).split("\t")
        out.append((sku, kind, float(ts), int(qty)))
    return out
