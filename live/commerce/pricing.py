"""The one place a price is decided: what a member pays for a product, now.

Offers, the cart, the pinned card's personal price, checkout and order lines all call
``price_for``, so the price a member is shown is the price they are charged.

Rounding happens once, here: a percentage discount is taken off a line's unit list price
in basis points and rounded half-up to the currency's minor unit; a line costs its unit
price times its quantity, exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypedDict

from live.commerce.flash import FlashSale
from live.money import Money, MoneyWire
from live.types import Product

Reason = Literal["list", "tier", "flash_sale"]
BASIS = 10_000  # basis points in a whole
# A member's tier discount on every product, in basis points: silver 5 %, gold 10 %.
TIER_DISCOUNT_BP: dict[str, int] = {"member": 0, "silver": 500, "gold": 1_000}


class LinePriceWire(TypedDict):
    list_price: MoneyWire
    discount: MoneyWire
    price: MoneyWire
    reason: Reason


@dataclass(frozen=True, slots=True)
class LinePrice:
    """What one unit costs a member: the list price, the discount off it and the price
    paid (``list_price - discount``), and why (``list``, ``tier``, ``flash_sale``)."""

    list_price: Money
    discount: Money
    price: Money
    reason: Reason

    def to_wire(self) -> LinePriceWire:
        return {"list_price": self.list_price.to_wire(), "discount": self.discount.to_wire(),
                "price": self.price.to_wire(), "reason": self.reason}


def percent_off(amount: Money, basis_points: int) -> Money:
    """``basis_points`` / 100 % of a non-negative ``amount``, rounded half-up to the minor
    unit (the one rounding of a price)."""
    if isinstance(basis_points, bool) or not isinstance(basis_points, int) or not (
            0 <= basis_points <= BASIS):
        raise ValueError(f"a discount must be 0 to {BASIS} basis points, got {basis_points!r}")
    if amount.amount < 0:
        raise ValueError(f"cannot discount a negative amount {amount}")
    return Money((amount.amount * basis_points * 2 + BASIS) // (2 * BASIS), amount.currency)


def tier_discount(tier: str | None) -> int:
    """The tier's discount in basis points (unknown tiers and anonymous viewers: none)."""
    return TIER_DISCOUNT_BP.get(tier or "member", 0)


def price_for(product: Product, member_tier: str | None, flash_sale: FlashSale | None,
              now: float) -> LinePrice:
    """What one unit of ``product`` costs a member of ``member_tier`` now.

    The tier's discount applies to every product. ``flash_sale`` is the sale the line was
    put in the cart under (or the session's running one, for a price shown in it): while
    it runs on this product the member pays the sale price, or their tier price when that
    is lower. An ended sale, or one on another product, changes nothing.
    """
    listed = product.price
    tier_price = listed - percent_off(listed, tier_discount(member_tier))
    price: Money = tier_price
    reason: Reason = "tier" if tier_price < listed else "list"
    if (flash_sale is not None and flash_sale.sku == product.sku
            and flash_sale.running(now) and flash_sale.price <= tier_price):
        price, reason = flash_sale.price, "flash_sale"
    return LinePrice(listed, listed - price, price, reason)
