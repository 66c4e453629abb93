"""The session's own client ops: chat, reactions, pins, moderation and the end of it."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from identity.errors import IdentityError
from identity.members import Members
from live.errors import LiveError
from live.hub.hub import Hub
from live.hub.rooms import OpContext
from live.protocol.messages import (
    AUDIENCE_ROLES,
    CHAT_RATE,
    CHAT_ROLES,
    CLOSE_POLICY,
    HOST_ROLES,
    chat_name,
    chat_text,
    reaction_kind,
    require_str,
)
from live.protocol.states import SessionState, session_transition
from live.types import ProductSource


class SessionOps:
    """Registers ``chat``, ``react``, ``pin``, ``unpin``, ``chat.remove``, ``mute`` and
    ``end`` on the hub.

    Args:
        members: where chat names come from (a member's display name); without it
            every member chats under their ``friendly_label``.
    """

    def __init__(
        self, hub: Hub, catalog: ProductSource, members: Members | None = None,
        is_erased: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self.hub = hub
        self.sessions = hub.sessions
        self.catalog = catalog
        self.members = members
        # Whether a user id was erased (identity's tombstones): they chat no more.
        self.is_erased = is_erased
        hub.register_op("chat", self.chat, CHAT_ROLES)
        hub.register_op("react", self.react, AUDIENCE_ROLES)
        hub.register_op("pin", self.pin_product, HOST_ROLES)
        hub.register_op("unpin", self.unpin_product, HOST_ROLES)
        hub.register_op("chat.remove", self.remove_chat, HOST_ROLES)
        hub.register_op("mute", self.mute_member, HOST_ROLES)
        hub.register_op("end", self.end_session, HOST_ROLES)

    async def _live(self, ctx: OpContext) -> None:
        (await self.sessions.get(ctx.session_id)).require_live()

    async def chat(self, ctx: OpContext, payload: dict[str, Any]) -> None:
        text = chat_text(payload)
        await self._live(ctx)
        if self.is_erased is not None and await self.is_erased(ctx.user):
            raise LiveError("forbidden", "this user was erased", 403)
        if await self.sessions.is_muted(ctx.session_id, ctx.user):
            raise LiveError("muted", "the host muted you in this session", 403)
        limit, window = CHAT_RATE
        if not await self.sessions.within_rate(ctx.session_id, ctx.user, limit, window):
            raise LiveError("rate_limited", f"at most {limit} messages per {window} s", 429)
        name = chat_name(ctx.role, ctx.user, await self._display_name(ctx))
        message = {"id": "c" + secrets.token_hex(6), "from": {"id": ctx.user, "name": name},
                   "text": text}
        await self.sessions.add_chat(ctx.session_id, message)
        await self.hub.publish(ctx.session_id, {"type": "chat", **message})

    async def _display_name(self, ctx: OpContext) -> str | None:
        # Read at each message (chat is rate-limited), so a rename shows at once.
        if self.members is None or ctx.member_id is None:
            return None
        try:
            return (await self.members.get(ctx.member_id)).name
        except IdentityError:
            return None

    async def react(self, ctx: OpContext, payload: dict[str, Any]) -> None:
        kind = reaction_kind(payload)
        await self.hub.publish_coalesced(ctx.session_id, "reactions", kind, 1)

    async def pin_product(self, ctx: OpContext, payload: dict[str, Any]) -> None:
        sku = require_str(payload, "sku")
        p = await self.catalog.get(sku)
        product = {"sku": p.sku, "title": p.title, "price": p.price.to_wire(),
                   "image": p.image}
        await self.sessions.pin(ctx.session_id, product)

    async def unpin_product(self, ctx: OpContext, payload: dict[str, Any]) -> None:
        sku = require_str(payload, "sku") if "sku" in payload else None
        await self.sessions.unpin(ctx.session_id, sku)

    async def remove_chat(self, ctx: OpContext, payload: dict[str, Any]) -> None:
        chat_id = require_str(payload, "id")
        await self.sessions.remove_chat(ctx.session_id, chat_id)
        await self.hub.publish(ctx.session_id, {"type": "chat_removed", "id": chat_id})

    async def mute_member(self, ctx: OpContext, payload: dict[str, Any]) -> None:
        await self._live(ctx)
        await self.sessions.mute(ctx.session_id, require_str(payload, "member_id"))

    async def erase_users(self, member_id: str, user_ids: list[str]) -> None:
        """``IdentityService.on_erase`` hook: the users' chat, mutes and presence go from
        every session; viewers of a live one are told their messages were removed. Their
        connections are closed on every process (a late hello is refused in any)."""
        for uid in user_ids:
            await self.hub.close_user(uid, CLOSE_POLICY, "erased")
        for sid, chat_id in await self.sessions.forget_users(set(user_ids)):
            try:
                live = (await self.sessions.get(sid)).state is SessionState.LIVE
            except LiveError:  # chat of a session whose record is gone: nobody to tell
                live = False
            if live:
                await self.hub.publish(sid, {"type": "chat_removed", "id": chat_id})

    async def end_session(self, ctx: OpContext, payload: dict[str, Any]) -> None:
        info = await self.sessions.get(ctx.session_id)
        session_transition(info.state, SessionState.ENDED)
        await self.sessions.end(ctx.session_id)
        await self.hub.publish(ctx.session_id, {"type": "ended"})
