"""Ranking with business rules: pure functions from scored candidates to offers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple, TypedDict

Reason = Literal["buy_again", "for_you", "in_this_live", "trending"]

NON_PRODUCT_CODES = frozenset({
    "POST", "DOT", "M", "m", "C2", "D", "S", "BANK CHARGES", "AMAZONFEE", "CRUK", "PADS", "B",
})
NON_PRODUCT_PREFIXES = ("gift_", "DCGS")
CATEGORY_CAP = 3


def is_offerable(sku: str) -> bool:
    """Postage, fees, manual entries, samples and vouchers are never offered."""
    return sku not in NON_PRODUCT_CODES and not sku.startswith(NON_PRODUCT_PREFIXES)


# Named tuples: one object each where a dataclass instance is two (itself and its
# attributes), and a process keeps many (kept tastes, cached products).
class Candidate(NamedTuple):
    sku: str
    score: float
    reason: Reason


class ProductInfo(NamedTuple):
    """What ranking reads of a product; ``price`` is its list price in minor units (the
    service that shows it prices it for the member)."""

    title: str
    category: str
    price: int


class Offer(TypedDict):
    sku: str
    title: str
    price: int
    reason: Reason
    score: float


def compose_offers(
    candidates: Sequence[Candidate], products: Mapping[str, ProductInfo],
    in_stock: set[str], n: int, category_cap: int = CATEGORY_CAP,
) -> list[Offer]:
    """The first ``n`` candidates (in the given order) that are offerable, known, in stock,
    not already taken, and within ``category_cap`` per category; when the cap leaves the
    slate short, capped candidates fill it in order."""
    chosen: list[Candidate] = []
    spill: list[Candidate] = []
    seen: set[str] = set()
    per_category: dict[str, int] = {}
    for cand in candidates:
        info = products.get(cand.sku)
        if (cand.sku in seen or info is None or cand.sku not in in_stock
                or not is_offerable(cand.sku)):
            continue
        seen.add(cand.sku)
        if per_category.get(info.category, 0) >= category_cap:
            spill.append(cand)
            continue
        per_category[info.category] = per_category.get(info.category, 0) + 1
        chosen.append(cand)
        if len(chosen) == n:
            break
    chosen.extend(spill[: n - len(chosen)])
    return [
        Offer(sku=c.sku, title=products[c.sku].title, price=products[c.sku].price,
              reason=c.reason, score=round(c.score, 4))
        for c in chosen
    ]
