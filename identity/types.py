"""Identity's value types and wire messages."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, NewType, TypedDict, get_args

MemberId = NewType("MemberId", str)
AnonId = NewType("AnonId", str)
StoreId = NewType("StoreId", str)
DeviceIndex = NewType("DeviceIndex", str)

Role = Literal["viewer", "member", "host", "screen", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)

Clock = Callable[[], float]
"""Seconds since the epoch; injected so expiry and rate windows are testable."""

EraseHook = Callable[[str, list[str]], Awaitable[None]]
StitchHook = Callable[[str, str], Awaitable[None]]
CheckinHook = Callable[[str, str, "str | None"], Awaitable[None]]


def wall_clock() -> float:
    return time.time()


@dataclass(frozen=True)
class Claims:
    """What a verified token says about its bearer (``device``: the signed-in device)."""

    sub: str
    role: Role
    exp: int
    store: str | None = None
    kid: str | None = None
    device: str | None = None


class SignIn(TypedDict):
    """The answer to a successful ``POST /identity/otp/verify``."""

    member_id: str
    token: str
    expires_in: int
    refresh_token: str
    device_id: str
    device_index: str
    device_secret: str
    created: bool
    stitched: bool


class TokenPair(TypedDict):
    token: str
    expires_in: int
    refresh_token: str


class CheckIn(TypedDict):
    """What a store screen learns at a check-in: no phone, no full name."""

    member_id: str
    greeting: str
    tier: str


class MemberCode(TypedDict):
    code: str
    expires_at: float
