"""Catalog and stock per location, kept in the datastore.

Stock is one hash per sku (location -> units), so a live session sees the pool
(sum over locations) and a store screen sees its own shelf, from one record.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
import redis.asyncio as aredis

from live.commerce import keys
from live.commerce.keys import REVISION, WORDS
from live.db.client import text
from live.errors import LiveError, bad_request, not_found
from live.money import Money
from live.types import WAREHOUSE, Product, Sku, Store

_WORD = re.compile(r"[a-z0-9]+")
MAX_QTY = 1_000_000_000
PREFIX_WORDS = 50  # title words a prefix may expand to
DEFAULT_CURRENCY = "GBP"


def title_words(title: str) -> set[str]:
    """Lower-case words of a title, as indexed for search."""
    return set(_WORD.findall(title.lower()))


def _product(raw: Mapping[bytes | str, bytes | str]) -> Product:
    """A product from its hash: ``price`` minor units, ``currency`` its code (a v0.1.0
    hash, with a decimal price and no currency, asks for the migration)."""
    if b"currency" not in raw:
        raise LiveError("store_not_migrated", "the store holds v0.1.0 prices; "
                        "run `newretail migrate`", 503)
    return Product(
        sku=Sku(text(raw[b"sku"])),
        title=text(raw[b"title"]),
        category=text(raw[b"category"]),
        price=Money(int(raw[b"price"]), text(raw[b"currency"])),
        image=text(raw[b"image"]),
    )


class Catalog:
    """Products, stores and units on hand per location; every price in one currency
    (``NEWRETAIL_CURRENCY``, GBP by default)."""

    def __init__(self, redis: aredis.Redis, currency: str = DEFAULT_CURRENCY) -> None:
        self.redis = redis
        self.currency = Money.zero(currency).currency  # checked: three capital letters

    async def put_products(self, products: Iterable[Product]) -> int:
        """Insert or update products (search index included); returns how many."""
        count = 0
        products = list(products)
        for product in products:
            if product.price.currency != self.currency:
                raise bad_request(f"{product.sku}: the price must be in {self.currency}, the "
                                  f"catalog's currency; got {product.price.currency}")
            if product.price.amount < 0:
                raise bad_request(f"{product.sku}: a price cannot be negative")
        pipe = self.redis.pipeline(transaction=False)
        base = await self.redis.zcard(keys.CATALOG)
        for product in products:
            old = await self.redis.hget(keys.product(product.sku), "title")
            if old is not None:
                for w in title_words(text(old)):
                    pipe.srem(keys.word(w), product.sku)
            pipe.hset(keys.product(product.sku), mapping={
                "sku": product.sku, "title": product.title, "category": product.category,
                "price": product.price.amount, "currency": product.price.currency,
                "image": product.image,
            })
            pipe.zadd(keys.CATALOG, {product.sku: base + count}, nx=True)
            for w in title_words(product.title):
                pipe.sadd(keys.word(w), product.sku)
                pipe.zadd(WORDS, {w: 0})
            count += 1
            if count % 500 == 0:
                pipe.incr(REVISION)
                await pipe.execute()
        pipe.incr(REVISION)
        await pipe.execute()
        return count

    async def get(self, sku: str) -> Product:
        raw = await self.redis.hgetall(keys.product(sku))
        if not raw:
            raise not_found(f"product {sku!r}")
        return _product(raw)

    async def get_many(self, skus: Sequence[str]) -> list[Product | None]:
        pipe = self.redis.pipeline(transaction=False)
        for sku in skus:
            pipe.hgetall(keys.product(sku))
        return [_product(raw) if raw else None for raw in await pipe.execute()]

    async def all_skus(self) -> list[Sku]:
        every: list[bytes] = await self.redis.zrange(keys.CATALOG, 0, -1)  # type: ignore[assignment]
        return [Sku(text(s)) for s in every]

    async def _matching(self, word: str) -> set[str]:
        """Skus whose title has ``word`` or, as the presenter types, a word starting so."""
        found: set[str] = {text(s) for s in await self.redis.smembers(keys.word(word))}
        if len(word) >= 2:
            words: list[Any] = await self.redis.zrangebylex(
                WORDS, b"[" + word.encode(), b"[" + word.encode() + b"\xff", start=0,
                num=PREFIX_WORDS)
            if words:
                union: Any = await self.redis.sunion([keys.word(text(w)) for w in words])
                found |= {text(s) for s in union}
        return found

    async def search(self, query: str, limit: int = 20) -> list[Product]:
        """Products whose title holds every word of ``query``, each word whole or as the
        start of a title word ("enam mu" finds "Enamel Mug"); a sku typed in full comes
        first; all products for an empty query."""
        if not 1 <= limit <= 200:
            raise bad_request("limit must be between 1 and 200")
        words = title_words(query)
        if words:
            matched: set[str] | None = None
            for w in sorted(words, key=len, reverse=True):
                hits = await self._matching(w)
                matched = hits if matched is None else matched & hits
                if not matched:
                    break
            skus = sorted(matched or ())
            exact = query.strip()
            if exact and await self.redis.exists(keys.product(exact)):
                skus = [exact] + [s for s in skus if s != exact]
            skus = skus[:limit]
        else:
            first: list[bytes] = await self.redis.zrange(keys.CATALOG, 0, limit - 1)  # type: ignore[assignment]
            skus = [text(s) for s in first]
        return [p for p in await self.get_many(skus) if p is not None]

    async def set_stock(self, sku: str, location: str, qty: int) -> None:
        """Set the units on hand of ``sku`` at ``location``."""
        if not isinstance(qty, int) or isinstance(qty, bool) or not 0 <= qty <= MAX_QTY:
            raise bad_request(f"qty must be a whole number from 0 to {MAX_QTY}")
        if location != WAREHOUSE and not await self.redis.hexists(keys.STORES, location):
            raise bad_request(f"unknown location {location!r}")
        if not await self.redis.exists(keys.product(sku)):
            raise not_found(f"product {sku!r}")
        await self.redis.hset(keys.stock(sku), location, qty)

    async def stock(self, sku: str) -> dict[str, int]:
        """Units per location."""
        raw = await self.redis.hgetall(keys.stock(sku))
        return {text(k): int(v) for k, v in raw.items()}

    async def stock_many(self, skus: Sequence[str]) -> list[dict[str, int]]:
        pipe = self.redis.pipeline(transaction=False)
        for sku in skus:
            pipe.hgetall(keys.stock(sku))
        return [{text(k): int(v) for k, v in raw.items()} for raw in await pipe.execute()]

    async def put_stores(self, stores: Iterable[Store]) -> None:
        mapping = {
            s.id: orjson.dumps({"id": s.id, "name": s.name, "city": s.city}) for s in stores
        }
        if mapping:
            await self.redis.hset(keys.STORES, mapping=mapping)  # type: ignore[arg-type]

    async def stores(self) -> list[Store]:
        raw = await self.redis.hgetall(keys.STORES)
        return sorted((Store(**orjson.loads(v)) for v in raw.values()), key=lambda s: s.id)
