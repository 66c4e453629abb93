"""The session's own client ops: chat, reactions, pins, moderation and the end of it."""

from __future__ import annotations

import secrets
from typing import Any

from live.catalog import Catalog
from live.errors import LiveError
from live.hub import Hub, OpContext
from live.protocol import (
    AUDIENCE_ROLES,
    CHAT_RATE,
    CHAT_ROLES,
    HOST_ROLES,
    SessionState,
    chat_text,
    reaction_kind,
    require_str,
    session_transition,
)


class SessionOps:
    """Registers ``chat``, ``react``, ``pin``, ``unpin``, ``chat.remove``, ``mute`` and
    ``end`` on the hub."""

    def __init__(self, hub: Hub, catalog: Catalog) -> None:
        self.hub = hub
        self.store = hub.store
        self.catalog = catalog
        hub.register_op("chat", self.chat, CHAT_ROLES)
        hub.register_op("react", self.react, AUDIENCE_ROLES)
        hub.register_op("pin", self.pin_product, HOST_ROLES)
        hub.register_op("unpin", self.unpin_product, HOST_ROLES)
        hub.register_op("chat.remove", self.remove_chat, HOST_ROLES)
        hub.register_op("mute", self.mute_member, HOST_ROLES)
        hub.register_op("end", self.end_session, HOST_ROLES)

    async def _live(self, ctx: OpContext) -> None:
        info = await self.store.get(ctx.session_id)
        if info.state is not SessionState.LIVE:
            raise LiveError("session_ended", "the session has ended", 409)

    async def chat(self, ctx: OpContext, payload: dict[str, Any]) -> None:
        text = chat_text(payload)
        await self._live(ctx)
        if await self.store.is_muted(ctx.session_id, ctx.user):
            raise LiveError("muted", "the host muted you in this session", 403)
        limit, window = CHAT_RATE
        if not await self.store.within_rate(ctx.session_id, ctx.user, limit, window):
            raise LiveError("rate_limited", f"at most {limit} messages per {window} s", 429)
        name = "Host" if ctx.role in HOST_ROLES else f"Member {ctx.user[-4:]}"
        message = {"id": "c" + secrets.token_hex(6), "from": {"id": ctx.user, "name": name},
                   "text": text}
        await self.store.add_chat(ctx.session_id, message)
        await self.hub.publish(ctx.session_id, {"type": "chat", **message})

    async def react(self, ctx: OpContext, payload: dict[str, Any]) -> None:
        kind = reaction_kind(payload)
        await self.hub.publish_coalesced(ctx.session_id, "reactions", kind, 1)

    async def pin_product(self, ctx: OpContext, payload: dict[str, Any]) -> None:
        sku = require_str(payload, "sku")
        await self._live(ctx)
        p = await self.catalog.get(sku)
        product = {"sku": p.sku, "title": p.title, "price": p.price, "image": p.image}
        await self.store.add_pin(ctx.session_id, product)
        await self.hub.publish(ctx.session_id, {"type": "pinned", "sku": p.sku,
                                                "product": product})

    async def unpin_product(self, ctx: OpContext, payload: dict[str, Any]) -> None:
        sku = require_str(payload, "sku") if "sku" in payload else None
        await self._live(ctx)
        removed = await self.store.remove_pin(ctx.session_id, sku)
        await self.hub.publish(ctx.session_id, {"type": "unpinned", "sku": removed["sku"]})

    async def remove_chat(self, ctx: OpContext, payload: dict[str, Any]) -> None:
        chat_id = require_str(payload, "id")
        await self.store.remove_chat(ctx.session_id, chat_id)
        await self.hub.publish(ctx.session_id, {"type": "chat_removed", "id": chat_id})

    async def mute_member(self, ctx: OpContext, payload: dict[str, Any]) -> None:
        await self.store.mute(ctx.session_id, require_str(payload, "member_id"))

    async def end_session(self, ctx: OpContext, payload: dict[str, Any]) -> None:
        info = await self.store.get(ctx.session_id)
        session_transition(info.state, SessionState.ENDED)
        await self.store.end(ctx.session_id)
        await self.hub.publish(ctx.session_id, {"type": "ended"})
