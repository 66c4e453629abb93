"""The live hub of one web process: rooms of local connections per session, fan-out of
session events arriving from the datastore, personal messages, ops and snapshots.

Events travel through the datastore (``Sessions.publish``: history stream + pub/sub); each
process that has viewers of a session subscribes to its channel, encodes each event once
per format and writes the same frame bytes to every local viewer, through the room's
writer (``live/outbox.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
import redis.asyncio as aredis

from identity.errors import IdentityError
from live.access import check_session_host
from live.errors import STORE_ERRORS, LiveError, log_store_error, store_unavailable
from live.hub.keys import SCREEN_CHANNEL, USER_CHANNEL, channel
from live.hub.presence import Presence
from live.hub.rooms import (
    HubConfig,
    Op,
    OpContext,
    OpHandler,
    PersonalState,
    Refresher,
    Room,
    SnapshotProvider,
    cancel_and_wait,
    frame_for,
)
from live.hub.sessions import Sessions
from live.hub.subscriber import Subscriber
from live.protocol.messages import (
    HOST_ROLES,
    ClientOp,
    ConnId,
    Since,
    check_role,
)
from live.protocol.states import (
    Coalescer,
    GcPlan,
    ReplayKind,
    coalesced_events,
    plan_replay,
    replay_complete,
)
from live.uvicorn.rawconn import RawConn
from live.writers.base import Conn

log = logging.getLogger("newretail.live")


# Personal messages per publish in ``send_to_users`` (a few hundred KB at most).
PERSONAL_BATCH = 500


class Hub(Subscriber, Presence):
    """The hub of this process (see the module docstring). Call ``start`` before use."""

    def __init__(
        self, redis: aredis.Redis, config: HubConfig | None = None,
        erased_among: Callable[[Sequence[str]], Awaitable[set[str]]] | None = None,
    ) -> None:
        self.redis = redis
        self.config = config or HubConfig()
        self.sessions = Sessions(redis, self.config.history, self.config.pubsub)
        self.proc = secrets.token_hex(6)
        self.ops: dict[str, Op] = {}
        self.snapshot_parts: dict[str, SnapshotProvider] = {}
        self.refreshers: dict[str, Refresher] = {}
        self.rooms: dict[str, Room] = {}
        self.by_user: dict[str, set[Conn]] = {}
        self.screens: dict[str, set[Conn]] = {}
        self.coalescer = Coalescer(self.config.coalesce_interval)
        self.gc_plan = GcPlan()
        self._pubsub: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ids = itertools.count(1)
        self._subscribed: dict[str, asyncio.Event] = {}
        # Personal messages published while the subscription was broken are lost: once it is
        # back, each connected user is sent their state again (``add_personal_state``).
        self.personal_parts: list[PersonalState] = []
        # Which of these users were erased (identity's tombstones): a resync drops them.
        self.erased_among = erased_among
        self._listening_to_users = False
        self._resync: asyncio.Task[None] | None = None
        self._viewer_totals: dict[str, int] = {}
        self._viewers_due = 0.0
        self._rooms_lock = asyncio.Lock()
        # Joins read the datastore a few times each; a burst of them must not exhaust the
        # client's connection pool.
        self._join_gate = asyncio.Semaphore(64)

    # Public API ---------------------------------------------------------------------

    def register_op(self, op: str, handler: OpHandler, roles: frozenset[str]) -> None:
        """Serve client op ``op`` with ``handler`` for the given roles."""
        if op == "hello":
            raise ValueError("hello is the hub's own")
        self.ops[op] = Op(handler, frozenset(roles), frozenset(roles) <= HOST_ROLES)

    def add_snapshot_part(self, name: str, provider: SnapshotProvider) -> None:
        """Put ``await provider(session_id, user)`` under ``state[name]`` in each welcome."""
        self.snapshot_parts[name] = provider

    async def publish(self, session_id: str, event: dict[str, Any]) -> int:
        """A session event to every viewer on every process, in seq order; returns its seq."""
        return await self.sessions.publish(session_id, event)

    def add_personal_state(self, provider: PersonalState) -> None:
        """After this process missed personal messages (its subscription broke with the
        store), ``await provider(user)`` is sent to every connection of each connected user
        (``None``: nothing), so a cart changed meanwhile on another device shows again."""
        self.personal_parts.append(provider)

    def add_refresher(self, kind: str, refresh: Refresher) -> None:
        """Coalesced ``kind`` values are re-read with ``await refresh(session_id, values)``
        when flushed: values staged by several processes may land out of order, and the
        flush must carry the figures as they are, not the last one staged."""
        self.refreshers[kind] = refresh

    async def publish_with_figures(
        self, session_id: str, event: dict[str, Any], kind: str, keys: Sequence[str],
    ) -> int:
        """``event``, and right behind it the ``kind`` figures of ``keys`` as they are now
        (read by the kind's refresher) where they differ from those last shown: a sale's
        end and its final stock reach each viewer in one write. Returns the event's seq."""
        figures: list[dict[str, Any]] = []
        if kind in self.refreshers and keys:
            figures = coalesced_events(
                kind, await self._unshown_now(session_id, kind, dict.fromkeys(keys)))
        return await self.sessions.publish_many(session_id, [event, *figures]) - len(figures)


    async def send_to_user(self, user: str, message: dict[str, Any]) -> None:
        """A personal message to every connection of ``user`` on every process."""
        await self.redis.publish(USER_CHANNEL, orjson.dumps({"to": user, "m": message}))

    async def send_to_users(self, messages: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Personal messages, each to every connection of its user, in one publish per
        ``PERSONAL_BATCH``: a batch of orders tells its buyers' devices at once, and every
        process reads one message instead of one per buyer."""
        for start in range(0, len(messages), PERSONAL_BATCH):
            part = messages[start:start + PERSONAL_BATCH]
            await self.redis.publish(USER_CHANNEL, orjson.dumps({"many": part}))

    async def close_user(self, user: str, code: int, reason: str) -> None:
        """Close every connection of ``user`` on every process (an erased member's too)."""
        for conn in list(self.by_user.get(user, ())):
            conn.close(code, reason)
        await self.redis.publish(USER_CHANNEL, orjson.dumps(
            {"to": user, "close": [code, reason]}))

    async def send_to_screen(self, screen_id: str, message: dict[str, Any]) -> None:
        """A personal message to every connection of store screen ``screen_id``."""
        await self.redis.publish(SCREEN_CHANNEL, orjson.dumps({"to": screen_id, "m": message}))

    async def session_products(self, session_id: str) -> list[str]:
        """The session's lineup (empty for an unknown session)."""
        try:
            return list((await self.sessions.get(session_id)).products)
        except LiveError:
            return []

    async def pinned_skus(self, session_id: str) -> list[str]:
        return [str(p["sku"]) for p in await self.sessions.pins(session_id)]


    # Lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        log.info("session channels: %s pub/sub",
                 "sharded" if await self.sessions.sharded() else "plain")
        self._pubsub = self.redis.pubsub()
        await self._pubsub.subscribe(USER_CHANNEL, SCREEN_CHANNEL)
        self._tasks = [
            asyncio.create_task(self._listen(), name="hub-listen"),
            asyncio.create_task(self._flush_loop(), name="hub-flush"),
            asyncio.create_task(self._viewers_loop(), name="hub-viewers"),
        ]

    async def stop(self) -> None:
        writers = [r.writer for r in self.rooms.values() if r.writer is not None]
        await cancel_and_wait([*self._tasks, *writers, *([self._resync] if self._resync else [])])
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()

    def new_conn_id(self) -> ConnId:
        return ConnId(f"{self.proc}-{next(self._ids)}")

    async def run_op(self, conn: Conn, op: ClientOp) -> None:
        """Check the op and the caller's role, run its handler, send its reply and ack."""
        if op.op == "hello":
            raise LiveError("bad_frame", "already joined: hello comes once")
        spec = self.ops.get(op.op)
        if spec is None:
            raise LiveError("unknown_op", f"unknown op {op.op!r}")
        check_role(op.op, spec.roles, conn.role)
        if spec.hosts_only:
            check_session_host(op.op, conn.role, conn.user, conn.session_host)
        ctx = OpContext(conn.session_id, conn.user, conn.role, conn.member_id, conn.id)
        try:
            reply = await spec.handler(ctx, op.payload)
        except (LiveError, IdentityError):
            raise
        except STORE_ERRORS as exc:
            log_store_error(exc, f"op {op.op}")
            raise store_unavailable() from None
        except Exception:
            log.exception("conn %s: op %s failed", conn.id, op.op)
            raise LiveError("internal", f"{op.op} failed on the server", 500) from None
        if op.ref is None:
            if reply is not None:
                conn.send_message(reply)
        elif reply is None:
            conn.send_message({"type": "ack", "ref": op.ref})
        else:
            conn.send_messages(reply, {"type": "ack", "ref": op.ref})

    # Joining and leaving ---------------------------------------------------------------

    async def _room(self, sid: str) -> Room:
        room = self.rooms.get(sid)
        if room is not None and room.ready.is_set():
            return room
        async with self._rooms_lock:
            room = self.rooms.get(sid)
            if room is None:
                room = self.rooms[sid] = Room(sid, self.config.fanout_chunk)
                event = self._subscribed[channel(sid)] = asyncio.Event()
                try:
                    if await self.sessions.sharded():
                        await self._pubsub.ssubscribe(channel(sid))
                    else:
                        await self._pubsub.subscribe(channel(sid))
                    await asyncio.wait_for(event.wait(), 10)
                    room.last_seq = max(room.last_seq, await self.sessions.current_seq(sid))
                except BaseException:
                    del self.rooms[sid]
                    raise
                room.ready.set()
        return room

    async def join(self, conn: Conn, sid: str, since: Since | None) -> None:
        """Welcome ``conn`` to session ``sid``: snapshot, replay of what it missed (or
        ``recovered: false``), then live events with no gap and no repeat."""
        async with self._join_gate:
            await self.sessions.get(sid)
            room = await self._room(sid)
            room.joining[conn.id] = conn
            room.arrived.add(conn.user)
            room.departed.discard(conn.user)
            self.by_user.setdefault(conn.user, set()).add(conn)
            snap = await self.sessions.snapshot(sid)
            info, current = snap.info, snap.seq
            conn.session_host = info.host
            plan = plan_replay(since, info.epoch, current, snap.oldest)
            replay: list[tuple[int, bytes]] = []
            if plan.kind is ReplayKind.REPLAY:
                replay = await self.sessions.history_range(sid, plan.first, plan.last)
                if not replay_complete(plan, [seq for seq, _ in replay]):
                    replay = []
                    plan = plan_replay(Since("", 0), info.epoch, current, None)
        state = {
            **info.public(),
            "pinned": snap.pins,
            "chat": snap.chat,
            "viewers": self._viewer_totals.get(sid, room.audience()),
        }
        # the parts are independent reads: one wait for all of them
        parts = list(self.snapshot_parts.items())
        answers = await asyncio.gather(*(provider(sid, conn.user) for _, provider in parts),
                                       return_exceptions=True)
        for (name, _), answer in zip(parts, answers, strict=True):
            if isinstance(answer, Exception):
                log.error("conn %s: snapshot part %s failed", conn.id, name, exc_info=answer)
                answer = None
            elif isinstance(answer, BaseException):
                raise answer
            state[name] = answer
        welcome: dict[str, Any] = {
            "type": "welcome", "epoch": info.epoch, "seq": current, "role": conn.role,
            "state": state,
        }
        if since is not None:
            welcome["recovered"] = plan.kind is ReplayKind.REPLAY
        conn.send_message(welcome)
        for _, data in replay:
            conn.push(frame_for(data, conn.fmt))
        conn.after_seq = current
        conn.joined()
        if isinstance(conn, RawConn):
            # Only a server process's own sockets: an app run inside another program
            # (a test client) leaves that program's collector alone.
            self.gc_plan.joined(time.monotonic())
        room.promote()

    def leave(self, conn: Conn) -> None:
        if conn.after_seq >= 0 and isinstance(conn, RawConn):
            self.gc_plan.left()
        room = self.rooms.get(conn.session_id)
        if room is not None:
            room.live.pop(conn.id, None)
            room.joining.pop(conn.id, None)
            if not any(c.user == conn.user for c in self.by_user.get(conn.user, ())
                       if c is not conn and c.session_id == conn.session_id):
                room.departed.add(conn.user)
                room.arrived.discard(conn.user)
        users = self.by_user.get(conn.user)
        if users is not None:
            users.discard(conn)
            if not users:
                del self.by_user[conn.user]

    def add_screen(self, screen_id: str, conn: Conn) -> None:
        self.screens.setdefault(screen_id, set()).add(conn)

    def remove_screen(self, screen_id: str, conn: Conn) -> None:
        conns = self.screens.get(screen_id)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self.screens[screen_id]


    # Coalescing and viewer counts ---------------------------------------------------------

