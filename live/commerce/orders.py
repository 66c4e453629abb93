"""Orders as stored by the checkout script: one JSON record each, indexed by time
overall and per member. Durable with the datastore's append-only file."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypedDict

import orjson
import redis.asyncio as aredis

from live.commerce.keys import ORDERS, member_orders_key, order_key
from live.db.client import text
from live.errors import LiveError, not_found
from live.money import Money, MoneyWire

ERASED = "erased"


class OrderLine(TypedDict):
    """One line: unit ``list_price``, unit ``discount``, unit ``price`` paid
    (``list_price - discount``), each as priced by ``price_for`` at checkout."""

    sku: str
    qty: int
    list_price: MoneyWire
    discount: MoneyWire
    price: MoneyWire
    location: str


class Order(TypedDict):
    """``total`` is the sum of ``price`` x ``qty`` over the lines, exactly."""

    id: str
    member_id: str
    lines: list[OrderLine]
    total: MoneyWire
    status: Literal["confirmed"]
    created_at: float
    session_id: str | None


def _money(value: Any) -> MoneyWire:
    """Stored money (Lua's JSON may write a whole number as ``295.0`` or ``2.95e+02``)."""
    if not isinstance(value, dict):
        raise LiveError("store_not_migrated", "the store holds a v0.1.0 order; "
                        "run `newretail migrate`", 503)
    amount = value["amount"]
    exact = int(amount)
    if exact != amount:
        raise ValueError(f"a stored amount is not whole: {amount!r}")
    return Money(exact, str(value["currency"])).to_wire()


def normalise(raw: dict[str, Any]) -> Order:
    """An order from its stored JSON."""
    if not isinstance(raw.get("total"), dict):
        raise LiveError("store_not_migrated", "the store holds a v0.1.0 order; "
                        "run `newretail migrate`", 503)
    lines: list[OrderLine] = [
        {"sku": str(x["sku"]), "qty": int(x["qty"]), "list_price": _money(x["list_price"]),
         "discount": _money(x["discount"]), "price": _money(x["price"]),
         "location": str(x["location"])}
        for x in raw["lines"]
    ]
    return {
        "id": str(raw["id"]), "member_id": str(raw["member_id"]), "lines": lines,
        "total": _money(raw["total"]), "status": "confirmed",
        "created_at": float(raw["created_at"]), "session_id": raw.get("session_id"),
    }


class Orders:
    """Reads orders and anonymises a member's."""

    def __init__(self, redis: aredis.Redis) -> None:
        self.redis = redis

    async def get(self, order_id: str) -> Order:
        raw = await self.redis.get(order_key(order_id))
        if raw is None:
            raise not_found(f"order {order_id!r}")
        return normalise(orjson.loads(raw))

    async def many(self, ids: Sequence[str]) -> list[Order]:
        """The orders of ``ids`` that exist, in that order."""
        return await self._many(list(ids))

    async def _many(self, ids: list[Any]) -> list[Order]:
        if not ids:
            return []
        raws: list[Any] = await self.redis.mget([order_key(text(i)) for i in ids])
        return [normalise(orjson.loads(r)) for r in raws if r is not None]

    async def recent(self, limit: int = 50) -> list[Order]:
        """The newest orders of everyone, newest first."""
        ids: list[Any] = await self.redis.zrevrange(ORDERS, 0, limit - 1)
        return await self._many(ids)

    async def of_member(self, member_id: str, limit: int = 50) -> list[Order]:
        ids: list[Any] = await self.redis.zrevrange(member_orders_key(member_id), 0, limit - 1)
        return await self._many(ids)

    async def count(self) -> int:
        return int(await self.redis.zcard(ORDERS))

    async def anonymise(self, member_id: str) -> int:
        """Keep the member's orders for the books but cut them from the member."""
        ids: list[Any] = await self.redis.zrange(member_orders_key(member_id), 0, -1)
        orders = await self._many(ids)
        pipe = self.redis.pipeline(transaction=True)
        for order in orders:
            order["member_id"] = ERASED
            pipe.set(order_key(order["id"]), orjson.dumps(order))
        pipe.delete(member_orders_key(member_id))
        await pipe.execute()
        return len(orders)
