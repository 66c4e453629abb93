"""Shared set-up of the commerce tests: a small catalog with stock, members, a clock."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import redis.asyncio as aredis

from identity.members import Members
from identity.tokens import KeyRing
from live.commerce.catalog import Catalog
from live.commerce.service import Commerce
from live.db.client import connect
from live.money import Money
from live.types import Product, Sku, Store
from recommender.events import EventLog

PEPPER = b"p" * 32
JWT_SPEC = "kt:" + "s" * 40
STORES = (Store("store-a", "A", "London"), Store("store-b", "B", "Leeds"))
PRODUCTS = (
    Product(Sku("mug"), "Enamel Mug", "kitchen", Money(1250, "GBP"), "/i/mug.svg"),
    Product(Sku("pot"), "Copper Teapot", "kitchen", Money(4000, "GBP"), "/i/pot.svg"),
    Product(Sku("kite"), "Racing Kite", "toys", Money(1999, "GBP"), "/i/kite.svg"),
    Product(Sku("lamp"), "Oak Lamp", "home", Money(7500, "GBP"), "/i/lamp.svg"),
)
STOCK = {
    "mug": {"warehouse": 50, "store-a": 5, "store-b": 2},
    "pot": {"warehouse": 3, "store-a": 1},
    "kite": {"warehouse": 1000},
    "lamp": {"warehouse": 0, "store-b": 1},
}


@dataclass
class Clock:
    """A clock the test moves by hand."""

    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def keyring() -> KeyRing:
    return KeyRing.from_spec(JWT_SPEC)


async def seed(redis: aredis.Redis, flash_units: int = 0) -> Catalog:
    """The catalog above; ``flash_units`` puts that many kites in the warehouse instead."""
    catalog = Catalog(redis)
    await catalog.put_stores(STORES)
    await catalog.put_products(PRODUCTS)
    for sku, shelf in STOCK.items():
        for location, qty in shelf.items():
            if sku == "kite" and flash_units:
                qty = flash_units
            await catalog.set_stock(sku, location, qty)
    return catalog


async def make_members(redis: aredis.Redis, count: int, home: str | None = None) -> list[str]:
    members = Members(redis, PEPPER)
    ids = []
    for i in range(count):
        member = await members.create(f"Buyer {i}", home_store=home, member_id=f"m_{i:05d}")
        ids.append(member.id)
    return ids


async def make_commerce(redis: aredis.Redis, clock: Clock | None = None) -> Commerce:
    catalog = Catalog(redis)
    kwargs = {"clock": clock} if clock is not None else {}
    return Commerce(redis, catalog, Members(redis, PEPPER), EventLog(redis), **kwargs)


def seed_sync(store_url: str, members: int = 0, flash_units: int = 0) -> list[str]:
    """``seed`` and ``make_members`` from synchronous tests that run real servers."""
    async def run() -> list[str]:
        redis = connect(store_url)
        try:
            await seed(redis, flash_units)
            return await make_members(redis, members, home="store-a")
        finally:
            await redis.aclose()
    return asyncio.run(run())


def gbp(amount: int) -> dict[str, object]:
    """Money on the wire, in pence."""
    return {"amount": amount, "currency": "GBP"}
