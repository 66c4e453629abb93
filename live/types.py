"""The live package's ids and value types."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NewType, Protocol, TypeVar

from live.money import Money

Sku = NewType("Sku", str)
SessionId = NewType("SessionId", str)
Location = NewType("Location", str)

WAREHOUSE = Location("warehouse")


@dataclass(frozen=True)
class Product:
    """A catalog entry. ``price`` is its list price, exact (``Money``)."""

    sku: Sku
    title: str
    category: str
    price: Money
    image: str


@dataclass(frozen=True)
class Store:
    """A physical store; its id is also an inventory location."""

    id: str
    name: str
    city: str


class ProductSource(Protocol):
    """The catalog, as the live hub reads it (served by ``live.commerce.catalog``)."""

    async def get(self, sku: str) -> Product:
        """The product, or ``not_found``."""
        ...

    async def get_many(self, skus: Sequence[str]) -> list[Product | None]: ...


class HostedSession(Protocol):
    """What other parts of the service may know of a live session."""

    @property
    def id(self) -> str: ...

    @property
    def host(self) -> str: ...

    @property
    def products(self) -> list[str]: ...

    def require_live(self) -> HostedSession:
        """The session, or ``session_ended`` when it is over."""
        ...


S_co = TypeVar("S_co", bound=HostedSession, covariant=True)


class SessionDirectory(Protocol[S_co]):
    """Finds live sessions (served by the hub's ``Sessions``): ``not_found`` when unknown."""

    async def get(self, sid: str) -> S_co: ...
