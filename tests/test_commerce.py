"""Commerce core: validation, allocation, carts, flash sales and atomic checkout.

Pure tests first (no store), then the service on a real store.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson
import pytest
import redis.asyncio as aredis

from identity.members import Members
from live.commerce.carts import (
    MAX_LINE_QTY,
    CartLine,
    parse_idempotency_key,
    parse_qty,
    parse_sku,
)
from live.commerce.catalog import Catalog
from live.commerce.checkout import RECORD_GRACE
from live.commerce.flash import parse_flash_start
from live.commerce.inventory import (
    CheckoutRequest,
    checkout_args,
    choose_location,
    parse_batch,
)
from live.commerce.keys import UNRECORDED
from live.commerce.keys import stock as stock_key
from live.commerce.service import Commerce
from live.commerce.types import Caller
from live.errors import LiveError
from live.money import Money
from recommender.events import EventLog
from recommender.types import Event
from tests.commerce_helpers import PEPPER, Clock, gbp, make_commerce, make_members, seed

P5 = gbp(500)

VIEWER = Caller("anon_1", "viewer")
HOST = Caller("host_1", "host")


def member(mid: str) -> Caller:
    return Caller(mid, "member")


# pure -------------------------------------------------------------------------------


def test_home_store_wins_when_it_has_the_units() -> None:
    """An order line ships from the member's home store when it holds the whole qty."""
    assert choose_location({"warehouse": 90, "store-a": 2}, 2, "store-a") == "store-a"


def test_most_stock_wins_otherwise_ties_by_name() -> None:
    """Without enough at home the location with most units wins; ties go to the first name."""
    assert choose_location({"warehouse": 90, "store-a": 2}, 3, "store-a") == "warehouse"
    assert choose_location({"store-b": 7, "store-a": 7}, 1, None) == "store-a"


def test_no_single_location_means_none() -> None:
    """A line is never split: a pool of 6 over two shelves of 3 cannot ship 4 from one place."""
    assert choose_location({"store-a": 3, "store-b": 3}, 4, None) is None


@pytest.mark.parametrize("bad", [0, -1, MAX_LINE_QTY + 1, 10**12, 1.5, "2", None, True])
def test_bad_quantities_are_refused(bad: object) -> None:
    """qty is a whole number from 1 to 99: zero, negative, huge, fractional, text, bool fail."""
    with pytest.raises(LiveError) as err:
        parse_qty(bad)
    assert err.value.code == "invalid_qty"


@pytest.mark.parametrize("bad", ["", "a b", "x" * 65, 7, None, "../etc"])
def test_bad_skus_and_keys_are_refused(bad: object) -> None:
    """Malformed skus and idempotency keys are bad requests, not store lookups."""
    with pytest.raises(LiveError, match="sku"):
        parse_sku(bad)
    with pytest.raises(LiveError, match="idempotency_key"):
        parse_idempotency_key(bad if bad != "../etc" else "a/b")


@pytest.mark.parametrize(("payload", "code"), [
    ({"sku": "mug", "price": P5, "qty": 10, "seconds": 9}, "invalid_duration"),
    ({"sku": "mug", "price": P5, "qty": 10, "seconds": 1201}, "invalid_duration"),
    ({"sku": "mug", "price": P5, "qty": 10, "seconds": 30.5}, "invalid_duration"),
    ({"sku": "mug", "price": gbp(0), "qty": 10, "seconds": 60}, "invalid_price"),
    ({"sku": "mug", "price": float("nan"), "qty": 10, "seconds": 60}, "invalid_price"),
    ({"sku": "mug", "price": "5", "qty": 10, "seconds": 60}, "invalid_price"),
    ({"sku": "mug", "price": 4.99, "qty": 10, "seconds": 60}, "invalid_price"),
    ({"sku": "mug", "price": 499, "qty": 10, "seconds": 60}, "invalid_price"),
    ({"sku": "mug", "price": {"amount": 4.99, "currency": "GBP"}, "qty": 10, "seconds": 60},
     "invalid_price"),
    ({"sku": "mug", "price": {"amount": 499, "currency": "EUR"}, "qty": 10, "seconds": 60},
     "invalid_price"),
    ({"sku": "mug", "price": P5, "qty": 0, "seconds": 60}, "invalid_qty"),
    ({"sku": "mug", "price": P5, "qty": 10, "seconds": 60, "limit": 11}, "invalid_qty"),
])
def test_flash_start_validation(payload: dict[str, Any], code: str) -> None:
    """A flash sale lasts 10 s to 20 min, has a positive price, units, a limit within them."""
    with pytest.raises(LiveError) as err:
        parse_flash_start(payload, "GBP")
    assert err.value.code == code


def test_flash_start_accepts_the_bounds() -> None:
    """10 s and 20 min are both allowed; the price is exact money."""
    req = parse_flash_start({"sku": "mug", "price": gbp(499), "qty": 5, "seconds": 10,
                             "limit": 5}, "GBP")
    assert (req.price, req.seconds, req.limit) == (Money(499, "GBP"), 10, 5)
    assert parse_flash_start({"sku": "mug", "price": gbp(1), "qty": 1, "seconds": 1200},
                             "GBP").limit is None


def test_cart_line_round_trip_and_reply_parsing() -> None:
    """Cart lines keep their flash sale; script replies map to reservations."""
    line = CartLine.decode("mug", CartLine(parse_sku("mug"), 3, "s1", "fs_1").encode())
    assert (line.qty, line.session, line.sale) == (3, "s1", "fs_1")
    results, ended = parse_batch([
        b"s1,s2", [b"dup", b"o_1", b'{"id": "o_1"}'], [b"err", b"out_of_stock", b"mug", b"gone"],
        [b"ok", b'{"id": "o_2"}', b'[{"sku": "mug", "pool": 4, "flash_left": -1}]'],
    ])
    assert ended == ("s1", "s2")
    assert results[0].replayed and results[0].order == {"id": "o_1"}
    assert (results[1].code, results[1].sku, results[1].order) == ("out_of_stock", "mug", None)
    assert results[2].order_id == "o_2" and results[2].left[0].pool == 4
    args = checkout_args([CheckoutRequest("o_9", "m_1", "k", 1.5, "s1", None, "nr:member:m_1")])
    assert orjson.loads(args[-1]) == [
        ["o_9", "m_1", "k", "1.500", "s1", "", "nr:member:m_1", "GBP", []]]


# store ------------------------------------------------------------------------------


async def test_allocation_in_the_script_matches_the_rule(redis: aredis.Redis) -> None:
    """Over random shelves the checkout script picks the location ``choose_location`` names."""
    commerce = await make_commerce(redis)
    await seed(redis)
    [mid] = await make_members(redis, 1, home="store-a")
    rng = random.Random(5)
    for i in range(60):
        shelf = {loc: rng.choice((0, 1, 2, 5, 9)) for loc in ("warehouse", "store-a", "store-b")}
        await redis.delete(stock_key("lamp"))
        await redis.hset(stock_key("lamp"), mapping=shelf)  # type: ignore[arg-type]
        qty = rng.randint(1, 6)
        await commerce.add_to_cart(member(mid), "lamp", qty)
        expected = choose_location(shelf, qty, "store-a")
        if expected is None:
            with pytest.raises(LiveError, match="not enough units"):
                await commerce.checkout(member(mid), f"k{i}")
            await commerce.remove_from_cart(member(mid), "lamp")
            continue
        order = (await commerce.checkout(member(mid), f"k{i}")).order
        assert order["lines"][0]["location"] == expected
        assert int(await redis.hget(stock_key("lamp"), expected)) == shelf[expected] - qty


async def test_a_session_sells_the_pool_a_screen_its_shelf(redis: aredis.Redis) -> None:
    """Available stock is every location together for a live session and one store's shelf
    for that store's screen (negative counts, if an admin wrote one, count as none)."""
    commerce = await make_commerce(redis)
    await seed(redis)
    await redis.hset(stock_key("lamp"), "store-a", -2)
    pooled = await commerce.inventory.available(["mug", "pot", "lamp"])
    assert pooled == {"mug": 57, "pot": 4, "lamp": 1}
    assert await commerce.inventory.available(["mug", "pot", "lamp"], store="store-a") == {
        "mug": 5, "pot": 1, "lamp": 0}
    assert await commerce.inventory.available(["pot"], store="store-b") == {"pot": 0}


async def test_checkout_is_all_or_nothing(redis: aredis.Redis) -> None:
    """One line short of stock: no unit of any line is taken, no order, the cart stays."""
    commerce = await make_commerce(redis)
    await seed(redis)
    [mid] = await make_members(redis, 1)
    await commerce.add_to_cart(member(mid), "mug", 2)
    await commerce.add_to_cart(member(mid), "pot", 4)  # 3 + 1 on two shelves, never 4 in one
    before = {s: await commerce.catalog.stock(s) for s in ("mug", "pot")}
    with pytest.raises(LiveError) as err:
        await commerce.checkout(member(mid), "key-1")
    assert err.value.code == "out_of_stock" and "pot" in err.value.message
    assert {s: await commerce.catalog.stock(s) for s in ("mug", "pot")} == before
    assert (await commerce.cart(mid))["count"] == 6
    assert await commerce.orders.count() == 0


async def test_order_records_lines_total_and_events(redis: aredis.Redis) -> None:
    """A checkout writes the order (lines, prices, locations, total), empties the cart and
    records one purchase event per line."""
    commerce = await make_commerce(redis)
    await seed(redis)
    [mid] = await make_members(redis, 1, home="store-b")
    await commerce.add_to_cart(member(mid), "mug", 2)
    await commerce.add_to_cart(member(mid), "kite", 1)
    result = await commerce.checkout(member(mid), "k")
    order = result.order
    assert not result.replayed and order["member_id"] == mid
    assert [(x["sku"], x["qty"], x["location"]) for x in order["lines"]] == [
        ("kite", 1, "warehouse"), ("mug", 2, "store-b")]
    assert order["total"] == gbp(4499)
    assert (await commerce.cart(mid))["count"] == 0
    assert await commerce.orders.get(order["id"]) == order
    await commerce.settled()  # purchase events follow the answer
    kinds = [e.kind async for _, e in EventLog(redis).read()]
    assert kinds.count("purchase") == 2


async def test_purchase_events_owed_by_a_stopped_process_are_recorded_once(
    redis: aredis.Redis,
) -> None:
    """An order answered by a process that stopped before recording its purchase events is
    recorded by another process once the grace period has passed, once, even when two
    processes look for owed orders; an order recorded as usual owes nothing."""
    clock = Clock()
    await seed(redis)
    [a, b] = await make_members(redis, 2, home="store-b")
    log = EventLog(redis)

    async def stopped(events: list[Event]) -> int:
        if any(e.kind == "purchase" for e in events):
            raise ConnectionResetError("the process stopped before recording")
        return await log.append(events)

    first = Commerce(redis, Catalog(redis), Members(redis, PEPPER), log, record=stopped,
                     clock=clock)
    second = await make_commerce(redis, clock)
    await first.add_to_cart(member(a), "mug", 2)
    owed = (await first.checkout(member(a), "k1")).order
    await second.add_to_cart(member(b), "kite", 1)
    await second.checkout(member(b), "k2")
    await first.settled()
    await second.settled()

    async def purchases() -> list[tuple[str, str, int]]:
        return sorted([(e.user, e.sku, e.qty) async for _, e in log.read()
                       if e.kind == "purchase"])

    assert await purchases() == [(b, "kite", 1)]
    assert await second.record_owed() == 0  # within the grace period: its process may still
    clock.now += RECORD_GRACE + 1
    assert await first.inventory.claim_unrecorded(clock(), RECORD_GRACE) == [owed["id"]]
    assert await second.record_owed() == 0  # claimed by the first process
    clock.now += RECORD_GRACE + 1
    assert await second.record_owed() == 1
    assert await second.record_owed() == 0
    assert await purchases() == [(a, "mug", 2), (b, "kite", 1)]
    assert await redis.zcard(UNRECORDED) == 0


async def test_the_sweep_stops_when_cancelled_even_if_a_library_swallows_it(
    redis: aredis.Redis,
) -> None:
    """Cancelled while a store call turns the cancellation into an error of its own, the
    expiry sweep still ends (it is what a web process's shutdown waits for)."""
    commerce = await make_commerce(redis)
    started = asyncio.Event()

    async def swallowing() -> int:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise ConnectionError("connection closed while reading") from None
        return 0

    commerce.expire_due = swallowing  # type: ignore[method-assign]
    sweep = asyncio.create_task(commerce.run_expiry(0.01))
    await started.wait()
    sweep.cancel()
    done, _ = await asyncio.wait({sweep}, timeout=10)
    assert done == {sweep} and sweep.cancelled()


async def test_checkouts_arriving_together_share_one_script_call(
    redis: aredis.Redis,
) -> None:
    """Checkouts sent in the same tick go to the store together (group commit), and each
    still gets its own answer: an order, a refusal, or the first order for a used key; a
    refused cart keeps its lines and takes no stock."""
    commerce = await make_commerce(redis)
    await seed(redis)
    a, b, c, d, e = await make_members(redis, 5)
    await commerce.add_to_cart(member(a), "pot", 3)  # all 3 pots in the warehouse
    await commerce.add_to_cart(member(b), "pot", 2)  # 1 left in store-a: not enough
    await commerce.add_to_cart(member(d), "mug", 1)
    await commerce.add_to_cart(member(e), "lamp", 1)
    calls: list[int] = []
    reserve = commerce.inventory.reserve_batch

    async def counted(requests: Any) -> Any:
        calls.append(len(requests))
        return await reserve(requests)

    commerce.inventory.reserve_batch = counted  # type: ignore[method-assign]
    outcomes = await asyncio.gather(*(
        commerce.checkout(member(u), key) for u, key in
        ((a, "ka"), (b, "kb"), (c, "kc"), (d, "kd"), (d, "kd"), (e, "ke"))
    ), return_exceptions=True)
    assert calls == [6]
    first, short, empty, order_d, replay_d, order_e = outcomes
    assert not isinstance(first, BaseException) and first.order["lines"][0]["qty"] == 3
    assert isinstance(short, LiveError) and short.code == "out_of_stock"
    assert isinstance(empty, LiveError) and empty.code == "empty_cart"
    assert not isinstance(order_d, BaseException) and not order_d.replayed
    assert not isinstance(replay_d, BaseException) and replay_d.replayed
    assert replay_d.order == order_d.order
    assert not isinstance(order_e, BaseException)
    assert order_e.order["lines"][0]["location"] == "store-b"
    assert (await commerce.cart(b))["count"] == 2 and (await commerce.cart(a))["count"] == 0
    assert await commerce.catalog.stock("pot") == {"warehouse": 0, "store-a": 1}
    assert await commerce.orders.count() == 3


async def test_retried_idempotency_key_returns_the_first_order(redis: aredis.Redis) -> None:
    """The same key again (even with a new cart) returns the first order, takes nothing."""
    commerce = await make_commerce(redis)
    await seed(redis)
    [mid] = await make_members(redis, 1)
    await commerce.add_to_cart(member(mid), "kite", 2)
    first = await commerce.checkout(member(mid), "same")
    await commerce.add_to_cart(member(mid), "kite", 5)
    again = await asyncio.gather(*(commerce.checkout(member(mid), "same") for _ in range(5)))
    assert all(r.replayed and r.order == first.order for r in again)
    assert (await commerce.catalog.stock("kite"))["warehouse"] == 998
    assert await commerce.orders.count() == 1


async def test_bad_cart_and_checkout_requests_change_nothing(redis: aredis.Redis) -> None:
    """Unknown sku, bad qty, empty cart, a viewer or host checking out: refused with a code."""
    commerce = await make_commerce(redis)
    await seed(redis)
    [mid] = await make_members(redis, 1)
    cases: list[tuple[Any, str]] = [
        (commerce.add_to_cart(member(mid), "nope", 1), "not_found"),
        (commerce.add_to_cart(member(mid), "mug", 0), "invalid_qty"),
        (commerce.add_to_cart(member(mid), "mug", -3), "invalid_qty"),
        (commerce.add_to_cart(member(mid), "mug", 10**9), "invalid_qty"),
        (commerce.add_to_cart(member(mid), "mug", 2.5), "invalid_qty"),
        (commerce.checkout(member(mid), "k"), "empty_cart"),
        (commerce.checkout(VIEWER, "k"), "sign_in_required"),
        (commerce.checkout(HOST, "k"), "forbidden"),
        (commerce.add_to_cart(HOST, "mug", 1), "forbidden"),
        (commerce.remove_from_cart(member(mid), "mug"), "not_found"),
        (commerce.start_flash(VIEWER, "s1", {"sku": "mug", "price": gbp(1), "qty": 1,
                                             "seconds": 60}), "forbidden"),
        (commerce.start_flash(member(mid), "s1", {"sku": "mug", "price": gbp(1), "qty": 1,
                                                  "seconds": 60}), "forbidden"),
        (commerce.start_flash(HOST, "s1", {"sku": "mug", "price": gbp(1), "qty": 100,
                                           "seconds": 60}), "insufficient_stock"),
        (commerce.start_flash(HOST, "s1", {"sku": "mug", "price": 9.99, "qty": 1,
                                           "seconds": 60}), "invalid_price"),
        (commerce.start_flash(HOST, "s1", {"sku": "mug", "price": gbp(1250), "qty": 1,
                                           "seconds": 60}), "invalid_price"),
        (commerce.stop_flash(HOST, "s1"), "no_flash_sale"),
    ]
    for call, code in cases:
        with pytest.raises(LiveError) as err:
            await call
        assert err.value.code == code, (code, err.value.message)
    await commerce.add_to_cart(member(mid), "mug", MAX_LINE_QTY)
    with pytest.raises(LiveError, match="at most"):
        await commerce.add_to_cart(member(mid), "mug", 1)
    assert (await commerce.cart(mid))["count"] == MAX_LINE_QTY
    assert await commerce.flash.get("s1") is None and await commerce.orders.count() == 0


async def test_stitch_moves_the_anonymous_cart_into_the_member(redis: aredis.Redis) -> None:
    """After sign-in the viewer's cart is the member's (quantities add up); the anon one is gone."""
    commerce = await make_commerce(redis)
    await seed(redis)
    [mid] = await make_members(redis, 1)
    await commerce.add_to_cart(VIEWER, "mug", 2)
    await commerce.add_to_cart(VIEWER, "kite", 1)
    await commerce.add_to_cart(member(mid), "mug", 1)
    await commerce.stitch(VIEWER.user, mid)
    cart = await commerce.cart(mid)
    assert {i["sku"]: i["qty"] for i in cart["lines"]} == {"mug": 3, "kite": 1}
    assert (await commerce.cart(VIEWER.user))["lines"] == []
    assert (await commerce.checkout(member(mid), "after-stitch")).order["total"] == gbp(5749)


async def test_erasure_drops_the_cart_and_anonymises_orders(redis: aredis.Redis) -> None:
    """An erased member's cart is gone and their orders no longer name them."""
    commerce = await make_commerce(redis)
    await seed(redis)
    [mid] = await make_members(redis, 1)
    await commerce.add_to_cart(member(mid), "kite", 1)
    order = (await commerce.checkout(member(mid), "k")).order
    await commerce.add_to_cart(member(mid), "mug", 1)
    await commerce.erase_users(mid, [mid, "anon_x"])
    assert (await commerce.cart(mid))["lines"] == []
    assert (await commerce.orders.get(order["id"]))["member_id"] == "erased"
    assert await commerce.orders.of_member(mid) == []


async def test_an_erased_user_adds_nothing_whatever_else_is_wrong(
    redis: aredis.Redis,
) -> None:
    """An erased user's cart add is refused as forbidden before any other check (an unknown
    product, a sale's limit) and writes nothing: no cart, no event, no session trace."""
    commerce = await make_commerce(redis)
    await seed(redis)
    erased = {"m_gone"}

    async def is_erased(user: str) -> bool:
        return user in erased

    commerce.is_erased = is_erased
    await _flash(commerce, 5, limit=1)
    for sku, qty in (("kite", 1), ("nope", 1), ("kite", 3)):
        with pytest.raises(LiveError) as err:
            await commerce.add_to_cart(member("m_gone"), sku, qty, "s1")
        assert (err.value.code, err.value.status) == ("forbidden", 403)
    assert (await commerce.cart("m_gone"))["lines"] == []
    assert [e async for _, e in EventLog(redis).read() if e.user == "m_gone"] == []
    assert not await redis.sismember("nr:figures:s1:carts", "m_gone")
    # the same checks, in the same order, for a user who was not erased
    with pytest.raises(LiveError, match="nope"):
        await commerce.add_to_cart(member("m_here"), "nope", 1, "s1")
    with pytest.raises(LiveError) as err:
        await commerce.add_to_cart(member("m_here"), "kite", 3, "s1")
    assert err.value.code == "limit_exceeded"
    await commerce.add_to_cart(member("m_here"), "kite", 1, "s1")
    assert await redis.sismember("nr:figures:s1:carts", "m_here")


async def _flash(commerce: Commerce, qty: int, limit: int | None = None,
                 seconds: int = 60) -> str:
    payload: dict[str, Any] = {"sku": "kite", "price": gbp(999), "qty": qty,
                               "seconds": seconds}
    if limit:
        payload["limit"] = limit
    return (await commerce.start_flash(HOST, "s1", payload)).id


async def test_flash_sale_price_limit_and_sell_out(redis: aredis.Redis) -> None:
    """Flash lines pay the sale price, respect the per-member limit (a line over it leaves
    the cart, saying so), and the last unit ends the sale (sold out)."""
    commerce = await make_commerce(redis)
    await seed(redis)
    a, b = await make_members(redis, 2)
    await _flash(commerce, 3, limit=2)
    with pytest.raises(LiveError, match="per member"):
        await commerce.add_to_cart(member(a), "kite", 3, "s1")
    await commerce.add_to_cart(member(a), "kite", 2, "s1")
    order = (await commerce.checkout(member(a), "a1", "s1")).order
    assert order["lines"][0]["price"] == gbp(999) and order["total"] == gbp(1998)
    assert order["lines"][0]["list_price"] == gbp(1999)
    assert order["lines"][0]["discount"] == gbp(1000)
    await commerce.add_to_cart(member(a), "kite", 1, "s1")
    with pytest.raises(LiveError, match="removed from your cart") as err:
        await commerce.checkout(member(a), "a2", "s1")
    assert err.value.code == "limit_exceeded"
    assert (await commerce.cart(a))["count"] == 0
    await commerce.add_to_cart(member(b), "kite", 1, "s1")
    await commerce.checkout(member(b), "b1", "s1")
    sale = await commerce.flash.get("s1")
    assert sale is not None and (sale.state, sale.reason, sale.qty_left) == ("ended", "sold_out", 0)
    await commerce.add_to_cart(member(b), "kite", 1, "s1")  # no sale now: a regular line
    assert (await commerce.checkout(member(b), "b2", "s1")).order["total"] == gbp(1999)
    figures = await commerce.figures("s1")
    assert (figures["orders"], figures["revenue"], figures["carts"]) == (3, gbp(4996), 2)


async def test_the_cart_an_add_answers_is_the_cart_as_read(redis: aredis.Redis) -> None:
    """The view an add answers with (built from the add's own reply and the product and sale
    it checked) is the cart as a fresh read shows it: other products, lines of a running
    sale at its price, lines of an ended one at the full price."""
    clock = Clock()
    commerce = await make_commerce(redis, clock)
    await seed(redis)
    [mid] = await make_members(redis, 1)
    await commerce.add_to_cart(member(mid), "mug", 2)
    await _flash(commerce, 5, seconds=10)
    view = await commerce.add_to_cart(member(mid), "kite", 1, "s1")
    assert view == await commerce.cart(mid)
    assert [(i["sku"], i["price"], i["flash_sale"] is not None) for i in view["lines"]] == [
        ("kite", gbp(999), True), ("mug", gbp(1250), False)]
    view = await commerce.add_to_cart(member(mid), "lamp", 1, "s1")  # same session, no sale on it
    assert view == await commerce.cart(mid) and view["count"] == 4
    kite = next(i for i in view["lines"] if i["sku"] == "kite")
    assert kite["price"] == gbp(999) and kite["flash_sale"]
    clock.now += 10  # the sale is over: its line shows the member's price, and says so
    view = await commerce.add_to_cart(member(mid), "mug", 1)
    assert view == await commerce.cart(mid)
    kite = next(i for i in view["lines"] if i["sku"] == "kite")
    assert kite["price"] == gbp(1999) and kite["flash_sale"] is None
    assert kite["repriced"] == "sale_ended" and "ended" in (kite["note"] or "")


async def test_flash_line_after_the_sale_is_repriced_then_bought(redis: aredis.Redis) -> None:
    """A line put in the cart during a sale is not silently charged more once it ended:
    the checkout is refused once (``price_changed``), the line is repriced in the cart, and
    the next checkout buys it at the member's price."""
    clock = Clock()
    commerce = await make_commerce(redis, clock)
    await seed(redis)
    [mid] = await make_members(redis, 1)
    await _flash(commerce, 5, seconds=10)
    await commerce.add_to_cart(member(mid), "kite", 1, "s1")
    clock.now += 10
    with pytest.raises(LiveError, match="has ended") as err:
        await commerce.checkout(member(mid), "k", "s1")
    assert err.value.code == "price_changed"
    assert (await commerce.catalog.stock("kite"))["warehouse"] == 1000
    [line] = (await commerce.cart(mid))["lines"]
    assert (line["price"], line["repriced"]) == (gbp(1999), "sale_ended")
    order = (await commerce.checkout(member(mid), "k", "s1")).order
    assert order["total"] == gbp(1999) and (await commerce.cart(mid))["count"] == 0


async def test_a_reloaded_cart_after_the_sale_checks_out(redis: aredis.Redis) -> None:
    """Reading the cart after its sale ended reprices the line there, so the checkout that
    follows succeeds at once at the price the cart showed."""
    clock = Clock()
    commerce = await make_commerce(redis, clock)
    await seed(redis)
    [mid] = await make_members(redis, 1)
    await _flash(commerce, 5, seconds=10)
    await commerce.add_to_cart(member(mid), "kite", 2, "s1")
    clock.now += 10
    shown = await commerce.cart(mid)
    assert shown["lines"][0]["repriced"] == "sale_ended"
    order = (await commerce.checkout(member(mid), "k", "s1")).order
    assert order["total"] == shown["total"] == gbp(3998)


async def test_expiry_is_handled_exactly_once(redis: aredis.Redis) -> None:
    """Many processes noticing the same expiry at once: exactly one of them ends the sale."""
    clock = Clock()
    services = [await make_commerce(redis, clock) for _ in range(4)]
    await seed(redis)
    await _flash(services[0], 5, seconds=10)
    assert await services[0].expire_due() == 0 and await services[0].flash_sale("s1")
    clock.now += 10.001
    ended = await asyncio.gather(*(s.expire_due() for s in services for _ in range(5)))
    assert sum(ended) == 1
    assert await services[1].flash_sale("s1") is None
    with pytest.raises(LiveError, match="no flash sale"):
        await services[2].stop_flash(HOST, "s1")


async def test_a_second_sale_waits_for_the_first(redis: aredis.Redis) -> None:
    """One sale per session: a second start is refused until the first is stopped."""
    commerce = await make_commerce(redis)
    await seed(redis)
    first = await _flash(commerce, 5)
    with pytest.raises(LiveError) as err:
        await _flash(commerce, 5)
    assert err.value.code == "flash_sale_active"
    await commerce.stop_flash(HOST, "s1")
    assert await _flash(commerce, 5) != first


async def test_presenter_search_by_word_starts_and_sku(redis: aredis.Redis) -> None:
    """Search matches whole words or word starts, every query word must match, a sku typed
    in full comes first, and nothing matches nonsense."""
    catalog = await seed(redis)
    assert [p.sku for p in await catalog.search("enam mu")] == ["mug"]
    assert [p.sku for p in await catalog.search("co")] == ["pot"]
    assert [p.sku for p in await catalog.search("kite")] == ["kite"]
    assert [p.sku for p in await catalog.search("lamp oak")] == ["lamp"]
    assert await catalog.search("racing lamp") == []
    assert await catalog.search("zzz") == []
    assert len(await catalog.search("", limit=3)) == 3
