"""One inventory across the warehouse and the stores, and the atomic reservation of an order.

Stock is one hash per sku (``location -> units``). A live session sells from the pool
(every location); an in-store screen from that store's shelf. An order line ships from
one location: the member's home store when it has the units (same-hour pick-up or
delivery), else the location holding the most (ties: the first by name).

Checkout is one Lua script: for each cart it checks every line (product, flash sale,
per-member limit, a location with the units) before it writes anything, then decrements
the stock, writes the order, its indexes and the idempotency record, and empties the cart.
The server runs a script alone, so no interleaving of buyers, in any number of web
processes, can take a count below zero, and a failed check changes nothing. One call
takes a batch of checkouts (those that arrived together), each still all or nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aredis

from live.commerce import keys
from live.commerce.keys import (
    FLASH_ACTIVE,
    IDEMPOTENCY_PREFIX,
    ORDERS,
    UNRECORDED,
    cart_key,
    figures_key,
    flash_key,
    member_orders_key,
    order_key,
)
from live.db.client import text

IDEMPOTENCY_TTL = 7 * 86400


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


# One call checks out a batch of carts, one after another, each all or nothing (group
# commit: one round trip and one fsync serve every checkout that arrived together). Each
# cart is read here, inside the script, so nothing can change it between the read and the
# reservation; the keys of its lines follow from the cart, so they are built here from the
# prefixes in ARGV (this needs one datastore server, not a cluster).
# KEYS: orders index, running flash sales, orders whose purchase events are owed.
# ARGV: idempotency ttl, key prefixes (idempotency, cart, order, member orders, figures,
# flash sale, product, stock), then the checkouts as one JSON array (one argument to pack
# instead of nine per checkout), each: order id, member, idempotency key, now, session
# ('' none), home store ('' read it from the member record), member record key, currency,
# and the quote: the cart's lines as priced by ``price_for`` before the call, each
# [sku, line as stored, qty, unit list price, unit discount, unit price (minor units),
# flash sale session, flash sale id ('' none)]. The script charges the quoted prices after
# checking the cart still holds exactly the quoted lines, each product's list price is
# still the quoted one, and each flash line's sale still runs; else nothing is bought.
_CHECKOUT = """
local ttl = ARGV[1]
local P_IDEM, P_CART, P_ORDER, P_MORDERS = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local P_FIG, P_FLASH, P_PRODUCT, P_STOCK = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local ended = {}
local function end_sale(fkey, sid, reason, at)
  redis.call('HSET', fkey, 'state', 'ended', 'reason', reason, 'ended_at', at)
  redis.call('ZREM', KEYS[2], sid)
  table.insert(ended, sid)
end
local function by_sku(a, b) return a.sku < b.sku end

local function checkout(order_id, member, idem, at, session, home, mkey, currency, quoted)
  local ikey = P_IDEM .. member .. ':' .. idem
  local existing = redis.call('GET', ikey)
  if existing then
    return {'dup', existing, redis.call('GET', P_ORDER .. existing) or ''}
  end
  local ckey = P_CART .. member
  local raw = redis.call('HGETALL', ckey)
  if #raw == 0 then return {'err', 'empty_cart', '', 'the cart is empty'} end
  local changed = {'err', 'cart_changed', '', 'your cart changed meanwhile; check out again'}
  if #raw ~= 2 * #quoted then return changed end
  local cart = {}
  for j = 1, #raw, 2 do cart[raw[j]] = raw[j + 1] end
  local now = tonumber(at)
  if home == '' and mkey ~= '' then home = redis.call('HGET', mkey, 'home_store') or '' end
  local plan = {}
  for i, q in ipairs(quoted) do
    local sku, line, qty, list, disc, price, ss, sale = q[1], q[2], q[3], q[4], q[5], q[6],
      q[7], q[8]
    if cart[sku] ~= line then return changed end
    local listed = redis.call('HMGET', P_PRODUCT .. sku, 'price', 'currency')
    if not listed[1] then return {'err', 'not_found', sku, 'unknown product'} end
    if tonumber(listed[1]) ~= list or listed[2] ~= currency then
      return {'err', 'price_changed', sku, 'its list price changed; check your cart again'}
    end
    local fkey, bkey, flash = nil, nil, nil
    if sale ~= '' then
      fkey, bkey = P_FLASH .. ss, P_FLASH .. ss .. ':bought'
      local f = redis.call('HMGET', fkey, 'id', 'sku', 'state', 'ends_at', 'price', 'qty_left',
                           'limit', 'session')
      local live = f[1] == sale and f[2] == sku and f[3] == 'active'
      if live and now >= tonumber(f[4]) then
        end_sale(fkey, f[8], 'expired', at)
        live = false
      end
      if not live then
        if f[1] == sale and redis.call('HGET', fkey, 'reason') == 'sold_out' then
          return {'err', 'out_of_stock', sku, 'the flash sale is sold out'}
        end
        return {'err', 'price_changed', sku,
                'the flash sale has ended; your cart now shows the price you pay'}
      end
      flash = {left = tonumber(f[6]), limit = tonumber(f[7]), sid = f[8]}
      if flash.left < qty then
        return {'err', 'out_of_stock', sku, 'the flash sale is sold out'}
      end
      if flash.limit > 0 then
        local had = tonumber(redis.call('HGET', bkey, member) or '0')
        if had + qty > flash.limit then
          -- The line is cut to what the limit still allows, or goes: the cart can be
          -- checked out again, and the refusal says what happened to the line.
          local allowed = flash.limit - had
          local why = 'at most ' .. flash.limit .. ' per member at the sale price'
          if allowed > 0 then
            redis.call('HSET', ckey, sku, allowed .. string.match(line, '^%d+(.*)$'))
            return {'err', 'limit_exceeded', sku, why .. ': the line now holds ' .. allowed}
          end
          redis.call('HDEL', ckey, sku)
          return {'err', 'limit_exceeded', sku,
                  why .. ' and you have bought them: the line was removed from your cart'}
        end
      end
    end
    local skey = P_STOCK .. sku
    local loc = nil
    if home ~= '' and tonumber(redis.call('HGET', skey, home) or '0') >= qty then loc = home end
    if not loc then
      local stock, best = redis.call('HGETALL', skey), -1
      for j = 1, #stock, 2 do
        local l, v = stock[j], tonumber(stock[j + 1])
        if v >= qty and (v > best or (v == best and l < loc)) then loc, best = l, v end
      end
    end
    if not loc then return {'err', 'out_of_stock', sku, 'not enough units in stock'} end
    plan[i] = {sku = sku, qty = qty, list = list, disc = disc, price = price, loc = loc,
               skey = skey, fkey = fkey, bkey = bkey, flash = flash}
  end
  local total, olines, left = 0, {}, {}
  for i, p in ipairs(plan) do
    redis.call('HINCRBY', p.skey, p.loc, -p.qty)
    local units = 0
    local vals = redis.call('HVALS', p.skey)
    for j = 1, #vals do units = units + math.max(0, tonumber(vals[j])) end
    local flash_left = -1
    if p.flash then
      flash_left = redis.call('HINCRBY', p.fkey, 'qty_left', -p.qty)
      redis.call('HINCRBY', p.bkey, member, p.qty)
      if flash_left == 0 then end_sale(p.fkey, p.flash.sid, 'sold_out', at) end
    end
    total = total + p.price * p.qty
    olines[i] = {sku = p.sku, qty = p.qty, list_price = {amount = p.list, currency = currency},
                 discount = {amount = p.disc, currency = currency},
                 price = {amount = p.price, currency = currency}, location = p.loc}
    left[i] = {sku = p.sku, pool = units, flash_left = flash_left}
  end
  -- Every line of the cart was bought whole: the cart is now empty.
  redis.call('DEL', ckey)
  local order = cjson.encode({id = order_id, member_id = member, lines = olines,
    total = {amount = total, currency = currency}, status = 'confirmed', created_at = now,
    session_id = session ~= '' and session or cjson.null})
  redis.call('SET', P_ORDER .. order_id, order)
  redis.call('ZADD', KEYS[1], now, order_id)
  redis.call('ZADD', KEYS[3], now, order_id)
  redis.call('ZADD', P_MORDERS .. member, now, order_id)
  redis.call('SET', ikey, order_id, 'EX', ttl)
  if session ~= '' then
    redis.call('HINCRBY', P_FIG .. session, 'orders', 1)
    redis.call('HINCRBY', P_FIG .. session, 'revenue_cents', total)
  end
  return {'ok', order, cjson.encode(left)}
end

local out = {''}
for _, c in ipairs(cjson.decode(ARGV[10])) do
  out[#out + 1] = checkout(c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9])
end
out[1] = table.concat(ended, ',')
return out
"""


# Orders owed for at least ARGV[1], each claimed (its mark moved to ARGV[2]) so that
# another process takes it only if this one has not recorded it a grace period later.
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return ids
"""


@dataclass(frozen=True)
class StockLeft:
    """Units left after a checkout: the pool, and the flash sale's units (-1: none)."""

    sku: str
    pool: int
    flash_left: int


@dataclass(frozen=True)
class CheckoutRequest:
    """One checkout of a batch: the whole cart of ``user`` becomes order ``order_id``.

    ``member_key`` names the member record the script reads the home store from when
    ``home_store`` is not given.
    """

    order_id: str
    user: str
    idempotency: str
    now: float
    session_id: str | None = None
    home_store: str | None = None
    member_key: str | None = None
    currency: str = "GBP"
    lines: tuple[QuotedLine, ...] = ()


@dataclass(frozen=True)
class QuotedLine:
    """A cart line as priced for the buyer (``price_for``), amounts in minor units; the
    script charges these and checks the cart and catalog still match them."""

    sku: str
    stored: str
    qty: int
    list_price: int
    discount: int
    price: int
    sale_session: str = ""
    sale: str = ""

    def args(self) -> list[Any]:
        return [self.sku, self.stored, self.qty, self.list_price, self.discount, self.price,
                self.sale_session, self.sale]


@dataclass(frozen=True)
class Reservation:
    """What the checkout script did for one checkout.

    ``order`` is the order as stored; ``replayed`` when the idempotency key had been used
    (then ``order`` is the first order and nothing changed); ``code``/``sku``/``message``
    say why nothing was reserved; ``left`` is the stock after an order.
    """

    order: dict[str, Any] | None = None
    order_id: str | None = None
    replayed: bool = False
    code: str | None = None
    sku: str | None = None
    message: str = ""
    left: tuple[StockLeft, ...] = ()


# The key prefixes the script builds its keys from (ARGV 2-9).
_PREFIXES = (
    IDEMPOTENCY_PREFIX, cart_key(""), order_key(""), member_orders_key(""),
    figures_key(""), flash_key(""), keys.product(""), keys.stock(""),
)


def checkout_args(requests: Sequence[CheckoutRequest]) -> list[Any]:
    """The script's ARGV for a batch (pure)."""
    return [IDEMPOTENCY_TTL, *_PREFIXES, orjson.dumps([
        (r.order_id, r.user, r.idempotency, f"{r.now:.3f}", r.session_id or "",
         r.home_store or "", r.member_key or "", r.currency, [q.args() for q in r.lines])
        for r in requests])]


def parse_result(result: Sequence[Any]) -> Reservation:
    """One checkout's part of the script's reply as a ``Reservation`` (pure)."""
    kind = text(result[0])
    if kind == "dup":
        raw = result[2]
        return Reservation(order=orjson.loads(raw) if raw else None,
                           order_id=text(result[1]), replayed=True)
    if kind == "err":
        return Reservation(code=text(result[1]), sku=text(result[2]) or None,
                           message=text(result[3]))
    if kind != "ok":
        raise ValueError(f"unexpected checkout reply {kind!r}")
    order = orjson.loads(result[1])
    return Reservation(
        order=order, order_id=order["id"],
        left=tuple(StockLeft(x["sku"], int(x["pool"]), int(x["flash_left"]))
                   for x in orjson.loads(result[2])),
    )


def parse_batch(reply: Sequence[Any]) -> tuple[list[Reservation], tuple[str, ...]]:
    """The script's reply: one ``Reservation`` per checkout, in order, and the sessions
    whose flash sale the batch ended (sold out or found expired), to announce once."""
    ended = tuple(s for s in text(reply[0]).split(",") if s)
    return [parse_result(r) for r in reply[1:]], ended


class Inventory:
    """Stock reads and the atomic reservation of orders."""

    def __init__(self, redis: aredis.Redis) -> None:
        self.redis = redis
        self._checkout = redis.register_script(_CHECKOUT)
        self._claim = redis.register_script(_CLAIM)

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

    async def reserve_batch(
        self, requests: Sequence[CheckoutRequest],
    ) -> tuple[list[Reservation], tuple[str, ...]]:
        """Check out every request in one script call, one after another, each all or
        nothing (see the module doc); returns their outcomes and the sessions whose
        flash sale ended."""
        reply: Any = await self._checkout(keys=[ORDERS, FLASH_ACTIVE, UNRECORDED],
                                          args=checkout_args(requests))
        return parse_batch(reply)

    async def recorded(self, order_ids: Sequence[str]) -> None:
        """The purchase events of these orders are in the event log."""
        if order_ids:
            await self.redis.zrem(UNRECORDED, *order_ids)

    async def claim_unrecorded(self, now: float, grace: float, limit: int = 100) -> list[str]:
        """Orders whose purchase events are still owed ``grace`` seconds after the order (or
        after another claim), claimed for ``grace`` seconds."""
        raw: Any = await self._claim(keys=[UNRECORDED],
                                     args=[f"{now - grace:.3f}", f"{now:.3f}", limit])
        return [text(x) for x in raw]

    async def reserve_order(self, request: CheckoutRequest) -> tuple[Reservation, tuple[str, ...]]:
        """One checkout on its own."""
        results, ended = await self.reserve_batch([request])
        return results[0], ended
