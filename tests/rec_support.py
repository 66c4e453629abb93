"""Shared recommender fixtures: a synthetic shop with a known answer, and a retail CSV writer."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

import redis.asyncio as aredis

from identity.members import Members
from live.commerce.catalog import Catalog
from live.money import Money
from live.types import WAREHOUSE, Product, Sku, Store
from recommender.service import Recommender
from recommender.train import AlsParams
from recommender.types import Event

GROUPS, PER_GROUP = 4, 10
PARAMS = AlsParams(factors=8, iterations=10)


def sku(group: int, i: int) -> str:
    return f"{group}{i:03d}"


async def never_erased(users: Sequence[str]) -> set[str]:
    return set()


async def seed(redis: aredis.Redis, now: float) -> tuple[Catalog, Members]:
    """4 categories of 10 products, all in the warehouse, store s1 holds only group 0;
    shopper u{g}-{k} bought 6 products of group g."""
    catalog = Catalog(redis)
    await catalog.put_stores([Store("s1", "One", "Town")])
    await catalog.put_products(
        Product(Sku(sku(g, i)), f"Item {g} {i}", f"cat{g}", Money(1000 + 100 * i, "GBP"), "")
        for g in range(GROUPS) for i in range(PER_GROUP))
    for g in range(GROUPS):
        for i in range(PER_GROUP):
            await catalog.set_stock(sku(g, i), WAREHOUSE, 5)
            if g == 0:
                await catalog.set_stock(sku(g, i), "s1", 2)
    rec = Recommender(redis, Path("unused"), never_erased)
    events = []
    for g in range(GROUPS):
        for k in range(25):
            for i in range(6):
                events.append(Event(f"u{g}-{k}", sku(g, (k + i) % PER_GROUP), "purchase",
                                    now - 86400 * (i + 1)))
    await rec.record(events)
    return catalog, Members(redis, b"pepper-for-tests-0123456789")


HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"


def write_csv(path: Path, lines: list[str]) -> Path:
    """A gzipped retail CSV (the Online Retail data set's columns) with ``lines``."""
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(HEADER + "".join(line + "\n" for line in lines))
    return path
