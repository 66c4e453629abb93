"""Value types and role sets of the commerce service."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict

from live.commerce.orders import Order
from live.errors import LiveError
from live.money import Money, MoneyWire

CART_ROLES = frozenset({"viewer", "member"})
BUYER_ROLES = frozenset({"member"})
HOST_ROLES = frozenset({"host", "admin"})


class Notifier(Protocol):
    """What the commerce service needs of the live hub."""

    async def publish(self, session_id: str, event: dict[str, Any]) -> int: ...
    async def publish_with_figures(
        self, session_id: str, event: dict[str, Any], kind: str, keys: Sequence[str]) -> int: ...
    async def publish_coalesced(
        self, session_id: str, kind: str, key: str, value: Any) -> None: ...
    async def send_to_user(self, user: str, message: dict[str, Any]) -> None: ...
    async def send_to_users(self, messages: Sequence[tuple[str, dict[str, Any]]]) -> None: ...


class CartItem(TypedDict):
    """A cart line as shown: unit ``list_price``, unit ``discount``, unit ``price`` paid,
    ``line_total`` (price x qty), why (``reason``), the flash sale it buys under, and
    ``repriced`` (``sale_ended``) with a ``note`` when its sale ended."""

    sku: str
    title: str
    qty: int
    list_price: MoneyWire
    discount: MoneyWire
    price: MoneyWire
    line_total: MoneyWire
    reason: str
    flash_sale: str | None
    repriced: str | None
    note: str | None


class CartView(TypedDict):
    lines: list[CartItem]
    count: int
    total: MoneyWire


@dataclass(frozen=True)
class Caller:
    """Who asks: the token's ``sub`` and ``role``."""

    user: str
    role: str


@dataclass(frozen=True)
class Checkout:
    order: Order
    replayed: bool


def check_caller(caller: Caller, roles: frozenset[str], what: str) -> None:
    if caller.role not in roles:
        raise LiveError("forbidden", f"{what} needs one of the roles "
                        f"{', '.join(sorted(roles))}; you are {caller.role}", 403)


def cart_message(view: CartView) -> dict[str, Any]:
    """The personal ``cart`` message a user's devices get."""
    return {"type": "cart", "cart": view}


def empty_cart(currency: str) -> CartView:
    return {"lines": [], "count": 0, "total": Money.zero(currency).to_wire()}


# The host's "orders per minute" counts the orders of the last this many seconds.
ORDERS_WINDOW = 60.0
