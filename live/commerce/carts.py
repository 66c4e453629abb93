"""In-stream carts, one per user (a member id or an anonymous viewer's id).

A cart is a hash ``sku -> line``. A line is ``"qty"`` or, when it was put in the cart
during a flash sale on that sku, ``"qty|session|sale"`` so checkout can honour the
sale the buyer saw. Once that sale has ended the line is repriced to what the member now
pays and says so: ``"qty|||sale_ended"`` (the cart shows the note until the line changes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aredis

from live.commerce.keys import cart_key
from live.db.client import text
from live.errors import LiveError, bad_request
from live.money import Money
from live.types import Sku

MAX_LINE_QTY = 99
MAX_LINES = 50
CART_TTL = 30 * 86400  # an untouched cart is dropped after 30 days
_SKU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_IDEM = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def parse_sku(value: object) -> Sku:
    """A sku from a client, or ``bad_request`` (the catalog then says whether it exists)."""
    if not isinstance(value, str) or not _SKU.fullmatch(value):  # "$" lets "\n" through
        raise bad_request("sku must be a product code of 1 to 64 letters, digits, . _ -")
    return Sku(value)


def parse_qty(value: object, limit: int = MAX_LINE_QTY) -> int:
    """A whole quantity from 1 to ``limit``; anything else is ``invalid_qty``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise LiveError("invalid_qty", "qty must be a whole number")
    if not 1 <= value <= limit:
        raise LiveError("invalid_qty", f"qty must be from 1 to {limit}")
    return value


def parse_idempotency_key(value: object) -> str:
    if not isinstance(value, str) or not _IDEM.fullmatch(value):
        raise bad_request("idempotency_key must be 1 to 64 letters, digits or . _ : -")
    return value


def parse_price(value: Any, currency: str, field: str = "price",
                code: str = "bad_request") -> Money:
    """A price from a request body: a Money object ``{"amount": 295, "currency": "GBP"}``
    in the catalog's currency, above zero. A float, a bare number or text is refused with
    ``code`` (400) saying so (a bare 5 could mean 5 pounds or 5 pence)."""
    def refuse(message: str) -> LiveError:
        return LiveError(code, message, 400)

    if isinstance(value, bool) or isinstance(value, int | float | str):
        raise refuse(f'{field} must be money: {{"amount": <integer of minor units>, '
                          f'"currency": "{currency}"}}, got {type(value).__name__} {value!r}')
    try:
        money = Money.from_wire(value)
    except (TypeError, ValueError) as exc:
        raise refuse(f"{field}: {exc}") from None
    if money.currency != currency:
        raise refuse(f"{field} must be in {currency}, the catalog's currency; "
                          f"got {money.currency}")
    if money.amount <= 0:
        raise refuse(f"{field} must be above zero")
    return money


SALE_ENDED = "sale_ended"  # the note of a line repriced because its flash sale ended


@dataclass(frozen=True)
class CartLine:
    """One line of a cart; ``session``/``sale`` name the flash sale it was added under;
    ``note`` says why it was repriced (``sale_ended``). ``raw`` is the stored value it was
    read from (checkout checks the cart still holds it)."""

    sku: Sku
    qty: int
    session: str | None = None
    sale: str | None = None
    note: str | None = None
    raw: str = ""

    def encode(self) -> str:
        if self.session and self.sale:
            return f"{self.qty}|{self.session}|{self.sale}"
        if self.note:
            return f"{self.qty}|||{self.note}"
        return str(self.qty)

    def repriced(self) -> CartLine:
        """This line once its flash sale has ended: the member's price, and a note."""
        return CartLine(self.sku, self.qty, note=SALE_ENDED)

    @classmethod
    def decode(cls, sku: str, raw: str) -> CartLine:
        qty, session, sale, note = (raw.split("|") + ["", "", ""])[:4]
        return cls(Sku(sku), int(qty), session or None, sale or None, note or None, raw)


def decode_cart(raw: dict[Any, Any]) -> list[CartLine]:
    """Cart lines from a ``HGETALL`` reply, in sku order."""
    lines = [CartLine.decode(text(k), text(v)) for k, v in raw.items()]
    return sorted(lines, key=lambda line: line.sku)


# KEYS[1] cart; ARGV sku, qty, encoded-suffix ("" or "|session|sale"), max qty, max lines, ttl.
# Returns -1 (line over the max), -2 (cart full) or the whole cart after the add (HGETALL).
_ADD = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local have = 0
if cur then
  have = tonumber(string.match(cur, '^(%d+)'))
elseif redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[5]) then
  return -2
end
local qty = have + tonumber(ARGV[2])
if qty > tonumber(ARGV[4]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], qty .. ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[6])
return redis.call('HGETALL', KEYS[1])
"""

# KEYS[1] cart; ARGV pairs of sku, the line as read, the line to write instead. A line
# changed since it was read is left as it is. Returns how many were written.
_REWRITE = """
local n = 0
for i = 1, #ARGV, 3 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
    n = n + 1
  end
end
return n
"""

# KEYS[1] from-cart, KEYS[2] into-cart; ARGV max qty, ttl. Quantities add up, capped.
_MERGE = """
local from = redis.call('HGETALL', KEYS[1])
for i = 1, #from, 2 do
  local sku, line = from[i], from[i + 1]
  local qty = tonumber(string.match(line, '^(%d+)'))
  local suffix = string.match(line, '^%d+(.*)$')
  local cur = redis.call('HGET', KEYS[2], sku)
  if cur then qty = qty + tonumber(string.match(cur, '^(%d+)')) end
  if qty > tonumber(ARGV[1]) then qty = tonumber(ARGV[1]) end
  redis.call('HSET', KEYS[2], sku, qty .. suffix)
end
redis.call('DEL', KEYS[1])
if #from > 0 then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
return #from / 2
"""


class Carts:
    """Cart storage; validation of skus against the catalog is the caller's job."""

    def __init__(self, redis: aredis.Redis) -> None:
        self.redis = redis
        self._add = redis.register_script(_ADD)
        self._merge = redis.register_script(_MERGE)
        self._rewrite = redis.register_script(_REWRITE)

    async def lines(self, user: str) -> list[CartLine]:
        return decode_cart(await self.redis.hgetall(cart_key(user)))

    async def add(self, user: str, line: CartLine) -> list[CartLine]:
        """Add ``line.qty`` units; returns the cart as it is after the add (one trip)."""
        suffix = line.encode()[len(str(line.qty)):]
        result: Any = await self._add(
            keys=[cart_key(user)],
            args=[line.sku, line.qty, suffix, MAX_LINE_QTY, MAX_LINES, CART_TTL],
        )
        if result == -1:
            raise LiveError("invalid_qty", f"a cart line holds at most {MAX_LINE_QTY} units")
        if result == -2:
            raise LiveError("cart_full", f"a cart holds at most {MAX_LINES} products", 409)
        return decode_cart(dict(zip(result[::2], result[1::2], strict=True)))

    async def rewrite(self, user: str, lines: list[tuple[CartLine, CartLine]]) -> int:
        """Replace each ``(old, new)`` line still as it was read; returns how many."""
        if not lines:
            return 0
        args: list[str] = []
        for old, new in lines:
            args += [old.sku, old.raw, new.encode()]
        return int(await self._rewrite(keys=[cart_key(user)], args=args))

    async def remove(self, user: str, sku: str) -> bool:
        """Remove a product from the cart; False when it was not there."""
        return bool(await self.redis.hdel(cart_key(user), sku))

    async def merge(self, from_user: str, into_user: str) -> int:
        """Move every line of ``from_user``'s cart into ``into_user``'s; returns lines moved."""
        if from_user == into_user:
            return 0
        return int(await self._merge(
            keys=[cart_key(from_user), cart_key(into_user)], args=[MAX_LINE_QTY, CART_TTL],
        ))

    async def drop(self, *users: str) -> None:
        if users:
            await self.redis.delete(*(cart_key(u) for u in users))
