"""Store screens: a member's greeting and offers after a check-in, then back to idle.

Identity runs ``ScreenGreeter.on_checkin`` after a member code is accepted at a screen;
the greeter composes that member's offers in stock at the screen's store and pushes
``{"type": "member_offers", "greeting", "tier", "offers"}`` to the screen over its
WebSocket, and ``{"type": "idle", "offers"}`` (the store's trending offers) once it clears.
Nothing sent to a screen names the member: no id, no phone, first name only.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any, Protocol

import redis.asyncio as aredis

from identity.members import Members
from live.offers.keys import showing_key
from live.offers.service import OfferService

log = logging.getLogger("newretail.live")

CLEAR_AFTER = 60.0
SCREEN_OFFERS = 8

# Deletes the screen's "showing" mark only when it is still ours: a later check-in at
# the same screen (on any process) owns the screen until its own clear.
_CLEAR_IF_OURS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


class ScreenSender(Protocol):
    async def send_to_screen(self, screen_id: str, message: dict[str, Any]) -> None: ...


class ScreenGreeter:
    """Greets members at store screens (see the module docstring).

    Args:
        redis: the datastore (the mark of which check-in a screen shows).
        offers: composes offers in stock at a store.
        members: first name and tier of the member.
        sender: the hub (``send_to_screen``).
        clear_after: seconds a member's offers stay on the screen.
    """

    def __init__(self, redis: aredis.Redis, offers: OfferService, members: Members,
                 sender: ScreenSender, clear_after: float = CLEAR_AFTER) -> None:
        self.redis = redis
        self.offers = offers
        self.members = members
        self.sender = sender
        self.clear_after = clear_after
        self._clear_if_ours = redis.register_script(_CLEAR_IF_OURS)
        self._tasks: set[asyncio.Task[None]] = set()

    async def on_checkin(self, member_id: str, screen_id: str, store_id: str | None) -> None:
        """The ``on_checkin`` hook: show the member's offers, clear them later."""
        member = await self.members.get(member_id)
        # Offers are offers: products the member did not just buy (the discovery slate),
        # in stock in this store, at the member's price; the full slate only when the
        # member bought everything there is here.
        body = await self.offers.offers(member_id, SCREEN_OFFERS, store_id, None,
                                        slate="discover")
        if not body["offers"]:
            body = await self.offers.offers(member_id, SCREEN_OFFERS, store_id, None)
        mark = secrets.token_hex(8)
        await self.redis.set(showing_key(screen_id), mark,
                             px=int((self.clear_after + 60) * 1000))
        await self.sender.send_to_screen(screen_id, {
            "type": "member_offers", "greeting": member.greeting,
            "tier": member.tier, "offers": body["offers"],
        })
        # A timer rather than a sleeping task: one pending at shutdown is simply dropped.
        asyncio.get_running_loop().call_later(
            self.clear_after, self._start_clear, screen_id, store_id, mark)

    async def idle_message(self, store_id: str | None) -> dict[str, Any]:
        """What an idle screen shows: the store's trending offers, for nobody in particular."""
        body = await self.offers.offers(None, SCREEN_OFFERS, store_id, None)
        return {"type": "idle", "offers": body["offers"]}

    def _start_clear(self, screen_id: str, store_id: str | None, mark: str) -> None:
        task = asyncio.create_task(self._clear(screen_id, store_id, mark))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _clear(self, screen_id: str, store_id: str | None, mark: str) -> None:
        try:
            if not await self._clear_if_ours(keys=[showing_key(screen_id)], args=[mark]):
                return
            await self.sender.send_to_screen(screen_id, await self.idle_message(store_id))
        except Exception:  # the screen also clears itself if this message never comes
            log.exception("clearing screen %s failed", screen_id)

