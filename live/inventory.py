"""One inventory across the warehouse and the stores, and the atomic reservation of an order.

Stock is one hash per sku (``location -> units``). A live session sells from the pool
(every location); an in-store screen from that store's shelf. An order line ships from
one location: the member's home store when it has the units (same-hour pick-up or
delivery), else the location holding the most (ties: the first by name).

Checkout is one Lua script: it checks every line (product, flash sale, per-member limit,
a location with the units) before it writes anything, then decrements the stock, writes
the order, its indexes and the idempotency record, and empties the bought lines from the
cart. The server runs a script alone, so no interleaving of buyers, in any number of web
processes, can take a count below zero, and a failed check changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aredis

from live import keys
from live.carts import CartLine, cart_key
from live.keys import text

IDEMPOTENCY_TTL = 7 * 86400
FLASH_ACTIVE = "nr:flash:active"  # zset: session id -> ends_at of its running sale
NO_KEY = "nr:flash:-"  # stands for "no flash sale / no session" in the script's KEYS


def flash_key(session_id: str) -> str:
    return f"nr:flash:{session_id}"


def flash_bought_key(session_id: str) -> str:
    return f"nr:flash:{session_id}:bought"


def figures_key(session_id: str) -> str:
    return f"nr:figures:{session_id}"


def order_key(order_id: str) -> str:
    return f"nr:order:{order_id}"


ORDERS = "nr:orders"  # zset: order id -> created_at


def member_orders_key(member_id: str) -> str:
    return f"nr:orders:member:{member_id}"


def idempotency_key(user: str, key: str) -> str:
    return f"nr:idem:{user}:{key}"


def choose_location(stock: Mapping[str, int], qty: int, home: str | None) -> str | None:
    """Where a line of ``qty`` units ships from, or None when no one location has them.

    The home store wins when it holds ``qty``; otherwise the location with the most
    units (ties broken by name so every process picks the same one).
    """
    if home is not None and stock.get(home, 0) >= qty:
        return home
    best: str | None = None
    for location in sorted(stock):
        units = stock[location]
        if units >= qty and (best is None or units > stock[best]):
            best = location
    return best


def pool(stock: Mapping[str, int]) -> int:
    """Units a live session can sell: every location together."""
    return sum(max(0, units) for units in stock.values())


_CHECKOUT = """
local existing = redis.call('GET', KEYS[1])
if existing then return {'dup', existing} end
local n = tonumber(ARGV[8])
if n == 0 then return {'err', 'empty_cart', '', '', ''} end
local member, home, now, session, only = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[7]
if home == '' then home = redis.call('HGET', KEYS[8], 'home_store') or '' end
local ended = {}
local function end_sale(fkey, sid, reason)
  redis.call('HSET', fkey, 'state', 'ended', 'reason', reason, 'ended_at', ARGV[4])
  redis.call('ZREM', KEYS[7], sid)
  table.insert(ended, sid)
end
local plan = {}
for i = 1, n do
  local a, k = 8 + (i - 1) * 3, 8 + (i - 1) * 4
  local sku, qty, sale = ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3]
  local pkey, skey, fkey, bkey = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
  local price = redis.call('HGET', pkey, 'price')
  if not price then
    return {'err', 'not_found', sku, 'unknown product', table.concat(ended, ',')}
  end
  local cents = math.floor(tonumber(price) * 100 + 0.5)
  local flash = nil
  local f = redis.call('HMGET', fkey, 'id', 'sku', 'state', 'ends_at', 'price', 'qty_left',
                       'limit', 'session')
  local live = f[1] and f[2] == sku and f[3] == 'active'
  if live and now >= tonumber(f[4]) then
    end_sale(fkey, f[8], 'expired')
    live = false
  end
  if live and (sale == '' or sale == f[1]) then
    flash = {left = tonumber(f[6]), limit = tonumber(f[7]), sid = f[8]}
    if flash.left < qty then
      return {'err', 'out_of_stock', sku, 'the flash sale is sold out', table.concat(ended, ',')}
    end
    if flash.limit > 0 then
      local had = tonumber(redis.call('HGET', bkey, member) or '0')
      if had + qty > flash.limit then
        return {'err', 'limit_exceeded', sku, 'at most ' .. flash.limit .. ' per member',
                table.concat(ended, ',')}
      end
    end
    cents = math.floor(tonumber(f[5]) * 100 + 0.5)
  elseif sale ~= '' then
    return {'err', 'out_of_stock', sku, 'the flash sale has ended', table.concat(ended, ',')}
  end
  local loc = nil
  if only ~= '' then
    if tonumber(redis.call('HGET', skey, only) or '0') >= qty then loc = only end
  else
    if home ~= '' and tonumber(redis.call('HGET', skey, home) or '0') >= qty then loc = home end
    if not loc then
      local stock, best = redis.call('HGETALL', skey), -1
      for j = 1, #stock, 2 do
        local l, v = stock[j], tonumber(stock[j + 1])
        if v >= qty and (v > best or (v == best and l < loc)) then loc, best = l, v end
      end
    end
  end
  if not loc then
    return {'err', 'out_of_stock', sku, 'not enough units in stock', table.concat(ended, ',')}
  end
  plan[i] = {sku = sku, qty = qty, cents = cents, loc = loc, skey = skey, fkey = fkey,
             bkey = bkey, flash = flash}
end
local total, lines, left = 0, {}, {}
for i = 1, n do
  local p = plan[i]
  redis.call('HINCRBY', p.skey, p.loc, -p.qty)
  local units = 0
  local vals = redis.call('HVALS', p.skey)
  for j = 1, #vals do units = units + math.max(0, tonumber(vals[j])) end
  local flash_left = -1
  if p.flash then
    flash_left = redis.call('HINCRBY', p.fkey, 'qty_left', -p.qty)
    redis.call('HINCRBY', p.bkey, member, p.qty)
    if flash_left == 0 then end_sale(p.fkey, p.flash.sid, 'sold_out') end
  end
  total = total + p.cents * p.qty
  lines[i] = {sku = p.sku, qty = p.qty, price = p.cents / 100, location = p.loc}
  left[i] = {sku = p.sku, pool = units, flash_left = flash_left}
  local cur = redis.call('HGET', KEYS[2], p.sku)
  if cur then
    local rest = tonumber(string.match(cur, '^(%d+)')) - p.qty
    if rest > 0 then
      redis.call('HSET', KEYS[2], p.sku, rest .. string.match(cur, '^%d+(.*)$'))
    else
      redis.call('HDEL', KEYS[2], p.sku)
    end
  end
end
local order = cjson.encode({id = ARGV[1], member_id = member, lines = lines,
  total = total / 100, status = 'confirmed', created_at = now,
  session_id = session ~= '' and session or cjson.null})
redis.call('SET', KEYS[3], order)
redis.call('ZADD', KEYS[4], now, ARGV[1])
redis.call('ZADD', KEYS[5], now, ARGV[1])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[6])
if session ~= '' then
  redis.call('HINCRBY', KEYS[6], 'orders', 1)
  redis.call('HINCRBY', KEYS[6], 'revenue_cents', total)
end
return {'ok', order, cjson.encode(left), table.concat(ended, ',')}
"""


@dataclass(frozen=True)
class StockLeft:
    """Units left after a checkout: the pool, and the flash sale's units (-1: none)."""

    sku: str
    pool: int
    flash_left: int


@dataclass(frozen=True)
class Reservation:
    """What the checkout script did.

    ``order`` is the order as stored (``replayed`` when the idempotency key had been
    used: then it is the first order and nothing else changed); ``code``/``sku``/
    ``message`` say why nothing was reserved; ``ended`` lists sessions whose flash
    sale this script ended (sold out or found expired), to announce exactly once.
    """

    order: dict[str, Any] | None = None
    order_id: str | None = None
    replayed: bool = False
    code: str | None = None
    sku: str | None = None
    message: str = ""
    left: tuple[StockLeft, ...] = ()
    ended: tuple[str, ...] = ()


def _ended(raw: Any) -> tuple[str, ...]:
    return tuple(s for s in text(raw).split(",") if s)


def parse_reply(reply: Sequence[Any]) -> Reservation:
    """The checkout script's reply as a ``Reservation`` (pure; tested without a store)."""
    kind = text(reply[0])
    if kind == "dup":
        return Reservation(order_id=text(reply[1]), replayed=True)
    if kind == "err":
        return Reservation(code=text(reply[1]), sku=text(reply[2]) or None,
                           message=text(reply[3]), ended=_ended(reply[4]))
    if kind != "ok":
        raise ValueError(f"unexpected checkout reply {kind!r}")
    order = orjson.loads(reply[1])
    left = orjson.loads(reply[2])
    return Reservation(
        order=order, order_id=order["id"],
        left=tuple(StockLeft(x["sku"], int(x["pool"]), int(x["flash_left"])) for x in left),
        ended=_ended(reply[3]),
    )


class Inventory:
    """Stock reads and the atomic reservation of an order."""

    def __init__(self, redis: aredis.Redis) -> None:
        self.redis = redis
        self._checkout = redis.register_script(_CHECKOUT)

    async def available(self, skus: Sequence[str], store: str | None = None) -> dict[str, int]:
        """Units per sku: the pool, or the shelf of ``store`` when given."""
        pipe = self.redis.pipeline(transaction=False)
        for sku in skus:
            pipe.hgetall(keys.stock(sku))
        out: dict[str, int] = {}
        for sku, raw in zip(skus, await pipe.execute(), strict=True):
            stock = {text(k): int(v) for k, v in raw.items()}
            out[sku] = max(0, stock.get(store, 0)) if store else pool(stock)
        return out

    async def reserve_order(
        self,
        order_id: str,
        user: str,
        lines: Sequence[CartLine],
        idempotency: str,
        now: float,
        home_store: str | None = None,
        session_id: str | None = None,
        only_location: str | None = None,
        member_key: str | None = None,
    ) -> Reservation:
        """Reserve every line and write the order, or nothing (see the module doc).

        Without ``home_store`` the script reads it from the member record at
        ``member_key`` (one round trip less on the hot path).
        """
        script_keys = [
            idempotency_key(user, idempotency), cart_key(user), order_key(order_id), ORDERS,
            member_orders_key(user), figures_key(session_id) if session_id else NO_KEY,
            FLASH_ACTIVE, member_key or NO_KEY,
        ]
        args: list[Any] = [
            order_id, user, home_store or "", f"{now:.3f}", session_id or "",
            IDEMPOTENCY_TTL, only_location or "", len(lines),
        ]
        for line in lines:
            sale_session = line.session if line.sale else session_id
            script_keys += [
                keys.product(line.sku), keys.stock(line.sku),
                flash_key(sale_session) if sale_session else NO_KEY,
                flash_bought_key(sale_session) if sale_session else NO_KEY,
            ]
            args += [line.sku, line.qty, line.sale or ""]
        reply: Any = await self._checkout(keys=script_keys, args=args)
        return parse_reply(reply)
