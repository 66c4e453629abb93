"""Checkout: buyers' checkouts gathered into batches of one script call each, their
answers, and what follows an order (purchase events, stock figures)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any

import redis.asyncio as aredis

from identity.keys import MEMBER
from identity.members import Members
from live.commerce.carts import CartLine, Carts, parse_idempotency_key
from live.commerce.catalog import Catalog
from live.commerce.flash import FlashSales
from live.commerce.inventory import CheckoutRequest, Inventory, QuotedLine, Reservation
from live.commerce.keys import figures_orders_key
from live.commerce.orders import Order, Orders, normalise
from live.commerce.quote import PricedLine, cart_view
from live.commerce.types import (
    BUYER_ROLES,
    ORDERS_WINDOW,
    Caller,
    CartView,
    Checkout,
    Notifier,
    cart_message,
    check_caller,
    empty_cart,
)
from live.errors import LiveError, not_found
from recommender.types import Event

log = logging.getLogger("newretail.live")

# Purchase events follow an order's answer within milliseconds; an order still owed them
# this long after is taken over (its process stopped first), at most once per this time.
RECORD_GRACE = 30.0


# Checkouts per script call: bounds how long one call holds the datastore (each is a few
# microseconds of Lua).
CHECKOUT_BATCH = 500


@dataclass
class PendingCheckout:
    """A checkout waiting for its batch."""

    request: CheckoutRequest
    tell_buyer: bool
    # A refusal is a result too: raised by the buyer's own ``checkout`` call, it costs a
    # fraction of an exception thrown into the awaiting task (a fifth of a herd's buyers).
    future: asyncio.Future[Checkout | Exception]


def purchase_events(orders: Sequence[Order]) -> list[Event]:
    """One ``purchase`` event per order line, at the order's time (pure)."""
    return [
        Event(o["member_id"], line["sku"], "purchase", o["created_at"], o["session_id"],
              line["location"] if line["location"] != "warehouse" else None, line["qty"])
        for o in orders for line in o["lines"]
    ]


def resolve_pending(w: PendingCheckout, result: Checkout) -> None:
    if not w.future.done():  # the buyer may have gone (cancelled); the order stands
        w.future.set_result(result)


def fail_pending(w: PendingCheckout, error: Exception) -> None:
    if not w.future.done():
        w.future.set_result(error)


_STATUS = {"not_found": 404, "out_of_stock": 409, "limit_exceeded": 409, "empty_cart": 409,
           "price_changed": 409, "cart_changed": 409}
# Refusals after which the cart differs: the script cut or removed a line over a limit, or
# a flash sale ended meanwhile (the cart read reprices its line).
_CART_FIXED = frozenset({"limit_exceeded", "price_changed"})


class Checkouts:
    """The checkout part of ``Commerce`` (which sets these attributes)."""

    redis: aredis.Redis
    catalog: Catalog
    members: Members
    notifier: Notifier | None
    record: Callable[[list[Event]], Awaitable[int]]
    clock: Callable[[], float]
    carts: Carts
    inventory: Inventory
    flash: FlashSales
    orders: Orders
    _queue: list[PendingCheckout]
    _drainer: asyncio.Task[None] | None
    _stock_due: dict[tuple[str, str], int]
    _stager: asyncio.Task[None] | None
    _tasks: set[asyncio.Task[None]]
    _spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]
    _announce_end: Callable[[str], Coroutine[Any, Any, None]]
    _push_figures: Callable[[str], None]
    price_cart: Callable[[str, list[CartLine]], Coroutine[Any, Any, list[PricedLine]]]
    cart: Callable[[str], Coroutine[Any, Any, CartView]]

    async def _send_cart(self, user: str) -> None:
        view = await self.cart(user)
        if self.notifier is not None:
            await self.notifier.send_to_user(user, cart_message(view))

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
        check_caller(caller, BUYER_ROLES, "checkout")
        key = parse_idempotency_key(idempotency_key)
        waiting = PendingCheckout(
            CheckoutRequest("o_" + secrets.token_hex(8), caller.user, key, self.clock(),
                            session_id, None, MEMBER.format(id=caller.user),
                            self.catalog.currency),
            tell_buyer, asyncio.get_running_loop().create_future(),
        )
        self._queue.append(waiting)
        if self._drainer is None:
            # Started as a task, so every checkout arriving in this tick joins the batch.
            self._drainer = asyncio.create_task(self._drain())
        result = await waiting.future
        if isinstance(result, Exception):
            # one datastore failure is every buyer's of the batch: its traceback is theirs alone
            raise result.with_traceback(None)
        return result

    async def _quote(self, user: str) -> tuple[QuotedLine, ...]:
        """The buyer's cart priced by ``price_for``: what the script charges. A line whose
        flash sale ended is repriced in the cart first, and the checkout refused with
        ``price_changed`` so the buyer sees the new price before paying it."""
        priced = await self.price_cart(user, await self.carts.lines(user))
        ended = [p for p in priced if p.ended]
        if ended:
            view = cart_view(priced, self.catalog.currency)
            if self.notifier is not None:
                await self.notifier.send_to_user(user, cart_message(view))
            p = ended[0]
            sale = await self.flash.get(p.line.session or "")
            if sale is not None and sale.id == p.line.sale and sale.reason == "sold_out":
                raise LiveError("out_of_stock", f"{p.line.sku}: the flash sale is sold out; "
                                f"the line now costs {p.price.price} a unit (your price), "
                                f"as your cart shows", 409)
            raise LiveError("price_changed", f"{p.line.sku}: the flash sale has ended; the "
                            f"line now costs {p.price.price} a unit (your price), as your "
                            f"cart shows; check out again to buy it", 409)
        return tuple(
            QuotedLine(p.line.sku, p.line.raw, p.line.qty, p.price.list_price.amount,
                       p.price.discount.amount, p.price.price.amount,
                       p.sale.session_id if p.sale else "", p.sale.id if p.sale else "")
            for p in priced)

    async def _drain(self) -> None:
        """Group commit: one script call at a time per process; checkouts that arrive
        while it runs go together in the next one."""
        try:
            while self._queue:
                batch = self._queue[:CHECKOUT_BATCH]
                del self._queue[:CHECKOUT_BATCH]
                # Each cart priced for its buyer (``price_for``), all at once; the script
                # charges these prices. A buyer whose cart cannot be quoted hears why.
                quotes = await asyncio.gather(*(self._quote(w.request.user) for w in batch),
                                              return_exceptions=True)
                ready = []
                for w, quote in zip(batch, quotes, strict=True):
                    if isinstance(quote, Exception):
                        fail_pending(w, quote)
                    elif isinstance(quote, BaseException):
                        raise quote
                    else:
                        w.request = replace(w.request, lines=quote)
                        ready.append(w)
                batch = ready
                if not batch:
                    continue
                try:
                    results, ended = await self.inventory.reserve_batch(
                        [w.request for w in batch])
                except Exception as exc:  # the datastore failed: every buyer of the batch hears it
                    for w in batch:
                        fail_pending(w, exc)
                    continue
                self._spawn(self._settle(batch, results, ended))
        finally:
            self._drainer = None

    async def _settle(
        self, batch: list[PendingCheckout], results: list[Reservation], ended: tuple[str, ...],
    ) -> None:
        """Answer every buyer of a batch as soon as the datastore has answered (an order is
        durable by then), then record the purchase events and send the buyers' devices
        their carts, now empty."""
        won: list[tuple[PendingCheckout, Order]] = []
        for w, res in zip(batch, results, strict=True):
            if res.replayed:
                if res.order is not None:
                    resolve_pending(w, Checkout(normalise(res.order), True))
                else:  # the order was removed since: say so rather than guess
                    fail_pending(w, not_found(f"order {res.order_id!r}"))
            elif res.order is None:
                code = res.code or "internal"
                message = f"{res.sku}: {res.message}" if res.sku else res.message
                fail_pending(w, LiveError(code, message, _STATUS.get(code, 400)))
                if code in _CART_FIXED:  # the script changed the cart: its devices hear
                    self._spawn(self._send_cart(w.request.user))
            else:
                order = normalise(res.order)
                won.append((w, order))
                resolve_pending(w, Checkout(order, False))
                for left in res.left:
                    if w.request.session_id and self.notifier is not None:
                        units = left.flash_left if left.flash_left >= 0 else left.pool
                        self._stock_due[(w.request.session_id, left.sku)] = units
        if self._stock_due and self._stager is None and self.notifier is not None:
            self._stager = self._spawn(self._stage_stock())
        work: list[Awaitable[Any]] = [self._announce_end(sid) for sid in ended]
        if won:
            # One call for the whole batch: the recommender's checks and writes are per
            # call, not per buyer.
            work.append(self._record_purchases([o for _, o in won]))
        if self.notifier is not None and won:
            told: list[tuple[str, dict[str, Any]]] = []
            for w, order in won:
                told.append((order["member_id"],
                              cart_message(empty_cart(self.catalog.currency))))
                if w.tell_buyer:
                    told.append((order["member_id"], {"type": "order", "order": order}))
            work.append(self.notifier.send_to_users(told))
        for failure in await asyncio.gather(*work, return_exceptions=True):
            if isinstance(failure, BaseException):
                log.error("after a checkout", exc_info=failure)
        in_sessions = [o for _, o in won if o["session_id"]]
        if in_sessions:
            # When each order came, for the host's orders per minute over a stated window.
            pipe = self.redis.pipeline(transaction=False)
            for o in in_sessions:
                key = figures_orders_key(str(o["session_id"]))
                pipe.zadd(key, {o["id"]: float(o["created_at"])})
                pipe.zremrangebyscore(key, "-inf", float(o["created_at"]) - ORDERS_WINDOW * 5)
                pipe.expire(key, 86400)
            try:
                await pipe.execute()
            except Exception:  # a figure, not the order: the order stands
                log.exception("recording order times for the host's figures failed")
        for session_id in {o["session_id"] for o in in_sessions}:
            self._push_figures(str(session_id))

    async def _record_purchases(self, orders: list[Order]) -> None:
        await self.record(purchase_events(orders))
        await self.inventory.recorded([o["id"] for o in orders])

    async def record_owed(self) -> int:
        """Record the purchase events of orders answered by a process that stopped before
        it recorded them (``RECORD_GRACE`` after the order); returns how many orders.
        Events may be recorded twice if a process stops between the two steps, never
        lost."""
        ids = await self.inventory.claim_unrecorded(self.clock(), RECORD_GRACE)
        if not ids:
            return 0
        orders = await self.orders.many(ids)
        if orders:
            await self.record(purchase_events(orders))
        await self.inventory.recorded(ids)  # orders gone since (erased) owe nothing
        log.warning("recorded the purchase events of %d orders after their process", len(ids))
        return len(ids)

    async def settled(self) -> None:
        """Wait until the work that follows answered checkouts (purchase events, carts,
        stock, figures) is done."""
        while self._tasks or self._drainer:
            await asyncio.gather(*self._tasks, *([self._drainer] if self._drainer else []),
                                 return_exceptions=True)

    async def _stage_stock(self) -> None:
        """Mark the products whose stock moved, once per (session, sku) however many
        orders moved it meanwhile; the hub's flush publishes the figure it reads then
        (``session_stock``, registered as the ``stock`` refresher), not the one staged."""
        try:
            while self._stock_due and self.notifier is not None:
                due, self._stock_due = self._stock_due, {}
                for (session_id, sku), units in due.items():
                    try:
                        await self.notifier.publish_coalesced(session_id, "stock", sku, units)
                    except Exception:  # advisory: the next change stages a newer figure
                        log.exception("staging stock of %s in session %s failed", sku,
                                      session_id)
        finally:
            self._stager = None
