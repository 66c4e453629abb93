"""The commerce service: carts, flash sales, checkout, orders and host figures.

Role rules, enforced here whatever the transport:
- carts: anonymous viewers (role ``viewer``, their anon id) and members;
- checkout: members only; a viewer is refused with ``sign_in_required`` (the page asks
  them to sign in; their cart follows them through ``stitch``);
- flash sales: hosts and admins.

Session events and personal messages go out through a ``Notifier`` (the live hub); with
none attached the service still works and only the store changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import redis.asyncio as aredis

from identity.members import MEMBER, Members
from live.carts import CartLine, Carts, parse_idempotency_key, parse_qty, parse_sku
from live.catalog import Catalog
from live.commerce_types import (
    BUYER_ROLES,
    CART_ROLES,
    HOST_ROLES,
    Caller,
    CartItem,
    CartView,
    Checkout,
    Notifier,
)
from live.errors import LiveError, not_found
from live.flash import FlashSale, FlashSales, parse_flash_start
from live.inventory import Inventory, figures_key
from live.keys import text
from live.orders import Orders, normalise
from live.types import Sku
from recommender.events import EventLog
from recommender.types import Event

log = logging.getLogger("newretail.live")

FIGURES_DELAY = 0.25  # host figures are pushed at most this often per session and process
EXPIRY_SWEEP = 0.25
# Checkouts and cart changes in flight per process: past this they queue here rather than
# exhaust the store client's connection pool (a burst of buyers at a flash sale).
STORE_CONCURRENCY = 64
_STATUS = {"not_found": 404, "out_of_stock": 409, "limit_exceeded": 409, "empty_cart": 409}


def _check_role(caller: Caller, roles: frozenset[str], what: str) -> None:
    if caller.role not in roles:
        raise LiveError("forbidden", f"{what} needs one of the roles "
                        f"{', '.join(sorted(roles))}; you are {caller.role}", 403)


def _hosts_key(session_id: str) -> str:
    return f"nr:figures:{session_id}:hosts"


def _carts_key(session_id: str) -> str:
    return f"nr:figures:{session_id}:carts"


def _skus_key(session_id: str) -> str:
    return f"nr:figures:{session_id}:skus"


class Commerce:
    """Carts, flash sales, checkout and orders over one store.

    Args:
        notifier: the hub (``publish``, ``publish_coalesced``, ``send_to_user``).
        record: where purchase and cart events go (default: ``events.append``).
        clock: seconds since the epoch (tests may pass their own).
    """

    def __init__(
        self, redis: aredis.Redis, catalog: Catalog, members: Members, events: EventLog,
        notifier: Notifier | None = None,
        record: Callable[[list[Event]], Awaitable[int]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.catalog = catalog
        self.members = members
        self.notifier = notifier
        self.record = record or events.append
        self.clock = clock
        self.carts = Carts(redis)
        self.inventory = Inventory(redis)
        self.flash = FlashSales(redis)
        self.orders = Orders(redis)
        self._figures_due: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._gate = asyncio.Semaphore(STORE_CONCURRENCY)
        # (products, host) of a live session, when a hub knows its sessions.
        self.session_info: Callable[[str], Awaitable[tuple[list[str], str | None]]] | None = None

    # carts ---------------------------------------------------------------------------

    async def cart(self, user: str) -> CartView:
        """The cart as shown: titles and the price the buyer pays now."""
        lines = await self.carts.lines(user)
        products = await self.catalog.get_many([line.sku for line in lines])
        sales: dict[str, FlashSale | None] = {}
        for line in lines:
            if line.session and line.session not in sales:
                sales[line.session] = await self.flash.get(line.session)
        now, items = self.clock(), []
        for line, product in zip(lines, products, strict=True):
            if product is None:
                continue
            sale = sales.get(line.session or "")
            on_sale = sale is not None and sale.id == line.sale and sale.running(now)
            items.append(CartItem(
                sku=line.sku, title=product.title, qty=line.qty,
                price=sale.price if on_sale and sale else product.price,
                flash_sale=line.sale if on_sale else None,
            ))
        total = round(sum(i["price"] * i["qty"] for i in items), 2)
        return {"lines": items, "count": sum(i["qty"] for i in items), "total": total}

    async def add_to_cart(
        self, caller: Caller, sku: object, qty: object, session_id: str | None = None,
    ) -> CartView:
        """Add units of a product; during a flash sale on it the line carries the sale."""
        _check_role(caller, CART_ROLES, "a cart")
        sku, count = parse_sku(sku), parse_qty(qty)
        async with self._gate:
            return await self._add_to_cart(caller, sku, count, session_id)

    async def _add_to_cart(
        self, caller: Caller, sku: Sku, count: int, session_id: str | None,
    ) -> CartView:
        await self.catalog.get(sku)
        line = CartLine(sku, count)
        if session_id:
            sale = await self.flash.get(session_id)
            if sale is not None and sale.sku == sku and sale.running(self.clock()):
                if sale.limit is not None and count > sale.limit:
                    raise LiveError("limit_exceeded",
                                    f"this flash sale allows {sale.limit} per member", 409)
                line = CartLine(sku, count, session_id, sale.id)
            pipe = self.redis.pipeline(transaction=False)
            pipe.sadd(_carts_key(session_id), caller.user)
            pipe.sadd(_skus_key(session_id), sku)
            await pipe.execute()
        await self.carts.add(caller.user, line)
        await self.record([Event(caller.user, sku, "cart", self.clock(), session_id, None, count)])
        view = await self._cart_changed(caller.user)
        if session_id:
            self._push_figures(session_id)
        return view

    async def remove_from_cart(self, caller: Caller, sku: object) -> CartView:
        _check_role(caller, CART_ROLES, "a cart")
        if not await self.carts.remove(caller.user, parse_sku(sku)):
            raise not_found(f"product {sku!r} in your cart")
        return await self._cart_changed(caller.user)

    async def _cart_changed(self, user: str) -> CartView:
        view = await self.cart(user)
        if self.notifier is not None:
            await self.notifier.send_to_user(user, {"type": "cart", "cart": view})
        return view

    async def stitch(self, anon_id: str, member_id: str) -> None:
        """The anonymous viewer signed in: their cart moves into the member's."""
        if await self.carts.merge(anon_id, member_id):
            await self._cart_changed(member_id)

    async def erase_member(self, member_id: str) -> None:
        """Drop the member's cart; keep their orders for the books, anonymised."""
        await self.carts.drop(member_id)
        await self.orders.anonymise(member_id)
        async for key in self.redis.scan_iter(match=f"nr:idem:{member_id}:*", count=500):
            await self.redis.delete(key)

    async def erase_users(self, member_id: str, user_ids: list[str]) -> None:
        """``IdentityService.on_erase`` hook: the member and every id stitched into them."""
        await self.carts.drop(*user_ids)
        await self.erase_member(member_id)

    # checkout ------------------------------------------------------------------------

    async def checkout(
        self, caller: Caller, idempotency_key: object, session_id: str | None = None,
        tell_buyer: bool = True,
    ) -> Checkout:
        """Buy the whole cart or nothing. A key already used returns the first order.

        ``tell_buyer`` sends ``order`` to the buyer's connections; a WebSocket op
        replies with it directly instead.
        """
        if caller.role == "viewer":
            raise LiveError("sign_in_required", "sign in to buy; your cart will follow you", 403)
        _check_role(caller, BUYER_ROLES, "checkout")
        key = parse_idempotency_key(idempotency_key)
        async with self._gate:
            return await self._checkout(caller, key, session_id, tell_buyer)

    async def _checkout(
        self, caller: Caller, key: str, session_id: str | None, tell_buyer: bool,
    ) -> Checkout:
        lines = await self.carts.lines(caller.user)
        now = self.clock()
        res = await self.inventory.reserve_order(
            "o_" + secrets.token_hex(8), caller.user, lines, key, now, None, session_id,
            member_key=MEMBER.format(id=caller.user),
        )
        for ended in res.ended:
            await self._announce_end(ended)
        if res.replayed and res.order_id:
            return Checkout(await self.orders.get(res.order_id), True)
        if res.code or res.order is None:
            code = res.code or "internal"
            message = res.message if not res.sku else f"{res.sku}: {res.message}"
            if code == "empty_cart":
                message = "the cart is empty"
            raise LiveError(code, message, _STATUS.get(code, 400))
        order = normalise(res.order)
        # The purchase events, the buyer's other devices and the session's stock are
        # independent of each other: sent together, they delay the acknowledgement once.
        work: list[Awaitable[Any]] = [self.record([
            Event(caller.user, line["sku"], "purchase", now, session_id,
                  line["location"] if line["location"] != "warehouse" else None, line["qty"])
            for line in order["lines"]
        ])]
        if self.notifier is not None:
            if tell_buyer:
                work.append(self.notifier.send_to_user(
                    caller.user, {"type": "order", "order": order}))
            work.append(self._cart_changed(caller.user))
            if session_id:
                for left in res.left:
                    units = left.flash_left if left.flash_left >= 0 else left.pool
                    work.append(self.notifier.publish_coalesced(
                        session_id, "stock", left.sku, units))
        await asyncio.gather(*work)
        if session_id:
            self._push_figures(session_id)
        return Checkout(order, False)

    # flash sales ---------------------------------------------------------------------

    async def start_flash(
        self, caller: Caller, session_id: str, payload: Mapping[str, Any],
    ) -> FlashSale:
        _check_role(caller, HOST_ROLES, "a flash sale")
        request = parse_flash_start(payload)
        await self.catalog.get(request.sku)
        units = (await self.inventory.available([request.sku]))[request.sku]
        if units < request.qty:
            raise LiveError("insufficient_stock",
                            f"only {units} units of {request.sku} in stock", 409)
        await self.expire(session_id)
        sale, replaced = await self.flash.start(session_id, request, self.clock())
        pipe = self.redis.pipeline(transaction=False)
        pipe.sadd(_hosts_key(session_id), caller.user)
        pipe.sadd(_skus_key(session_id), sale.sku)
        await pipe.execute()
        if self.notifier is not None:
            if replaced:
                await self.notifier.publish(session_id, {
                    "type": "flash_sale_ended", "id": replaced, "reason": "expired"})
            await self.notifier.publish(session_id, dict(sale.message()))
            await self.notifier.publish_coalesced(session_id, "stock", sale.sku, sale.qty_left)
        self._push_figures(session_id)
        return sale

    async def stop_flash(self, caller: Caller, session_id: str) -> None:
        _check_role(caller, HOST_ROLES, "a flash sale")
        sale = await self.flash.get(session_id)
        if sale is None or not sale.running(self.clock()):
            await self.expire(session_id)
            raise LiveError("no_flash_sale", "no flash sale is running in this session", 404)
        if await self.flash.end(session_id, "stopped", self.clock(), sale_id=sale.id):
            await self._announce_end(session_id)

    async def _announce_end(self, session_id: str) -> None:
        sale = await self.flash.get(session_id)
        if sale is None or self.notifier is None:
            return
        await self.notifier.publish(session_id, dict(sale.ended_message(sale.reason)))
        units = (await self.inventory.available([sale.sku]))[sale.sku]
        await self.notifier.publish_coalesced(session_id, "stock", sale.sku, units)

    async def expire(self, session_id: str) -> bool:
        """End the session's sale if its time is up; True for the process that did it."""
        if await self.flash.end(session_id, "expired", self.clock(), only_if_expired=True):
            await self._announce_end(session_id)
            return True
        return False

    async def flash_sale(self, session_id: str) -> dict[str, Any] | None:
        """The running sale as a ``flash_sale`` message (the snapshot part), or None."""
        sale = await self.flash.get(session_id)
        if sale is None or sale.state != "active":
            return None
        if not sale.running(self.clock()):
            await self.expire(session_id)
            return None
        return dict(sale.message())

    async def expire_due(self) -> int:
        """End every sale whose time is up (the sweep); returns how many this call ended."""
        ended = 0
        for session_id in await self.flash.due(self.clock()):
            ended += await self.expire(session_id)
        return ended

    async def run_expiry(self, interval: float = EXPIRY_SWEEP) -> None:
        """Sweep for expired sales until cancelled (one task per web process)."""
        while True:
            try:
                await self.expire_due()
            except Exception:  # a store hiccup must not stop the sweep
                log.exception("flash sale expiry sweep failed")
            await asyncio.sleep(interval)

    # figures -------------------------------------------------------------------------

    async def session_stock(self, session_id: str) -> dict[str, int]:
        """Units left of the products sold in this session (the flash sale's for its sku)."""
        raw: Any = await self.redis.smembers(_skus_key(session_id))
        products = (await self.session_info(session_id))[0] if self.session_info else []
        skus = sorted({text(s) for s in raw} | set(products))
        stock = await self.inventory.available(skus)
        sale = await self.flash.get(session_id)
        if sale is not None and sale.running(self.clock()):
            stock[sale.sku] = max(0, sale.qty_left)
        return stock

    async def figures(self, session_id: str) -> dict[str, Any]:
        """Carts, orders, revenue and stock of a session, as shown to its hosts."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.scard(_carts_key(session_id))
        pipe.hmget(figures_key(session_id), ["orders", "revenue_cents"])
        carts, (orders, cents) = await pipe.execute()
        return {
            "type": "figures", "carts": int(carts), "orders": int(orders or 0),
            "revenue": round(int(cents or 0) / 100, 2),
            "stock": await self.session_stock(session_id),
        }

    async def watch_figures(self, session_id: str, host: str) -> None:
        """``host`` gets this session's figures pushed from now on."""
        await self.redis.sadd(_hosts_key(session_id), host)

    async def figure_watchers(self, session_id: str) -> set[str]:
        """The session's host and every host who ran a sale in it."""
        raw: Any = await self.redis.smembers(_hosts_key(session_id))
        watchers = {text(h) for h in raw}
        if self.session_info is not None:
            host = (await self.session_info(session_id))[1]
            if host:
                watchers.add(host)
        return watchers

    def _push_figures(self, session_id: str) -> None:
        if self.notifier is None or session_id in self._figures_due:
            return
        self._figures_due.add(session_id)
        task = asyncio.create_task(self._send_figures(session_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_figures(self, session_id: str) -> None:
        await asyncio.sleep(FIGURES_DELAY)
        self._figures_due.discard(session_id)
        notifier = self.notifier
        if notifier is None:
            return
        try:
            figures = await self.figures(session_id)
            for host in sorted(await self.figure_watchers(session_id)):
                await notifier.send_to_user(host, figures)
        except Exception:  # figures are advisory; a failed push is retried by the next change
            log.exception("pushing figures of session %s failed", session_id)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
