"""Live sessions in the datastore: the session record, its ordered history, pins, chat, mutes,
coalesced values, viewer counts and presence. Keys live under ``nr:live:``.

Publishing is one script: the next ``seq``, the history entry (stream id ``<seq>-0``, so
the stream itself says which seqs it still holds) and the pub/sub message, atomically, so
every process sees events in seq order. Per-session keys and the session's channel carry
the session id as a hash tag (``{sid}``), so a session's scripts, transactions and
messages stay on one Redis Cluster slot. Session channels use sharded pub/sub
(``SPUBLISH``/``SSUBSCRIBE``, Redis 7+ and Valkey) when the server offers it: in a cluster
a message then stays on the shard that owns the session instead of reaching every node.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aredis
from redis.exceptions import ResponseError

from live.db.client import text
from live.errors import LiveError, not_found
from live.hub import keys
from live.hub.keys import PROBE_CHANNEL, SESSIONS, channel, history_key, seq_key, session_key
from live.hub.scripts import DRAIN, PIN, PUBLISH, REMOVE_BY_FIELD, UNPIN, UNSHOWN
from live.protocol.messages import MAX_PINS, RECENT_CHAT
from live.protocol.states import SessionState

PRESENCE_CHUNK = 1000
PUBSUB_MODES = ("auto", "sharded", "plain")


# How long a session's last shown figures are remembered without a flush.
SHOWN_TTL = 86400


def _rest(event: dict[str, Any]) -> str:
    """An event's JSON after ``{``, for the publish script to put its seq and ts first."""
    body = {k: v for k, v in event.items() if k not in ("seq", "ts")}
    return orjson.dumps(body)[1:].decode()


@dataclass(frozen=True)
class SessionInfo:
    id: str
    title: str
    products: list[str]
    video_url: str | None
    host: str
    state: SessionState
    epoch: str
    created_at: float
    starts_at: float | None = None
    teaser: str = ""
    started_at: float | None = None
    ended_at: float | None = None

    def require_live(self) -> SessionInfo:
        """This session, or ``session_ended`` when it is over (``session_not_started``
        while it is only scheduled)."""
        if self.state is SessionState.SCHEDULED:
            raise LiveError("session_not_started", "the session has not started yet", 409)
        if self.state is not SessionState.LIVE:
            raise LiveError("session_ended", "the session has ended", 409)
        return self

    def public(self) -> dict[str, Any]:
        return {
            "session_id": self.id, "title": self.title, "products": self.products,
            "video_url": self.video_url, "host": self.host, "status": self.state.value,
            "created_at": self.created_at, "starts_at": self.starts_at,
            "teaser": self.teaser, "started_at": self.started_at, "ended_at": self.ended_at,
            "share_url": f"/live/{self.id}",
        }


@dataclass(frozen=True)
class Snapshot:
    info: SessionInfo
    seq: int
    oldest: int | None
    pins: list[dict[str, Any]]
    chat: list[dict[str, Any]]


def _when(raw: str | None) -> float | None:
    return float(raw) if raw else None


def _info(sid: str, raw: dict[Any, Any]) -> SessionInfo:
    d = {text(k): text(v) for k, v in raw.items()}
    return SessionInfo(
        sid, d["title"], orjson.loads(d["products"]), d["video_url"] or None, d["host"],
        SessionState(d["state"]), d["epoch"], float(d["created_at"]),
        _when(d.get("starts_at")), d.get("teaser", ""),
        # sessions made before scheduling started live when they were made
        _when(d.get("started_at")) or (float(d["created_at"]) if d["state"] != "scheduled"
                                       else None),
        _when(d.get("ended_at")),
    )


class Sessions:
    """Store access for sessions; every method is one or two round trips.

    Args:
        redis: the shared client.
        history: how many events each session keeps for resume.
        pubsub: ``auto`` (sharded pub/sub when the server has it), ``sharded`` or
            ``plain``; every process of a deployment must end up with the same mode.
    """

    def __init__(self, redis: aredis.Redis, history: int = 1000, pubsub: str = "auto") -> None:
        if pubsub not in PUBSUB_MODES:
            raise ValueError(f"pubsub must be one of {', '.join(PUBSUB_MODES)}, not {pubsub!r}")
        self.redis = redis
        self.history = history
        self._sharded: bool | None = None if pubsub == "auto" else pubsub == "sharded"
        self._publish = redis.register_script(PUBLISH)
        self._pin = redis.register_script(PIN)
        self._unpin = redis.register_script(UNPIN)
        self._remove = redis.register_script(REMOVE_BY_FIELD)
        self._drain = redis.register_script(DRAIN)
        self._unshown = redis.register_script(UNSHOWN)

    async def create(
        self, title: str, products: list[str], video_url: str | None, host: str,
        starts_at: float | None = None, teaser: str = "",
    ) -> SessionInfo:
        """A session, live at once, or scheduled for ``starts_at`` (its host starts it)."""
        sid = "s" + secrets.token_hex(6)
        now = time.time()
        state = SessionState.LIVE if starts_at is None else SessionState.SCHEDULED
        info = SessionInfo(sid, title, products, video_url, host, state,
                           secrets.token_hex(6), now, starts_at, teaser,
                           now if state is SessionState.LIVE else None)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(session_key(sid), mapping={
                "title": title, "products": orjson.dumps(products), "video_url": video_url or "",
                "host": host, "state": info.state.value, "epoch": info.epoch,
                "created_at": repr(now), "teaser": teaser,
                "starts_at": repr(starts_at) if starts_at is not None else "",
                "started_at": repr(now) if state is SessionState.LIVE else "",
            })
            if starts_at is None:
                pipe.zadd(SESSIONS, {sid: now})
            else:
                pipe.zadd(keys.SCHEDULED, {sid: starts_at})
            await pipe.execute()
        return info

    async def get(self, sid: str) -> SessionInfo:
        raw: Any = await self.redis.hgetall(session_key(sid))
        if not raw:
            raise not_found(f"session {sid}")
        return _info(sid, raw)

    async def is_live(self, sid: str) -> bool:
        """Whether the session exists and is live (the media server asks before a publish)."""
        try:
            (await self.get(sid)).require_live()
        except LiveError:
            return False
        return True

    async def _listed(self, ids: Any, state: SessionState) -> list[SessionInfo]:
        found = []
        for sid in ids:
            try:
                found.append(await self.get(text(sid)))
            except LiveError:
                continue
        return [s for s in found if s.state is state]

    async def live(self, limit: int = 100) -> list[SessionInfo]:
        """Live sessions, newest first."""
        ids: Any = await self.redis.zrevrange(SESSIONS, 0, limit - 1)
        return await self._listed(ids, SessionState.LIVE)

    async def scheduled(self, limit: int = 100) -> list[SessionInfo]:
        """Scheduled sessions, soonest first."""
        ids: Any = await self.redis.zrange(keys.SCHEDULED, 0, limit - 1)
        return await self._listed(ids, SessionState.SCHEDULED)

    async def replays(self, limit: int = 100) -> list[SessionInfo]:
        """Ended sessions (their recording is the replay), the latest ended first."""
        ids: Any = await self.redis.zrevrange(keys.ENDED, 0, limit - 1)
        return await self._listed(ids, SessionState.ENDED)

    async def start(self, sid: str) -> SessionInfo:
        """A scheduled session goes live now."""
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(session_key(sid), mapping={"state": SessionState.LIVE.value,
                                                 "started_at": repr(now)})
            pipe.zrem(keys.SCHEDULED, sid)
            pipe.zadd(SESSIONS, {sid: now})
            await pipe.execute()
        return await self.get(sid)

    async def end(self, sid: str) -> None:
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(session_key(sid), mapping={"state": SessionState.ENDED.value,
                                                 "ended_at": repr(now)})
            pipe.zrem(SESSIONS, sid)
            pipe.zrem(keys.SCHEDULED, sid)
            pipe.zadd(keys.ENDED, {sid: now})
            await pipe.execute()

    async def remind(self, sid: str, member_id: str, phone: str) -> None:
        """Text ``phone`` (the member's) when this session starts."""
        await self.redis.hset(keys.reminders(sid), member_id, phone)

    async def take_reminders(self, sid: str) -> dict[str, str]:
        """The reminders of a session (member id -> phone), taken once."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(keys.reminders(sid))
            pipe.delete(keys.reminders(sid))
            raw, _ = await pipe.execute()
        return {text(k): text(v) for k, v in raw.items()}

    async def reminded(self, sid: str, member_id: str) -> bool:
        found: Any = await self.redis.hexists(keys.reminders(sid), member_id)
        return bool(found)

    async def viewer_total(self, sid: str) -> int:
        """Viewers of a session now, over the processes that reported lately."""
        raw: Any = await self.redis.hgetall(keys.viewers(sid))
        now_ms = int(time.time() * 1000)
        total = 0
        for value in raw.values():
            n, _, exp = text(value).partition(":")
            if int(exp) > now_ms:
                total += int(n)
        return total

    async def sharded(self) -> bool:
        """Whether session channels use sharded pub/sub; asked of the server once."""
        if self._sharded is None:
            try:
                await self.redis.spublish(PROBE_CHANNEL, b"")
                self._sharded = True
            except ResponseError:  # unknown command: a server older than Redis 7
                self._sharded = False
        return self._sharded

    async def publish(self, sid: str, event: dict[str, Any]) -> int:
        """Append ``event`` to the session's history with the next seq and wake every
        process; returns the seq."""
        if not isinstance(event.get("type"), str):
            raise ValueError("a session event needs a type")
        seq: Any = await self._publish(keys=[seq_key(sid), history_key(sid)],
                                       args=await self._event_args(sid, event))
        return int(seq)

    async def publish_many(self, sid: str, events: Sequence[dict[str, Any]]) -> int:
        """``publish`` for several events at once, with consecutive seqs; the last seq."""
        if not events or any(not isinstance(e.get("type"), str) for e in events):
            raise ValueError("publish_many needs events, each with a type")
        seq: Any = await self._publish(
            keys=[seq_key(sid), history_key(sid)],
            args=[*await self._event_args(sid, events[0]), *map(_rest, events[1:])])
        return int(seq)

    async def snapshot(self, sid: str) -> Snapshot:
        """The session as of one instant: record, last seq, oldest kept seq, pins, chat."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(session_key(sid))
            pipe.get(seq_key(sid))
            pipe.xrange(history_key(sid), count=1)
            pipe.lrange(keys.pins(sid), 0, -1)
            pipe.lrange(keys.chat(sid), 0, -1)
            raw, seq, first, pins, chat = await pipe.execute()
        if not raw:
            raise not_found(f"session {sid}")
        return Snapshot(
            info=_info(sid, raw), seq=int(seq) if seq else 0,
            oldest=int(text(first[0][0]).split("-")[0]) if first else None,
            pins=[orjson.loads(p) for p in pins], chat=[orjson.loads(c) for c in chat],
        )

    async def current_seq(self, sid: str) -> int:
        raw: Any = await self.redis.get(seq_key(sid))
        return int(raw) if raw else 0

    async def oldest_kept(self, sid: str) -> int | None:
        first: Any = await self.redis.xrange(history_key(sid), count=1)
        return int(text(first[0][0]).split("-")[0]) if first else None

    async def history_range(self, sid: str, first: int, last: int) -> list[tuple[int, bytes]]:
        """Events with seq in [first, last] still in history, as (seq, JSON bytes)."""
        if last < first:
            return []
        rows: Any = await self.redis.xrange(history_key(sid), f"{first}-0", f"{last}-0")
        out = []
        for entry_id, fields in rows:
            out.append((int(text(entry_id).split("-")[0]), bytes(fields[b"d"])))
        return out

    # Pins and chat --------------------------------------------------------------------

    async def pins(self, sid: str) -> list[dict[str, Any]]:
        raw: Any = await self.redis.lrange(keys.pins(sid), 0, -1)
        return [orjson.loads(item) for item in raw]

    async def _event_args(self, sid: str, event: dict[str, Any]) -> list[Any]:
        return [_rest(event), int(time.time() * 1000), self.history,
                channel(sid), "SPUBLISH" if await self.sharded() else "PUBLISH"]

    def _event_keys(self, sid: str) -> list[str]:
        return [seq_key(sid), history_key(sid), session_key(sid), keys.pins(sid)]

    async def pin(self, sid: str, product: dict[str, Any]) -> int:
        """Pin ``product`` and publish ``pinned``; returns the event's seq."""
        event = {"type": "pinned", "sku": product["sku"], "product": product}
        res: Any = await self._pin(
            keys=self._event_keys(sid),
            args=[*await self._event_args(sid, event), orjson.dumps(product), product["sku"],
                  MAX_PINS],
        )
        if int(res) == -3:
            raise LiveError("session_ended", "the session has ended", 409)
        if int(res) == -2:
            raise LiveError("already_pinned", f"{product['sku']} is already pinned", 409)
        if int(res) == -1:
            raise LiveError("too_many_pins", f"at most {MAX_PINS} products can be pinned", 409)
        return int(res)

    async def unpin(self, sid: str, sku: str | None) -> int:
        """Unpin ``sku`` (the latest pin when ``None``) and publish ``unpinned``."""
        res: Any = await self._unpin(
            keys=self._event_keys(sid),
            args=[*await self._event_args(sid, {"type": "unpinned"}), sku or ""],
        )
        if int(res) == -3:
            raise LiveError("session_ended", "the session has ended", 409)
        if int(res) == -1:
            raise not_found(f"pinned product {sku}" if sku else "a pinned product")
        return int(res)

    async def add_chat(self, sid: str, message: dict[str, Any]) -> None:
        key = keys.chat(sid)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, orjson.dumps(message))
            pipe.ltrim(key, -RECENT_CHAT, -1)
            await pipe.execute()

    async def remove_chat(self, sid: str, chat_id: str) -> None:
        res: Any = await self._remove(keys=[keys.chat(sid)], args=["id", chat_id])
        if res is None:
            raise not_found(f"chat message {chat_id}")

    async def recent_chat(self, sid: str) -> list[dict[str, Any]]:
        raw: Any = await self.redis.lrange(keys.chat(sid), 0, -1)
        return [orjson.loads(item) for item in raw]

    async def mute(self, sid: str, user: str) -> None:
        await self.redis.sadd(keys.muted(sid), user)

    async def is_muted(self, sid: str, user: str) -> bool:
        res: Any = await self.redis.sismember(keys.muted(sid), user)
        return bool(res)

    async def within_rate(self, sid: str, user: str, limit: int, window: int) -> bool:
        """Count one action in the current window; ``False`` past ``limit``."""
        key = keys.chat_rate(sid, user, int(time.time()) // window)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, window * 2)
            count, _ = await pipe.execute()
        return int(count) <= limit

    async def forget_users(self, users: set[str]) -> list[tuple[str, str]]:
        """Erasure: the users' chat (recent list and history), mutes, rate counters and
        presence, in every session. Returns ``(session, chat id)`` of the chat removed.

        History entries are deleted outright: a client resuming across one gets
        ``recovered: false`` and the snapshot, never a replay with the text in it.
        """
        removed: list[tuple[str, str]] = []

        def theirs(raw: bytes) -> dict[str, Any] | None:
            msg = orjson.loads(raw)
            sender = msg.get("from") if isinstance(msg, dict) else None
            return msg if isinstance(sender, dict) and sender.get("id") in users else None

        async for key in self.redis.scan_iter(match=keys.chat("*"), count=500):
            chat: Any = await self.redis.lrange(key, 0, -1)
            for raw in chat:
                msg = theirs(raw)
                if msg is not None:
                    await self.redis.lrem(key, 0, raw)
                    removed.append((text(key)[len(keys.CHAT_PREFIX) + 1:-1], str(msg["id"])))
        async for key in self.redis.scan_iter(match=keys.history_key("*"), count=500):
            rows: Any = await self.redis.xrange(key)
            doomed = [eid for eid, f in rows if b'"from"' in f[b"d"] and theirs(f[b"d"])]
            if doomed:
                await self.redis.xdel(key, *doomed)
        async for key in self.redis.scan_iter(match=keys.muted("*"), count=500):
            await self.redis.srem(key, *users)
        async for key in self.redis.scan_iter(match=keys.present("*"), count=500):
            await self.redis.zrem(key, *users)
        async for key in self.redis.scan_iter(match=keys.reminders("*"), count=500):
            await self.redis.hdel(key, *users)
        for user in users:
            async for key in self.redis.scan_iter(match=keys.chat_rate_of(user), count=500):
                await self.redis.delete(key)
        return removed

    # Coalesced values, viewers, presence ---------------------------------------------

    async def stage(self, sid: str, kind: str, key: str, value: Any) -> None:
        """Keep the latest ``value`` for ``key`` (reactions add up) until the next flush."""
        pending = keys.pending(sid, kind)
        if kind == "reactions":
            await self.redis.hincrby(pending, key, int(value))
        else:
            await self.redis.hset(pending, key, orjson.dumps(value))

    async def drain(self, sid: str, kind: str, hold_ms: int) -> dict[str, Any] | None:
        """Take the staged values, unless another process holds this pair's flush (then
        ``None``); the caller holds it for ``hold_ms`` or until it calls ``flushed``."""
        res: Any = await self._drain(
            keys=[keys.pending(sid, kind), keys.flush_lock(sid, kind)],
            args=[hold_ms],
        )
        if res is None:
            return None
        return {text(res[i]): orjson.loads(res[i + 1]) for i in range(0, len(res), 2)}

    async def unshown(self, sid: str, kind: str, values: dict[str, Any]) -> dict[str, Any]:
        """The figures among ``values`` that differ from those last shown for this pair
        (by any process), now recorded as shown. For absolute figures (stock), not sums:
        a figure that did not change since it was shown is not sent to everyone again."""
        if not values:
            return {}
        args: list[Any] = [SHOWN_TTL]
        for key, value in values.items():
            args += [key, orjson.dumps(value, option=orjson.OPT_SORT_KEYS)]
        raw: Any = await self._unshown(keys=[keys.shown(sid, kind)], args=args)
        return {k: values[k] for k in map(text, raw)}

    async def flushed(self, sid: str, kind: str, interval_ms: int) -> None:
        """This pair's flush is published: the next one may start ``interval_ms`` from now,
        so two processes' flushes never overlap and their events keep their order."""
        await self.redis.pexpire(keys.flush_lock(sid, kind), interval_ms)

    async def report_viewers(
        self, counts: dict[str, int], proc: str, ttl: float
    ) -> dict[str, int]:
        """Write this process's count per session; return each session's total over the
        processes that reported within ``ttl``."""
        now_ms = int(time.time() * 1000)
        expires = now_ms + int(ttl * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid, local in counts.items():
                pipe.hset(keys.viewers(sid), proc, f"{local}:{expires}")
                pipe.expire(keys.viewers(sid), int(ttl) + 60)
                pipe.hgetall(keys.viewers(sid))
            replies = await pipe.execute()
        totals: dict[str, int] = {}
        for sid, fields in zip(counts, replies[2::3], strict=True):
            total = 0
            for value in fields.values():
                n, _, exp = text(value).partition(":")
                if int(exp) > now_ms:
                    total += int(n)
            totals[sid] = total
        return totals

    async def update_presence(
        self, sid: str, arrived: set[str], departed: set[str], ttl: float
    ) -> None:
        """Who is watching: arrivals (re)written with an expiry, departures removed,
        expired entries dropped; written in chunks so a large audience never blocks."""
        key = keys.present(sid)
        now_ms = int(time.time() * 1000)
        expires = now_ms + int(ttl * 1000)
        users = list(arrived)
        for i in range(0, len(users), PRESENCE_CHUNK):
            await self.redis.zadd(key, dict.fromkeys(users[i:i + PRESENCE_CHUNK], expires))
        if departed:
            await self.redis.zrem(key, *departed)
        await self.redis.zremrangebyscore(key, 0, now_ms)

    async def present(self, sid: str) -> list[str]:
        now_ms = int(time.time() * 1000)
        raw: Any = await self.redis.zrangebyscore(keys.present(sid), now_ms, "+inf")
        return [text(u) for u in raw]
