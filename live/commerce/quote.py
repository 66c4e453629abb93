"""A cart priced for its member, now: what the cart shows and what checkout charges, from
the same lines through the same ``price_for`` (pure: the reads are the caller's)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from live.commerce.carts import SALE_ENDED, CartLine
from live.commerce.flash import FlashSale
from live.commerce.pricing import LinePrice, price_for
from live.commerce.types import CartItem, CartView
from live.money import Money
from live.types import Product

NOTES = {SALE_ENDED: "the flash sale ended: this line is now at your price"}


@dataclass(frozen=True)
class PricedLine:
    """A cart line with its product and unit price. ``sale`` is the running flash sale it
    buys under (its units and per-member limit apply); ``ended`` when the line was added
    under a sale that has ended since and was not yet repriced in the cart."""

    line: CartLine
    product: Product
    price: LinePrice
    sale: FlashSale | None
    ended: bool = False

    @property
    def line_total(self) -> Money:
        return self.price.price.times(self.line.qty)

    @property
    def stored(self) -> CartLine:
        """The line as the cart should hold it: repriced when its sale ended."""
        return self.line.repriced() if self.ended else self.line


def price_lines(lines: Sequence[CartLine], products: Mapping[str, Product],
                sales: Mapping[str, FlashSale | None], tier: str | None,
                now: float) -> list[PricedLine]:
    """Each line of a cart at the price ``tier`` pays now; lines of products no longer in
    the catalog are left out. A line added under a flash sale keeps its price while the
    sale runs; once it has ended the line costs what the member now pays."""
    out: list[PricedLine] = []
    for line in lines:
        product = products.get(line.sku)
        if product is None:
            continue
        sale = sales.get(line.session or "") if line.sale else None
        running = (sale is not None and sale.id == line.sale and sale.sku == line.sku
                   and sale.running(now))
        out.append(PricedLine(line, product, price_for(product, tier, sale if running else None,
                                                       now),
                              sale if running else None, bool(line.sale) and not running))
    return out


def cart_view(priced: Sequence[PricedLine], currency: str) -> CartView:
    """The cart as shown: every line with its unit prices and line total, and the total
    (the sum of the line totals, exactly)."""
    items: list[CartItem] = []
    total = Money.zero(currency)
    for p in priced:
        note = p.stored.note
        items.append(CartItem(
            sku=p.line.sku, title=p.product.title, qty=p.line.qty,
            list_price=p.price.list_price.to_wire(), discount=p.price.discount.to_wire(),
            price=p.price.price.to_wire(), line_total=p.line_total.to_wire(),
            reason=p.price.reason, flash_sale=p.sale.id if p.sale else None,
            repriced=note, note=NOTES.get(note or ""),
        ))
        total = total + p.line_total
    return {"lines": items, "count": sum(i["qty"] for i in items), "total": total.to_wire()}
