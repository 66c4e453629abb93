"""The recommender's value types."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

EventKind = Literal["view", "click", "cart", "purchase", "checkin"]
EVENT_KINDS: tuple[EventKind, ...] = get_args(EventKind)


@dataclass(frozen=True)
class Event:
    """One interaction of a member (or an anonymous viewer) with a product."""

    user: str
    sku: str
    kind: EventKind
    ts: float
    session_id: str | None = None
    store_id: str | None = None
    qty: int = 1


class RecommenderError(Exception):
    """A refused request of the recommender, with its wire code and HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


History = Sequence[tuple[str, str, float, int]]  # newest first; a tuple when kept


Vector = np.ndarray[Any, np.dtype[np.float32]]
