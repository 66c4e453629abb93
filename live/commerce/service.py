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
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aredis

from identity.keys import MEMBER
from identity.members import Members
from live.commerce import keys
from live.commerce.carts import CartLine, Carts, parse_idempotency_key, parse_qty, parse_sku
from live.commerce.catalog import Catalog
from live.commerce.flash import FlashSale, FlashSales, parse_flash_start
from live.commerce.inventory import CheckoutRequest, Inventory, Reservation
from live.commerce.keys import figures_key
from live.commerce.orders import Order, Orders, normalise
from live.commerce.types import (
    BUYER_ROLES,
    CART_ROLES,
    HOST_ROLES,
    Caller,
    CartItem,
    CartView,
    Checkout,
    Notifier,
)
from live.db.client import text
from live.errors import LiveError, not_found
from live.types import HostedSession, Product, SessionDirectory, Sku
from recommender.events import EventLog
from recommender.types import Event

log = logging.getLogger("newretail.live")

FIGURES_DELAY = 0.25  # host figures are pushed at most this often per session and process
EXPIRY_SWEEP = 0.25
# Purchase events follow an order's answer within milliseconds; an order still owed them
# this long after is taken over (its process stopped first), at most once per this time.
RECORD_GRACE = 30.0
# Cart changes in flight per process: past this they queue here rather than exhaust the
# store client's connection pool (a burst of buyers at a flash sale).
STORE_CONCURRENCY = 64
# Checkouts per script call: bounds how long one call holds the store (each is a few
# microseconds of Lua).
CHECKOUT_BATCH = 500
_STATUS = {"not_found": 404, "out_of_stock": 409, "limit_exceeded": 409, "empty_cart": 409}


async def _no() -> bool:
    return False


async def _none() -> None:
    return None


async def _all(work: Sequence[Awaitable[Any]]) -> None:
    await asyncio.gather(*work)


def _check_role(caller: Caller, roles: frozenset[str], what: str) -> None:
    if caller.role not in roles:
        raise LiveError("forbidden", f"{what} needs one of the roles "
                        f"{', '.join(sorted(roles))}; you are {caller.role}", 403)





EMPTY_CART: CartView = {"lines": [], "count": 0, "total": 0}


@dataclass
class _Waiting:
    """A checkout waiting for its batch."""

    request: CheckoutRequest
    tell_buyer: bool
    # A refusal is a result too: raised by the buyer's own ``checkout`` call, it costs a
    # fraction of an exception thrown into the awaiting task (a fifth of a herd's buyers).
    future: asyncio.Future[Checkout | Exception]


def cart_message(view: CartView) -> dict[str, Any]:
    """The personal ``cart`` message a user's devices get."""
    return {"type": "cart", "cart": view}


def purchase_events(orders: Sequence[Order]) -> list[Event]:
    """One ``purchase`` event per order line, at the order's time (pure)."""
    return [
        Event(o["member_id"], line["sku"], "purchase", o["created_at"], o["session_id"],
              line["location"] if line["location"] != "warehouse" else None, line["qty"])
        for o in orders for line in o["lines"]
    ]


def _resolve(w: _Waiting, result: Checkout) -> None:
    if not w.future.done():  # the buyer may have gone (cancelled); the order stands
        w.future.set_result(result)


def _fail(w: _Waiting, error: Exception) -> None:
    if not w.future.done():
        w.future.set_result(error)


class Commerce:
    """Carts, flash sales, checkout and orders over one store.

    Args:
        notifier: the hub (``publish``, ``publish_coalesced``, ``send_to_user(s)``).
        record: where purchase and cart events go (default: ``events.append``).
        clock: seconds since the epoch (tests may pass their own).
    """

    def __init__(
        self, redis: aredis.Redis, catalog: Catalog, members: Members, events: EventLog,
        notifier: Notifier | None = None,
        record: Callable[[list[Event]], Awaitable[int]] | None = None,
        clock: Callable[[], float] = time.time,
        sessions: SessionDirectory[HostedSession] | None = None,
        is_erased: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        """Args:
            notifier: where session events and personal messages go (the live hub).
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
        self._queue: list[_Waiting] = []
        self._drainer: asyncio.Task[None] | None = None
        self._stock_due: dict[tuple[str, str], int] = {}
        self._stager: asyncio.Task[None] | None = None
        self.sessions = sessions
        self.is_erased = is_erased

    # carts ---------------------------------------------------------------------------

    async def cart(self, user: str) -> CartView:
        """The cart as shown: titles and the price the buyer pays now."""
        return await self._view(await self.carts.lines(user))

    async def _view(
        self, lines: list[CartLine], products: Mapping[str, Product] | None = None,
        sales: Mapping[str, FlashSale | None] | None = None,
    ) -> CartView:
        """``lines`` as shown. ``products`` and ``sales`` (by session) already read are not
        read again; the rest is read in one wait."""
        known = dict(products or {})
        by_session = dict(sales or {})
        missing = [line.sku for line in lines if line.sku not in known]
        unread = list(dict.fromkeys(line.session for line in lines
                                    if line.session and line.session not in by_session))
        fetched, read_sales = await asyncio.gather(
            self.catalog.get_many(missing), self._sales(unread))
        known.update((sku, p) for sku, p in zip(missing, fetched, strict=True) if p)
        by_session.update(zip(unread, read_sales, strict=True))
        now, items = self.clock(), []
        for line in lines:
            product = known.get(line.sku)
            if product is None:
                continue
            sale = by_session.get(line.session or "")
            on_sale = sale is not None and sale.id == line.sale and sale.running(now)
            items.append(CartItem(
                sku=line.sku, title=product.title, qty=line.qty,
                price=sale.price if on_sale and sale else product.price,
                flash_sale=line.sale if on_sale else None,
            ))
        total = round(sum(i["price"] * i["qty"] for i in items), 2)
        return {"lines": items, "count": sum(i["qty"] for i in items), "total": total}

    async def _sales(self, sessions: list[str]) -> list[FlashSale | None]:
        return list(await asyncio.gather(*(self.flash.get(s) for s in sessions)))

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
        view, _ = await asyncio.gather(self._view(lines, {sku: product}, sales),
                                       _all(work))
        # last, so the devices' cart push follows everything the add wrote
        await self._push_cart(caller.user, view)
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
        waiting = _Waiting(
            CheckoutRequest("o_" + secrets.token_hex(8), caller.user, key, self.clock(),
                            session_id, None, MEMBER.format(id=caller.user)),
            tell_buyer, asyncio.get_running_loop().create_future(),
        )
        self._queue.append(waiting)
        if self._drainer is None:
            # Started as a task, so every checkout arriving in this tick joins the batch.
            self._drainer = asyncio.create_task(self._drain())
        result = await waiting.future
        if isinstance(result, Exception):
            # one store failure is every buyer's of the batch: its traceback is theirs alone
            raise result.with_traceback(None)
        return result

    async def _drain(self) -> None:
        """Group commit: one script call at a time per process; checkouts that arrive
        while it runs go together in the next one."""
        try:
            while self._queue:
                batch = self._queue[:CHECKOUT_BATCH]
                del self._queue[:CHECKOUT_BATCH]
                try:
                    results, ended = await self.inventory.reserve_batch(
                        [w.request for w in batch])
                except Exception as exc:  # the store failed: every buyer of the batch hears it
                    for w in batch:
                        _fail(w, exc)
                    continue
                self._spawn(self._settle(batch, results, ended))
        finally:
            self._drainer = None

    async def _settle(
        self, batch: list[_Waiting], results: list[Reservation], ended: tuple[str, ...],
    ) -> None:
        """Answer every buyer of a batch as soon as the store has answered (an order is
        durable by then), then record the purchase events and send the buyers' devices
        their carts, now empty."""
        won: list[tuple[_Waiting, Order]] = []
        for w, res in zip(batch, results, strict=True):
            if res.replayed:
                if res.order is not None:
                    _resolve(w, Checkout(normalise(res.order), True))
                else:  # the order was removed since: say so rather than guess
                    _fail(w, not_found(f"order {res.order_id!r}"))
            elif res.order is None:
                code = res.code or "internal"
                message = f"{res.sku}: {res.message}" if res.sku else res.message
                _fail(w, LiveError(code, message, _STATUS.get(code, 400)))
            else:
                order = normalise(res.order)
                won.append((w, order))
                _resolve(w, Checkout(order, False))
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
                told.append((order["member_id"], cart_message(EMPTY_CART)))
                if w.tell_buyer:
                    told.append((order["member_id"], {"type": "order", "order": order}))
            work.append(self.notifier.send_to_users(told))
        for failure in await asyncio.gather(*work, return_exceptions=True):
            if isinstance(failure, BaseException):
                log.error("after a checkout", exc_info=failure)
        for session_id in {o["session_id"] for _, o in won if o["session_id"]}:
            self._push_figures(session_id)

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

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

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
        pipe.sadd(keys.figure_hosts(session_id), caller.user)
        pipe.sadd(keys.figure_skus(session_id), sale.sku)
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
        # The end, and the stock the sale leaves (its units back in the pool, or none), in
        # one write to each viewer.
        await self.notifier.publish_with_figures(
            session_id, dict(sale.ended_message(sale.reason)), "stock", [sale.sku])
        # A flush that read the figure before the end may publish after it: the next
        # flush reads it again (and sends nothing if it is the one just shown).
        await self.notifier.publish_coalesced(session_id, "stock", sale.sku, sale.qty_left)

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
        """Sweep for expired sales, and now and then for owed purchase events, until
        cancelled (one task per web process)."""
        owed_at = 0.0
        while True:
            try:
                await self.expire_due()
                if time.monotonic() >= owed_at:
                    owed_at = time.monotonic() + RECORD_GRACE / 6
                    await self.record_owed()
            except Exception:  # a store hiccup must not stop the sweep
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # Cancelled, and a client library answered with an error of its own
                    # (a read cut short): stop, or shutdown would wait for ever.
                    raise asyncio.CancelledError from None
                log.exception("flash sale expiry sweep failed")
            await asyncio.sleep(interval)

    # figures -------------------------------------------------------------------------

    async def session_stock(
        self, session_id: str, skus: Sequence[str] | None = None,
    ) -> dict[str, int]:
        """Units left of ``skus``, by default the products sold in this session (the flash
        sale's for its sku)."""
        if skus is None:
            raw: Any = await self.redis.smembers(keys.figure_skus(session_id))
            products = (await self._session(session_id))[0]
            skus = sorted({text(s) for s in raw} | set(products))
        stock = await self.inventory.available(skus)
        sale = await self.flash.get(session_id)
        if sale is not None and sale.running(self.clock()) and sale.sku in stock:
            stock[sale.sku] = max(0, sale.qty_left)
        return stock

    async def figures(self, session_id: str) -> dict[str, Any]:
        """Carts, orders, revenue and stock of a session, as shown to its hosts."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.scard(keys.figure_carts(session_id))
        pipe.hmget(figures_key(session_id), ["orders", "revenue_cents"])
        carts, (orders, cents) = await pipe.execute()
        return {
            "type": "figures", "carts": int(carts), "orders": int(orders or 0),
            "revenue": round(int(cents or 0) / 100, 2),
            "stock": await self.session_stock(session_id),
        }

    async def watch_figures(self, session_id: str, host: str) -> None:
        """``host`` gets this session's figures pushed from now on."""
        await self.redis.sadd(keys.figure_hosts(session_id), host)

    async def figure_watchers(self, session_id: str) -> set[str]:
        """The session's host and every host who ran a sale in it."""
        raw: Any = await self.redis.smembers(keys.figure_hosts(session_id))
        watchers = {text(h) for h in raw}
        host = (await self._session(session_id))[1]
        if host:
            watchers.add(host)
        return watchers

    async def _session(self, session_id: str) -> tuple[list[str], str | None]:
        """A session's lineup and host; nothing for a session nobody knows."""
        if self.sessions is None:
            return [], None
        try:
            info = await self.sessions.get(session_id)
        except LiveError:
            return [], None
        return list(info.products), info.host

    def _push_figures(self, session_id: str) -> None:
        if self.notifier is None or session_id in self._figures_due:
            return
        self._figures_due.add(session_id)
        self._spawn(self._send_figures(session_id))

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
        queued, self._queue = self._queue, []
        for w in queued:  # not sent to the store: nothing was bought
            _fail(w, LiveError("unavailable", "the server is stopping; try again", 503))
        for task in [*self._tasks, *([self._drainer] if self._drainer else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
