"""Demo data, made deterministically: a catalog, stores with stock, members with
distinct tastes and their history, so offers visibly differ between members."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass

from identity.members import Members
from live.commerce import keys
from live.commerce.catalog import Catalog
from live.demo.keys import SEEDED
from live.money import Money
from live.types import WAREHOUSE, Product, Sku, Store
from recommender.events import EventLog
from recommender.types import Event, EventKind

log = logging.getLogger("newretail.live")


CATEGORIES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[float, float]]] = {
    "kitchen": (("Enamel", "Copper", "Stoneware", "Bamboo", "Cast-iron", "Ceramic"),
                ("Mug", "Teapot", "Skillet", "Cutting board", "Spice jar", "Colander",
                 "Espresso cup", "Salad bowl"), (4.0, 60.0)),
    "home": (("Linen", "Woven", "Velvet", "Rattan", "Marble", "Oak"),
             ("Cushion", "Throw", "Lamp", "Vase", "Candle", "Mirror", "Photo frame",
              "Clock"), (6.0, 120.0)),
    "toys": (("Wooden", "Plush", "Magnetic", "Glow", "Racing", "Puzzle"),
             ("Train set", "Bear", "Blocks", "Kite", "Robot", "Dinosaur", "Yo-yo",
              "Spinning top"), (3.0, 45.0)),
    "garden": (("Terracotta", "Galvanised", "Hanging", "Solar", "Herb", "Willow"),
               ("Planter", "Watering can", "Bird feeder", "Lantern", "Trowel", "Seed kit",
                "Wind chime"), (5.0, 70.0)),
    "stationery": (("Kraft", "Dotted", "Pastel", "Vintage", "Leather", "Recycled"),
                   ("Notebook", "Pen set", "Planner", "Washi tape", "Sticky notes",
                    "Gift wrap", "Card set"), (2.0, 35.0)),
    "fashion": (("Silk", "Wool", "Denim", "Knitted", "Canvas", "Cotton"),
                ("Scarf", "Beanie", "Tote bag", "Socks", "Gloves", "Belt", "Cap"),
                (8.0, 90.0)),
    "beauty": (("Rose", "Lavender", "Citrus", "Oat", "Charcoal", "Aloe"),
               ("Soap", "Hand cream", "Lip balm", "Bath salts", "Face mask", "Body oil"),
               (3.0, 40.0)),
    "tech": (("Wireless", "Compact", "Retro", "Foldable", "Smart", "Portable"),
             ("Speaker", "Charger", "Headphones", "Desk lamp", "Power bank", "Keyboard"),
             (15.0, 150.0)),
}

STORES = (
    Store("store-soho", "Soho", "London"),
    Store("store-deansgate", "Deansgate", "Manchester"),
    Store("store-leith", "Leith Walk", "Edinburgh"),
)

FIRST_NAMES = ("Amara", "Ben", "Chloe", "Dev", "Elena", "Finn", "Grace", "Hugo", "Isla",
               "Jamal", "Kai", "Lena", "Marco", "Nia", "Omar", "Priya", "Quinn", "Rosa",
               "Sam", "Tariq", "Uma", "Vik", "Wren", "Yusuf", "Zoe")
LAST_NAMES = ("Adams", "Brown", "Chen", "Davies", "Evans", "Fischer", "Garcia", "Hughes",
              "Iqbal", "Jones", "Khan", "Lewis", "Martin", "Nowak", "Okafor", "Patel")

KIND_WEIGHTS: tuple[tuple[EventKind, int], ...] = (
    ("view", 60), ("click", 20), ("cart", 12), ("purchase", 8),
)


@dataclass(frozen=True)
class DemoMember:
    id: str
    name: str
    phone: str | None
    home_store: str
    tastes: tuple[str, str]
    personalization: bool


def demo_phone(index: int) -> str:
    """Phones in Ofcom's range for drama (07700 900000-900999), never a real line."""
    return f"+447700900{index:03d}"


def make_products(rng: random.Random, per_category: int = 40,
                  currency: str = "GBP") -> list[Product]:
    products: list[Product] = []
    for cat_index, (category, (adjectives, nouns, (lo, hi))) in enumerate(CATEGORIES.items()):
        names = [f"{a} {n}" for a in adjectives for n in nouns]
        rng.shuffle(names)
        for i, name in enumerate(sorted(names[:per_category])):
            sku = Sku(f"{cat_index + 1}{i:03d}")
            # whole pounds less a penny (9.99), in minor units
            price = Money(int(round(rng.uniform(lo, hi), 0)) * 100 - 1, currency)
            products.append(Product(sku, name, category, price, f"/catalog/images/{sku}.svg"))
    return products


def make_members(rng: random.Random, count: int) -> list[DemoMember]:
    categories = list(CATEGORIES)
    members = []
    for i in range(count):
        tastes = tuple(rng.sample(categories, 2))
        members.append(DemoMember(
            id=f"m_demo{i:05d}",
            name=f"{FIRST_NAMES[i % len(FIRST_NAMES)]} {rng.choice(LAST_NAMES)}",
            phone=demo_phone(i) if i < 1000 else None,
            home_store=STORES[i % len(STORES)].id,
            tastes=tastes,  # type: ignore[arg-type]
            personalization=i % 10 != 9,
        ))
    return members


def make_history(
    rng: random.Random, members: list[DemoMember], products: list[Product],
    now: float, per_member: int = 30, days: int = 60,
) -> Iterator[Event]:
    """Events over the last ``days``: 85 % in the member's two favourite categories,
    and a few favourite products bought again and again."""
    by_category: dict[str, list[Product]] = {}
    for p in products:
        by_category.setdefault(p.category, []).append(p)
    kinds = [k for k, _ in KIND_WEIGHTS]
    weights = [w for _, w in KIND_WEIGHTS]
    for m in members:
        favourites = [rng.choice(by_category[m.tastes[0]]) for _ in range(2)]
        for _ in range(rng.randint(per_member // 2, per_member * 3 // 2)):
            ts = now - rng.uniform(0, days * 86400)
            if rng.random() < 0.15:
                yield Event(m.id, rng.choice(favourites).sku, "purchase", ts)
                continue
            pool = by_category[rng.choice(m.tastes)] if rng.random() < 0.85 else products
            kind = rng.choices(kinds, weights)[0]
            yield Event(m.id, rng.choice(pool).sku, kind, ts)


async def seed_demo(
    catalog: Catalog, members: Members, events: EventLog, now: float,
    member_count: int = 3000, seed: int = 7,
) -> dict[str, int]:
    """Write the demo data once; a second call finds it there and does nothing."""
    redis = catalog.redis
    if await redis.exists(SEEDED):
        return {}
    rng = random.Random(seed)
    products = make_products(rng, currency=catalog.currency)
    await catalog.put_stores(STORES)
    await catalog.put_products(products)
    pipe = redis.pipeline(transaction=False)
    for p in products:
        shelf = {s.id: rng.choice((0, 3, 8, 15, 25)) for s in STORES}
        shelf[WAREHOUSE] = rng.randint(50, 400)
        pipe.hset(keys.stock(p.sku), mapping=shelf)  # type: ignore[arg-type]
    await pipe.execute()
    people = make_members(rng, member_count)
    for m in people:
        await members.create(
            m.name, home_store=m.home_store, member_id=m.id, now=now,
            consent={"personalization": m.personalization, "marketing": False},
        )
        if m.phone:
            await members.link(m.id, "phone", m.phone)
        await members.link(m.id, "loyalty_card", f"DEMO{m.id[-5:]}")
    count = await events.append(make_history(rng, people, products, now))
    await redis.set(SEEDED, "1")
    log.info("demo data: %d products, %d members, %d events", len(products), len(people), count)
    return {"products": len(products), "members": len(people), "events": count}
