"""Flash sales: one at a time per live session, a price, a number of units, a deadline.

A sale ends when it sells out (inside the checkout script), when a host stops it, or
when its time is up. Ending is a compare-and-set in a script (``active`` -> ``ended``),
so whichever process notices first (a checkout, a snapshot, the sweep every process
runs) ends it and announces ``flash_sale_ended``, and only that one.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

import redis.asyncio as aredis

from live.commerce.carts import parse_price, parse_qty, parse_sku
from live.commerce.keys import FLASH_ACTIVE, flash_bought_key, flash_key
from live.db.client import text
from live.errors import LiveError
from live.money import Money, MoneyWire
from live.types import Sku

MIN_SECONDS = 10
MAX_SECONDS = 20 * 60
MAX_FLASH_QTY = 100_000
EndReason = Literal["sold_out", "stopped", "expired"]


class FlashSaleMsg(TypedDict):
    type: Literal["flash_sale"]
    id: str
    sku: str
    price: MoneyWire
    qty_total: int
    qty_left: int
    limit: int | None
    ends_at: float


class FlashSaleEndedMsg(TypedDict):
    type: Literal["flash_sale_ended"]
    id: str
    sku: str
    reason: str
    sold: int


@dataclass(frozen=True)
class FlashRequest:
    """A validated ``flash.start``."""

    sku: Sku
    price: Money
    qty: int
    seconds: int
    limit: int | None


def parse_flash_start(payload: Mapping[str, Any], currency: str) -> FlashRequest:
    """Validate a ``flash.start`` payload (pure): 10 s to 20 min, a price as Money in
    ``currency`` above zero (a float or a bare number is ``invalid_price``), 1 to 100,000
    units, an optional per-member limit no larger than the units."""
    sku = parse_sku(payload.get("sku"))
    price = parse_price(payload.get("price"), currency, code="invalid_price")
    qty = parse_qty(payload.get("qty"), MAX_FLASH_QTY)
    seconds = payload.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not (
        MIN_SECONDS <= seconds <= MAX_SECONDS
    ):
        raise LiveError("invalid_duration",
                        f"seconds must be a whole number from {MIN_SECONDS} to {MAX_SECONDS}")
    limit = payload.get("limit")
    if limit is not None:
        limit = parse_qty(limit, qty)
    return FlashRequest(sku, price, qty, seconds, limit)


@dataclass(frozen=True)
class FlashSale:
    """A flash sale as stored."""

    id: str
    session_id: str
    sku: Sku
    price: Money
    qty_total: int
    qty_left: int
    limit: int | None
    started_at: float
    ends_at: float
    state: Literal["active", "ended"]
    reason: str = ""

    def running(self, now: float) -> bool:
        return self.state == "active" and now < self.ends_at

    def message(self) -> FlashSaleMsg:
        return {
            "type": "flash_sale", "id": self.id, "sku": self.sku, "price": self.price.to_wire(),
            "qty_total": self.qty_total, "qty_left": max(0, self.qty_left),
            "limit": self.limit, "ends_at": self.ends_at,
        }

    def ended_message(self, reason: str) -> FlashSaleEndedMsg:
        return {
            "type": "flash_sale_ended", "id": self.id, "sku": self.sku, "reason": reason,
            "sold": self.qty_total - max(0, self.qty_left),
        }


def decode_sale(raw: Mapping[Any, Any]) -> FlashSale | None:
    """A sale from its hash: ``price`` is minor units, ``currency`` its code."""
    if not raw:
        return None
    f = {text(k): text(v) for k, v in raw.items()}
    if "currency" not in f:
        raise LiveError("store_not_migrated", "the store holds a v0.1.0 flash sale; "
                        "run `newretail migrate`", 503)
    limit = int(f["limit"])
    return FlashSale(
        id=f["id"], session_id=f["session"], sku=Sku(f["sku"]),
        price=Money(int(f["price"]), f["currency"]),
        qty_total=int(f["qty_total"]), qty_left=int(f["qty_left"]),
        limit=limit or None, started_at=float(f["started_at"]), ends_at=float(f["ends_at"]),
        state="active" if f["state"] == "active" else "ended", reason=f.get("reason", ""),
    )


# KEYS flash, bought, active; ARGV id sku price (minor units) qty limit now ends_at session
# currency
_START = """
local f = redis.call('HMGET', KEYS[1], 'id', 'state', 'ends_at')
local replaced = ''
if f[2] == 'active' then
  if tonumber(ARGV[6]) < tonumber(f[3]) then return {'busy', f[1]} end
  replaced = f[1]
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'sku', ARGV[2], 'price', ARGV[3],
  'qty_total', ARGV[4], 'qty_left', ARGV[4], 'limit', ARGV[5], 'started_at', ARGV[6],
  'ends_at', ARGV[7], 'session', ARGV[8], 'state', 'active', 'currency', ARGV[9])
redis.call('ZADD', KEYS[3], ARGV[7], ARGV[8])
return {'ok', replaced}
"""

# KEYS flash, active; ARGV id ('' any) reason now only-if-expired
_END = """
local f = redis.call('HMGET', KEYS[1], 'id', 'state', 'ends_at', 'session')
if f[2] ~= 'active' then return 0 end
if ARGV[1] ~= '' and f[1] ~= ARGV[1] then return 0 end
if ARGV[4] == '1' and tonumber(ARGV[3]) < tonumber(f[3]) then return 0 end
redis.call('HSET', KEYS[1], 'state', 'ended', 'reason', ARGV[2], 'ended_at', ARGV[3])
redis.call('ZREM', KEYS[2], f[4])
return 1
"""


class FlashSales:
    """Flash sales in the datastore."""

    def __init__(self, redis: aredis.Redis) -> None:
        self.redis = redis
        self._start = redis.register_script(_START)
        self._end = redis.register_script(_END)

    async def get(self, session_id: str) -> FlashSale | None:
        return decode_sale(await self.redis.hgetall(flash_key(session_id)))

    async def start(
        self, session_id: str, request: FlashRequest, now: float,
    ) -> tuple[FlashSale, str | None]:
        """Start a sale; returns it and the id of an expired one it replaced (to announce).

        Raises ``flash_sale_active`` (409) while another sale of the session runs.
        """
        sale_id = "fs_" + secrets.token_hex(6)
        reply: Any = await self._start(
            keys=[flash_key(session_id), flash_bought_key(session_id), FLASH_ACTIVE],
            args=[sale_id, request.sku, request.price.amount, request.qty,
                  request.limit or 0, f"{now:.3f}", f"{now + request.seconds:.3f}", session_id,
                  request.price.currency],
        )
        if text(reply[0]) == "busy":
            raise LiveError("flash_sale_active",
                            "a flash sale is running in this session; stop it first", 409)
        sale = await self.get(session_id)
        if sale is None:  # deleted between the two calls (an erasure of the session)
            raise LiveError("conflict", "the flash sale was removed", 409)
        return sale, text(reply[1]) or None

    async def end(
        self, session_id: str, reason: EndReason, now: float,
        sale_id: str = "", only_if_expired: bool = False,
    ) -> bool:
        """Mark the running sale ended; True only for the one caller that did it."""
        done = await self._end(
            keys=[flash_key(session_id), FLASH_ACTIVE],
            args=[sale_id, reason, f"{now:.3f}", "1" if only_if_expired else "0"],
        )
        return bool(done)

    async def due(self, now: float) -> list[str]:
        """Sessions whose running sale's time is up."""
        raw: Any = await self.redis.zrangebyscore(FLASH_ACTIVE, "-inf", now)
        return [text(s) for s in raw]
