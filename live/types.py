"""The live package's ids and value types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NewType

Sku = NewType("Sku", str)
SessionId = NewType("SessionId", str)
Location = NewType("Location", str)

WAREHOUSE = Location("warehouse")


@dataclass(frozen=True)
class Product:
    """A catalog entry. ``price`` is in the currency's main unit, two decimals."""

    sku: Sku
    title: str
    category: str
    price: float
    image: str


@dataclass(frozen=True)
class Store:
    """A physical store; its id is also an inventory location."""

    id: str
    name: str
    city: str
