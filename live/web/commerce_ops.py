"""The commerce ops and snapshot parts of the live hub.

Ops: ``cart.add {sku, qty}``, ``cart.remove {sku}``, ``checkout {idempotency_key}``
(the buyer gets ``order`` as the reply, before the ``ack``; a refusal is an ``error`` such
as ``out_of_stock``), and for hosts ``flash.start {sku, price, qty, seconds, limit?}`` and
``flash.stop``. Snapshot parts: ``cart`` (the user's), ``flash_sale`` (the running one or
null), ``stock`` (units left of the session's products) and ``figures`` (for the session's
hosts; null for everyone else).
"""

from __future__ import annotations

from typing import Any

from live.commerce.service import Commerce
from live.commerce.types import BUYER_ROLES, CART_ROLES, HOST_ROLES, Caller, cart_message
from live.hub.hub import Hub
from live.hub.rooms import OpContext

# The hub's roles are the first gate; the service checks again (a viewer's checkout is
# let through here so it can be told to sign in rather than just "forbidden").
CHECKOUT_ROLES = BUYER_ROLES | {"viewer"}


def register_commerce_ops(hub: Hub, commerce: Commerce) -> None:
    """Serve the commerce ops on ``hub`` and put the commerce parts in its snapshots."""

    async def live_session(session_id: str) -> None:
        (await hub.sessions.get(session_id)).require_live()

    async def cart_add(ctx: OpContext, payload: dict[str, Any]) -> None:
        await commerce.add_to_cart(Caller(ctx.user, ctx.role), payload.get("sku"),
                                   payload.get("qty", 1), ctx.session_id)

    async def cart_remove(ctx: OpContext, payload: dict[str, Any]) -> None:
        await commerce.remove_from_cart(Caller(ctx.user, ctx.role), payload.get("sku"))

    async def checkout(ctx: OpContext, payload: dict[str, Any]) -> dict[str, Any]:
        result = await commerce.checkout(
            Caller(ctx.user, ctx.role), payload.get("idempotency_key"), ctx.session_id,
            tell_buyer=False,
        )
        return {"type": "order", "order": result.order, "replayed": result.replayed}

    async def flash_start(ctx: OpContext, payload: dict[str, Any]) -> None:
        await live_session(ctx.session_id)
        await commerce.start_flash(Caller(ctx.user, ctx.role), ctx.session_id, payload)

    async def flash_stop(ctx: OpContext, payload: dict[str, Any]) -> None:
        await commerce.stop_flash(Caller(ctx.user, ctx.role), ctx.session_id)

    hub.register_op("cart.add", cart_add, CART_ROLES)
    hub.register_op("cart.remove", cart_remove, CART_ROLES)
    hub.register_op("checkout", checkout, CHECKOUT_ROLES)
    hub.register_op("flash.start", flash_start, HOST_ROLES)
    hub.register_op("flash.stop", flash_stop, HOST_ROLES)

    async def cart_part(session_id: str, user: str | None) -> Any:
        return await commerce.cart(user) if user else None

    async def flash_part(session_id: str, user: str | None) -> Any:
        return await commerce.flash_sale(session_id)

    async def stock_part(session_id: str, user: str | None) -> Any:
        return await commerce.session_stock(session_id)

    async def stock_now(session_id: str, values: dict[str, Any]) -> dict[str, Any]:
        return await commerce.session_stock(session_id, sorted(values))

    async def figures_part(session_id: str, user: str | None) -> Any:
        if user is None or user not in await commerce.figure_watchers(session_id):
            return None
        return await commerce.figures(session_id)

    hub.add_snapshot_part("cart", cart_part)
    hub.add_snapshot_part("flash_sale", flash_part)
    hub.add_snapshot_part("stock", stock_part)
    hub.add_snapshot_part("figures", figures_part)
    hub.add_refresher("stock", stock_now)

    async def cart_state(user: str) -> dict[str, Any]:
        return cart_message(await commerce.cart(user))

    hub.add_personal_state(cart_state)
