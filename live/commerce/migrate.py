"""Migrating a store written by v0.1.0 (decimal prices, float orders) to exact money.

v0.1.0 kept a product's and a flash sale's ``price`` as decimal text (``"2.95"``) and an
order's line prices and total as JSON floats (``2.95``). Now every amount is an integer of
minor units with an ISO 4217 code. ``migrate_money`` converts each record that is still in
the old shape (a product or sale hash without ``currency``, an order whose ``total`` is a
number), each amount quantized once, half-up, from its decimal spelling; records already
converted are left alone, so it can run again, or in two processes at once, with the same
result. Host figures kept ``revenue_cents`` as integer pence already: nothing to convert.
The ``MONEY_VERSION`` key marks a store done, so a start of the service costs one read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aredis

from live.commerce import keys
from live.db.client import text
from live.money import Money

log = logging.getLogger("newretail.live")

MONEY_LAYOUT = "1"


@dataclass
class Migrated:
    """How many records of each kind one run converted."""

    products: int = 0
    flash_sales: int = 0
    orders: int = 0

    def __str__(self) -> str:
        return (f"{self.products} products, {self.flash_sales} flash sales, "
                f"{self.orders} orders converted to minor units")


def _decimal(value: Any, currency: str) -> Money:
    """A v0.1.0 amount (decimal text, or a JSON number read as a float) in minor units:
    ``repr`` spells a float by its shortest exact decimal, which is what v0.1.0 wrote."""
    if isinstance(value, bool):
        raise TypeError(f"not an amount: {value!r}")
    if isinstance(value, int | float):
        value = repr(value)
    return Money.from_decimal(text(value), currency)


def migrate_order(raw: dict[str, Any], currency: str) -> dict[str, Any] | None:
    """A v0.1.0 order in today's shape, or None when it is in today's shape already (pure).

    Its lines' prices become ``price`` with ``list_price`` the same and ``discount`` zero
    (v0.1.0 recorded only what was paid); the total is the sum of the lines, exactly."""
    if isinstance(raw.get("total"), dict):
        return None
    lines, total = [], Money.zero(currency)
    for line in raw["lines"]:
        price = _decimal(line["price"], currency)
        qty = int(line["qty"])
        lines.append({**line, "qty": qty, "list_price": price.to_wire(),
                      "discount": Money.zero(currency).to_wire(), "price": price.to_wire()})
        total = total + price.times(qty)
    return {**raw, "lines": lines, "total": total.to_wire()}


async def migrate_money(redis: aredis.Redis, currency: str, force: bool = False) -> Migrated:
    """Convert every v0.1.0 amount in the store to ``currency``'s minor units (see the
    module doc), then mark the store; a marked store is left alone unless ``force``."""
    done = Migrated()
    if not force and text(await redis.get(keys.MONEY_VERSION) or b"") == MONEY_LAYOUT:
        return done
    async for key in redis.scan_iter(match=keys.product("*"), count=500):
        price, cur = await redis.hmget(key, ["price", "currency"])
        if price is not None and cur is None:
            await redis.hset(key, mapping={"price": _decimal(price, currency).amount,
                                           "currency": currency})
            done.products += 1
    async for key in redis.scan_iter(match=keys.flash_key("*"), count=500):
        if text(key).endswith(":bought") or await redis.type(key) not in (b"hash", "hash"):
            continue
        price, cur = await redis.hmget(key, ["price", "currency"])
        if price is not None and cur is None:
            await redis.hset(key, mapping={"price": _decimal(price, currency).amount,
                                           "currency": currency})
            done.flash_sales += 1
    async for key in redis.scan_iter(match=keys.order_key("*"), count=500):
        raw = await redis.get(key)
        if raw is None:
            continue
        order = migrate_order(orjson.loads(raw), currency)
        if order is not None:
            # only if it still exists (an erasure may have removed it meanwhile); a second
            # migrator writes the same record
            await redis.set(key, orjson.dumps(order), xx=True, keepttl=True)
            done.orders += 1
    await redis.set(keys.MONEY_VERSION, MONEY_LAYOUT)
    if done.products or done.flash_sales or done.orders:
        log.warning("migrated the store to exact money: %s", done)
    return done
