"""Key names of the live package in the store, in one place."""

from __future__ import annotations

PRODUCT = "nr:product:{sku}"  # hash: sku title category price image
CATALOG = "nr:catalog"  # zset of skus, scored by insertion order
WORD = "nr:catalog:word:{word}"  # set of skus whose title has the word
STOCK = "nr:stock:{sku}"  # hash: location -> units on hand
STORES = "nr:stores"  # hash: store id -> json


def product(sku: str) -> str:
    return f"nr:product:{sku}"


def word(w: str) -> str:
    return f"nr:catalog:word:{w}"


def stock(sku: str) -> str:
    return f"nr:stock:{sku}"


def text(value: bytes | str) -> str:
    """A store reply as text (the client returns bytes; its types allow str too)."""
    return value.decode() if isinstance(value, bytes) else value
