"""What reaches a process from the datastore's pub/sub: session events for its rooms,
personal messages for its users and screens, and catching up after a lost subscription."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

from live.errors import STORE_ERRORS, log_store_error
from live.hub.keys import SCREEN_CHANNEL, USER_CHANNEL
from live.hub.rooms import (
    CLOSE_RESYNC,
    PersonalState,
    Room,
)
from live.hub.sessions import Sessions
from live.protocol.messages import (
    CLOSE_POLICY,
)
from live.protocol.states import (
    Arrival,
    classify_arrival,
)
from live.writers.base import Conn

log = logging.getLogger("newretail.live")


class Subscriber:
    """The hub's listening side (a part of ``Hub``, which sets these attributes)."""

    sessions: Sessions
    rooms: dict[str, Room]
    by_user: dict[str, set[Conn]]
    screens: dict[str, set[Conn]]
    personal_parts: list[PersonalState]
    erased_among: Callable[[Sequence[str]], Awaitable[set[str]]] | None
    _pubsub: Any
    _subscribed: dict[str, asyncio.Event]
    _listening_to_users: bool
    _resync: asyncio.Task[None] | None

    async def _listen(self) -> None:
        while True:
            try:
                msg = await self._pubsub.get_message(ignore_subscribe_messages=False,
                                                     timeout=1.0)
                if msg is None:
                    continue
                name = msg["channel"].decode()
                kind = msg["type"]
                if kind == "subscribe" or kind == "ssubscribe":
                    # The client resubscribes by itself after the datastore dropped it (quietly,
                    # when it reconnects at once): what was published in between is lost.
                    self._subscribed.setdefault(name, asyncio.Event()).set()
                    if name == USER_CHANNEL:
                        if self._listening_to_users and self._resync is None:
                            log.warning("resubscribed to personal messages; sending %d "
                                        "connected users their state again", len(self.by_user))
                            self._resync = asyncio.create_task(self._resync_personal())
                        self._listening_to_users = True
                    elif name != SCREEN_CHANNEL:
                        await self._catch_up(name)
                elif kind == "message" or kind == "smessage":
                    await self._on_message(name, msg["data"])
            except asyncio.CancelledError:
                raise
            except STORE_ERRORS as exc:
                # The datastore went away: the client resubscribes when it reconnects, and
                # each session then catches up on what was published in between.
                log_store_error(exc, "hub listener")
                await asyncio.sleep(0.5)
            except Exception:
                log.exception("hub listener failed; reconnecting")
                await asyncio.sleep(0.5)

    async def _resync_personal(self) -> None:
        """Send each connected user their personal state again; close the connections of
        users erased meanwhile (the erasure's close went out while this process was not
        listening)."""
        try:
            users = [u for u, conns in self.by_user.items() if conns]
            erased = await self.erased_among(users) if self.erased_among and users else set()
            for user in users:
                if user in erased:
                    for conn in list(self.by_user.get(user, ())):
                        conn.close(CLOSE_POLICY, "erased")
                    continue
                for provider in self.personal_parts:
                    message = await provider(user)
                    if message is not None:
                        self._send_local(self.by_user, user, message)
        except STORE_ERRORS as exc:  # down again: the next resubscription starts over
            log_store_error(exc, "personal state after an outage")
        except Exception:
            log.exception("sending personal state after an outage failed")
        finally:
            self._resync = None

    @staticmethod
    def _send_local(by: dict[str, set[Conn]], to: str, message: dict[str, Any]) -> None:
        """``message`` to every connection here of user (or screen) ``to``."""
        for conn in list(by.get(to, ())):
            conn.send_message(message)

    async def _catch_up(self, name: str) -> None:
        """Deliver the events a session got while this process was not subscribed (nothing
        on the first subscription: the room is not ready yet)."""
        sid = name.rsplit(":", 1)[1].strip("{}")
        room = self.rooms.get(sid)
        if room is not None and room.ready.is_set():
            current = await self.sessions.current_seq(sid)
            if current > room.last_seq:
                await self._fill(room, current)

    async def _on_message(self, name: str, data: bytes) -> None:
        if name == USER_CHANNEL or name == SCREEN_CHANNEL:
            body = orjson.loads(data)
            by = self.by_user if name == USER_CHANNEL else self.screens
            if "many" in body:
                for user, message in body["many"]:
                    self._send_local(by, user, message)
            elif "close" in body:
                for conn in list(by.get(body["to"], ())):
                    conn.close(*body["close"])
            else:
                self._send_local(by, body["to"], body["m"])
            return
        sid = name.rsplit(":", 1)[1].strip("{}")
        room = self.rooms.get(sid)
        if room is None:
            return
        seq = int(orjson.loads(data)["seq"])
        arrival = classify_arrival(room.last_seq, seq)
        if arrival is Arrival.OLD:
            return
        if arrival is Arrival.GAP:
            await self._fill(room, seq - 1)
        room.deliver(seq, data)

    async def _fill(self, room: Room, upto: int) -> None:
        """Deliver events ``room.last_seq + 1 .. upto`` from history; when history no
        longer holds them all, the room's viewers are told to resume (close 4002)."""
        sid = room.sid
        missed = await self.sessions.history_range(sid, room.last_seq + 1, upto)
        if [s for s, _ in missed] != list(range(room.last_seq + 1, upto + 1)):
            log.warning("session %s: events %d..%d lost to this process; resyncing",
                        sid, room.last_seq + 1, upto)
            for conn in [*room.live.values(), *room.joining.values()]:
                conn.close(CLOSE_RESYNC, "resync")
        for s, d in missed:
            room.deliver(s, d)
