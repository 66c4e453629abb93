"""The commerce service: carts, flash sales, checkout, orders and host figures.

Role rules, enforced here whatever the transport:
- carts: anonymous viewers (role ``viewer``, their anon id) and members;
- checkout: members only; a viewer is refused with ``sign_in_required`` (the page asks
  them to sign in; their cart follows them through ``stitch``);
- flash sales: hosts and admins.

Session events and personal messages go out through a ``Notifier`` (the live hub); with
none attached the service still works and only the datastore changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

import redis.asyncio as aredis

from identity.members import Members
from live.commerce import keys
from live.commerce.carts import CartLine, Carts, parse_qty, parse_sku
from live.commerce.catalog import Catalog
from live.commerce.checkout import Checkouts, PendingCheckout, fail_pending
from live.commerce.figures import HostFigures
from live.commerce.flash import FlashSale, FlashSales
from live.commerce.inventory import Inventory
from live.commerce.orders import Orders
from live.commerce.quote import PricedLine, cart_view, price_lines
from live.commerce.selling import FlashSelling
from live.commerce.types import (
    CART_ROLES,
    Caller,
    CartView,
    Notifier,
    cart_message,
    check_caller,
)
from live.db.client import text
from live.errors import LiveError, not_found
from live.types import HostedSession, Product, SessionDirectory, Sku
from recommender.events import EventLog
from recommender.types import Event

log = logging.getLogger("newretail.live")

# Cart changes in flight per process: past this they queue here rather than exhaust the
# datastore client's connection pool (a burst of buyers at a flash sale).
STORE_CONCURRENCY = 64


async def _no() -> bool:
    return False


async def _none() -> None:
    return None


async def _all(work: Sequence[Awaitable[Any]]) -> None:
    await asyncio.gather(*work)


class Commerce(Checkouts, FlashSelling, HostFigures):
    """Carts, flash sales, checkout and orders over one datastore (checkout, flash sales
    and host figures are parts of it, in their own modules)."""

    def __init__(
        self, redis: aredis.Redis, catalog: Catalog, members: Members, events: EventLog,
        notifier: Notifier | None = None,
        record: Callable[[list[Event]], Awaitable[int]] | None = None,
        clock: Callable[[], float] = time.time,
        sessions: SessionDirectory[HostedSession] | None = None,
        is_erased: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        """Args:
            notifier: where session events and personal messages go (the live hub:
                ``publish``, ``publish_coalesced``, ``send_to_user(s)``).
            record: where purchase and cart events go (default: ``events.append``).
            clock: seconds since the epoch (tests may pass their own).
            sessions: the live sessions (the hub's), for a session's lineup and host.
            is_erased: whether a user id was erased (identity's tombstones): their carts
                stay gone.
        """
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
        self._queue: list[PendingCheckout] = []
        self._drainer: asyncio.Task[None] | None = None
        self._stock_due: dict[tuple[str, str], int] = {}
        self._stager: asyncio.Task[None] | None = None
        self.sessions = sessions
        self.is_erased = is_erased

    # carts ---------------------------------------------------------------------------

    async def cart(self, user: str) -> CartView:
        """The cart as shown: titles and the price the buyer pays now."""
        return await self._view(user, await self.carts.lines(user))

    async def _tier(self, user: str) -> str | None:
        """The member's tier (None for an anonymous viewer)."""
        raw = await self.redis.hget(Members.key(user), "tier")
        return text(raw) if raw is not None else None

    async def price_cart(
        self, user: str, lines: list[CartLine], products: Mapping[str, Product] | None = None,
        sales: Mapping[str, FlashSale | None] | None = None,
    ) -> list[PricedLine]:
        """``lines`` at the price ``user`` pays now (``price_for``); lines whose flash sale
        ended are repriced in the cart too, with a note. ``products`` and ``sales`` (by
        session) already read are not read again; the rest is read in one wait."""
        known = dict(products or {})
        by_session = dict(sales or {})
        missing = [line.sku for line in lines if line.sku not in known]
        unread = list(dict.fromkeys(line.session for line in lines
                                    if line.session and line.session not in by_session))
        fetched, read_sales, tier = await asyncio.gather(
            self.catalog.get_many(missing), self._sales(unread), self._tier(user))
        known.update((sku, p) for sku, p in zip(missing, fetched, strict=True) if p)
        by_session.update(zip(unread, read_sales, strict=True))
        priced = price_lines(lines, known, by_session, tier, self.clock())
        ended = [(p.line, p.stored) for p in priced if p.ended]
        if ended:
            await self.carts.rewrite(user, ended)
        return priced

    async def _view(
        self, user: str, lines: list[CartLine], products: Mapping[str, Product] | None = None,
        sales: Mapping[str, FlashSale | None] | None = None,
    ) -> CartView:
        return cart_view(await self.price_cart(user, lines, products, sales),
                         self.catalog.currency)

    async def _sales(self, sessions: list[str]) -> list[FlashSale | None]:
        return list(await asyncio.gather(*(self.flash.get(s) for s in sessions)))

    async def add_to_cart(
        self, caller: Caller, sku: object, qty: object, session_id: str | None = None,
    ) -> CartView:
        """Add units of a product; during a flash sale on it the line carries the sale."""
        check_caller(caller, CART_ROLES, "a cart")
        sku, count = parse_sku(sku), parse_qty(qty)
        async with self._gate:
            return await self._add_to_cart(caller, sku, count, session_id)

    async def _add_to_cart(
        self, caller: Caller, sku: Sku, count: int, session_id: str | None,
    ) -> CartView:
        # The reads are independent: one wait for all three, then the first refusal in
        # this order (erased, unknown product, sale limit), whatever answered first.
        erased, product, sale = await asyncio.gather(
            self.is_erased(caller.user) if self.is_erased is not None else _no(),
            self.catalog.get(sku),
            self.flash.get(session_id) if session_id else _none(),
            return_exceptions=True)
        if isinstance(erased, BaseException):
            raise erased
        if erased:
            raise LiveError("forbidden", "this user was erased", 403)
        if isinstance(product, BaseException):
            raise product
        if isinstance(sale, BaseException):
            raise sale
        line = CartLine(sku, count)
        if session_id and isinstance(sale, FlashSale) and sale.sku == sku and sale.running(
                self.clock()):
            if sale.limit is not None and count > sale.limit:
                raise LiveError("limit_exceeded",
                                f"this flash sale allows {sale.limit} per member", 409)
            line = CartLine(sku, count, session_id, sale.id)
        # refused: nothing else was written; else the cart as the add left it
        lines = await self.carts.add(caller.user, line)
        work: list[Awaitable[Any]] = [
            self.record([Event(caller.user, sku, "cart", self.clock(), session_id, None,
                               count)]),
        ]
        if session_id:
            pipe = self.redis.pipeline(transaction=False)
            pipe.sadd(keys.figure_carts(session_id), caller.user)
            pipe.sadd(keys.figure_skus(session_id), sku)
            work.append(pipe.execute())
        # the view needs only what the other lines show: the added product and the
        # session's sale were read above
        sales = {session_id: sale} if session_id else {}
        view, _ = await asyncio.gather(self._view(caller.user, lines, {sku: product}, sales),
                                       _all(work))
        # last, so the devices' cart push follows everything the add wrote
        await self._push_cart(caller.user, view)
        if session_id:
            self._push_figures(session_id)
        return view

    async def remove_from_cart(self, caller: Caller, sku: object) -> CartView:
        check_caller(caller, CART_ROLES, "a cart")
        if not await self.carts.remove(caller.user, parse_sku(sku)):
            raise not_found(f"product {sku!r} in your cart")
        return await self._cart_changed(caller.user)

    async def _cart_changed(self, user: str) -> CartView:
        view = await self.cart(user)
        await self._push_cart(user, view)
        return view

    async def _push_cart(self, user: str, view: CartView) -> None:
        if self.notifier is not None:
            await self.notifier.send_to_user(user, cart_message(view))

    async def stitch(self, anon_id: str, member_id: str) -> None:
        """The anonymous viewer signed in: their cart moves into the member's."""
        if await self.carts.merge(anon_id, member_id):
            await self._cart_changed(member_id)

    async def erase_member(self, member_id: str) -> None:
        """Drop the member's cart; keep their orders for the books, anonymised."""
        await self.carts.drop(member_id)
        await self.orders.anonymise(member_id)
        pattern = keys.idempotency_key(member_id, "*")
        async for key in self.redis.scan_iter(match=pattern, count=500):
            await self.redis.delete(key)

    async def erase_users(self, member_id: str, user_ids: list[str]) -> None:
        """``IdentityService.on_erase`` hook: the member and every id stitched into them."""
        await self.carts.drop(*user_ids)
        await self.erase_member(member_id)
        # Per-session traces: flash-sale purchase counts go; a session's cart count keeps
        # its figure with a stand-in that names no one.
        async for key in self.redis.scan_iter(match=keys.flash_bought_key("*"), count=500):
            await self.redis.hdel(key, *user_ids)
        async for key in self.redis.scan_iter(match=keys.figure_carts("*"), count=500):
            for user in user_ids:
                if await self.redis.srem(key, user):
                    await self.redis.sadd(key, "erased-" + secrets.token_hex(8))

    # checkout ------------------------------------------------------------------------


    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        queued, self._queue = self._queue, []
        for w in queued:  # not sent to the datastore: nothing was bought
            fail_pending(w, LiveError("unavailable", "the server is stopping; try again", 503))
        for task in [*self._tasks, *([self._drainer] if self._drainer else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
