"""Exact money: the value type refuses floats, order lines add up to the total, and the
price shown (offers' and the cart's ``price_for``) is the price charged; the migration of
a v0.1.0 store."""

from __future__ import annotations

import orjson
import pytest
import redis.asyncio as aredis
from hypothesis import given
from hypothesis import strategies as st

from live.commerce.carts import CartLine
from live.commerce.flash import FlashSale
from live.commerce.migrate import migrate_money
from live.commerce.pricing import TIER_DISCOUNT_BP, percent_off, price_for
from live.commerce.quote import cart_view, price_lines
from live.commerce.service import Commerce
from live.commerce.types import Caller
from live.errors import LiveError
from live.money import Money
from live.types import Product, Sku
from tests.commerce_helpers import Clock, gbp, make_commerce, make_members, seed

NOW = 1_800_000_000.0
TIERS = sorted(TIER_DISCOUNT_BP)


def _sale(sku: str, price: int, running: bool) -> FlashSale:
    return FlashSale("fs_1", "s1", Sku(sku), Money(price, "GBP"), 10, 10, None, NOW - 5,
                     NOW + (60 if running else -1), "active")


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_money_never_accepts_a_float(amount: float) -> None:
    """A float amount is refused, directly and on the wire, whatever its value."""
    with pytest.raises(TypeError):
        Money(amount, "GBP")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Money.from_wire({"amount": amount, "currency": "GBP"})


@given(st.integers(0, 10**9), st.integers(0, 10_000))
def test_percent_off_rounds_once_half_up(amount: int, bp: int) -> None:
    """A discount is the exact fraction rounded half-up to the minor unit."""
    off = percent_off(Money(amount, "GBP"), bp).amount
    assert abs(off * 10_000 - amount * bp) <= 5_000
    assert (off * 10_000 - amount * bp) != -5_000  # a half rounds up


@given(st.lists(st.tuples(st.integers(1, 10**7), st.integers(1, 99), st.booleans(),
                          st.booleans()), min_size=1, max_size=12),
       st.sampled_from(TIERS))
def test_cart_lines_add_up_and_match_price_for(
    lines: list[tuple[int, int, bool, bool]], tier: str,
) -> None:
    """Every line's price is ``price_for``'s (what offers show), is list less discount, and
    the lines' totals add up to the cart's total exactly."""
    products, cart, sales = {}, [], {}
    for i, (listed, qty, flash, running) in enumerate(lines):
        sku = f"p{i}"
        products[sku] = Product(Sku(sku), sku, "c", Money(listed, "GBP"), "")
        if flash:
            sales[f"s{i}"] = FlashSale("fs_1", f"s{i}", Sku(sku), Money(max(1, listed // 2),
                                       "GBP"), 10, 10, None, NOW - 5, NOW + (60 if running
                                                                            else -1), "active")
            cart.append(CartLine(Sku(sku), qty, f"s{i}", "fs_1"))
        else:
            cart.append(CartLine(Sku(sku), qty))
    priced = price_lines(cart, products, sales, tier, NOW)
    view = cart_view(priced, "GBP")
    total = 0
    for p, item in zip(priced, view["lines"], strict=True):
        shown = price_for(p.product, tier, p.sale, NOW)
        assert item["price"] == shown.price.to_wire()
        assert shown.list_price - shown.discount == shown.price
        assert item["line_total"]["amount"] == shown.price.amount * p.line.qty
        total += item["line_total"]["amount"]
    assert view["total"] == {"amount": total, "currency": "GBP"}


async def _buy(commerce: Commerce, mid: str, sku: str, qty: int, key: str,
               session: str | None = None) -> dict[str, object]:
    await commerce.add_to_cart(Caller(mid, "member"), sku, qty, session)
    shown = await commerce.cart(mid)
    order = (await commerce.checkout(Caller(mid, "member"), key, session)).order
    assert order["total"] == shown["total"]
    return {"shown": shown, "order": order}


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("flash", [False, True])
async def test_the_price_charged_is_the_price_shown(
    redis: aredis.Redis, tier: str, flash: bool,
) -> None:
    """For every tier, with and without a flash sale, the order charges per unit what
    ``price_for`` (offers) and the cart showed, and its lines add up to its total."""
    commerce = await make_commerce(redis, Clock(NOW))
    await seed(redis)
    [mid] = await make_members(redis, 1)
    await redis.hset(f"nr:member:{mid}", "tier", tier)
    session = None
    if flash:
        await commerce.start_flash(Caller("h", "host"), "s1", {
            "sku": "kite", "price": gbp(1899), "qty": 50, "seconds": 60})
        session = "s1"
    result = await _buy(commerce, mid, "kite", 3, "k", session)
    order: dict = result["order"]  # type: ignore[assignment]
    product = await commerce.catalog.get("kite")
    sale = await commerce.flash.get("s1") if flash else None
    expected = price_for(product, tier, sale, NOW)
    [line] = order["lines"]
    assert line["price"] == expected.price.to_wire() == result["shown"]["lines"][0]["price"]  # type: ignore[index]
    assert (line["list_price"], line["discount"]) == (gbp(1999), expected.discount.to_wire())
    assert order["total"]["amount"] == sum(x["price"]["amount"] * x["qty"]
                                           for x in order["lines"])
    if tier == "gold":
        assert line["price"] == gbp(1799)  # 10 % off 19.99 is 2.00 (1.999, half-up)


async def test_a_line_over_the_limit_is_cut_and_the_cart_checks_out(
    redis: aredis.Redis,
) -> None:
    """A checkout over the per-member limit says the line was cut to what is allowed; the
    cart then checks out at the sale price."""
    commerce = await make_commerce(redis, Clock(NOW))
    await seed(redis)
    [mid] = await make_members(redis, 1)
    buyer = Caller(mid, "member")
    await commerce.start_flash(Caller("h", "host"), "s1", {
        "sku": "kite", "price": gbp(999), "qty": 50, "seconds": 60, "limit": 3})
    await commerce.add_to_cart(buyer, "kite", 2, "s1")
    await commerce.checkout(buyer, "a", "s1")
    await commerce.add_to_cart(buyer, "kite", 2, "s1")
    with pytest.raises(LiveError, match="the line now holds 1") as err:
        await commerce.checkout(buyer, "b", "s1")
    assert err.value.code == "limit_exceeded"
    assert (await commerce.cart(mid))["lines"][0]["qty"] == 1
    order = (await commerce.checkout(buyer, "b", "s1")).order
    assert order["total"] == gbp(999)


async def test_a_v010_store_is_migrated_the_same_twice(redis: aredis.Redis) -> None:
    """Products, flash sales and orders written as v0.1.0 wrote them (decimal text and JSON
    floats) become minor units; a second run (forced) changes nothing, and the service
    reads the result."""
    await redis.hset("nr:product:mug", mapping={
        "sku": "mug", "title": "Enamel Mug", "category": "kitchen", "price": "2.95",
        "image": ""})
    await redis.zadd("nr:catalog", {"mug": 0})
    await redis.hset("nr:flash:s1", mapping={
        "id": "fs_1", "sku": "mug", "price": "1.10", "qty_total": 5, "qty_left": 4,
        "limit": 0, "started_at": "1.000", "ends_at": "2.000", "session": "s1",
        "state": "ended"})
    await redis.hset("nr:flash:s1:bought", "m_1", 1)
    old = {"id": "o_1", "member_id": "m_1", "lines": [
        {"sku": "mug", "qty": 3, "price": 2.95, "location": "warehouse"},
        {"sku": "mug", "qty": 1, "price": 1.1, "location": "warehouse"}],
        "total": 9.95, "status": "confirmed", "created_at": 1.5, "session_id": "s1"}
    await redis.set("nr:order:o_1", orjson.dumps(old))
    with pytest.raises(LiveError) as err:
        await (await make_commerce(redis)).catalog.get("mug")
    assert err.value.code == "store_not_migrated"
    first = await migrate_money(redis, "GBP")
    assert (first.products, first.flash_sales, first.orders) == (1, 1, 1)
    snapshot = {k: await redis.dump(k) for k in
                (b"nr:product:mug", b"nr:flash:s1", b"nr:order:o_1")}
    again = await migrate_money(redis, "GBP", force=True)
    assert (again.products, again.flash_sales, again.orders) == (0, 0, 0)
    assert snapshot == {k: await redis.dump(k) for k in snapshot}
    commerce = await make_commerce(redis)
    assert (await commerce.catalog.get("mug")).price == Money(295, "GBP")
    sale = await commerce.flash.get("s1")
    assert sale is not None and sale.price == Money(110, "GBP")
    order = await commerce.orders.get("o_1")
    assert [x["price"] for x in order["lines"]] == [gbp(295), gbp(110)]
    assert order["total"] == gbp(995) and order["lines"][0]["discount"] == gbp(0)
    assert await migrate_money(redis, "GBP") == type(first)()  # marked: nothing to look at
