"""Identity's value types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NewType, get_args

MemberId = NewType("MemberId", str)
AnonId = NewType("AnonId", str)
StoreId = NewType("StoreId", str)

Role = Literal["viewer", "member", "host", "screen", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)


@dataclass(frozen=True)
class Claims:
    """What a verified token says about its bearer."""

    sub: str
    role: Role
    exp: int
    store: str | None = None
    kid: str | None = None
