"""Members and the identifiers linked to them.

Identifier values are never used in clear in key names: each is looked up by a
keyed HMAC (``pepper``), so a copy of the store does not list phone numbers.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Literal, get_args

import orjson
import redis.asyncio as aredis

from identity.errors import IdentityError
from identity.types import MemberId

IdentifierKind = Literal["phone", "device", "payment", "loyalty_card", "web"]
IDENTIFIER_KINDS: tuple[IdentifierKind, ...] = get_args(IdentifierKind)
Purpose = Literal["personalization", "marketing"]
PURPOSES: tuple[Purpose, ...] = get_args(Purpose)
Tier = Literal["member", "silver", "gold"]

def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


MEMBER = "nr:member:{id}"
MEMBER_IDENTS = "nr:member:{id}:idents"
IDENT = "nr:ident:{kind}:{digest}"
MEMBERS = "nr:members"


@dataclass(frozen=True)
class Member:
    """A member as the service sees them; ``consent`` maps purpose -> (given, when)."""

    id: MemberId
    name: str
    tier: Tier
    home_store: str | None
    spend: float
    created_at: float
    consent: dict[str, dict[str, object]] = field(default_factory=dict)

    def consents_to(self, purpose: Purpose) -> bool:
        entry = self.consent.get(purpose)
        return bool(entry and entry.get("given"))

    @property
    def first_name(self) -> str:
        return self.name.split()[0] if self.name.strip() else "there"


def tier_for(spend: float) -> Tier:
    """Tier from lifetime spend: silver from 500, gold from 2,000."""
    if spend >= 2000:
        return "gold"
    if spend >= 500:
        return "silver"
    return "member"


class Members:
    """Member records and identifier lookups.

    Args:
        redis: the store.
        pepper: the HMAC key for identifier lookups (kept outside the store).
    """

    def __init__(self, redis: aredis.Redis, pepper: bytes) -> None:
        if len(pepper) < 16:
            raise ValueError("the identifier pepper needs at least 16 bytes")
        self.redis = redis
        self._pepper = pepper

    def digest(self, kind: str, value: str) -> str:
        """The keyed hash under which an identifier value is looked up."""
        return hmac.new(self._pepper, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()

    async def create(
        self,
        name: str,
        home_store: str | None = None,
        consent: dict[Purpose, bool] | None = None,
        spend: float = 0.0,
        member_id: str | None = None,
        now: float | None = None,
    ) -> Member:
        """Create a member (a fresh random id unless ``member_id`` is given)."""
        now = time.time() if now is None else now
        mid = MemberId(member_id or "m_" + secrets.token_hex(8))
        consent_map = {p: {"given": bool(g), "at": now} for p, g in (consent or {}).items()}
        record = {
            "id": mid, "name": name, "tier": tier_for(spend), "home_store": home_store or "",
            "spend": f"{spend:.2f}", "created_at": f"{now:.3f}",
            "consent": orjson.dumps(consent_map),
        }
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(MEMBER.format(id=mid), mapping=record)  # type: ignore[arg-type]
        pipe.sadd(MEMBERS, mid)
        await pipe.execute()
        return await self.get(mid)

    async def get(self, member_id: str) -> Member:
        raw = await self.redis.hgetall(MEMBER.format(id=member_id))
        if not raw:
            raise IdentityError("not_found", f"member {member_id!r} not found", 404)
        return Member(
            id=MemberId(_text(raw[b"id"])),
            name=_text(raw[b"name"]),
            tier=_text(raw[b"tier"]),  # type: ignore[arg-type]
            home_store=_text(raw[b"home_store"]) or None,
            spend=float(raw[b"spend"]),
            created_at=float(raw[b"created_at"]),
            consent=orjson.loads(raw[b"consent"]),
        )

    async def link(self, member_id: str, kind: IdentifierKind, value: str) -> None:
        """Link an identifier to a member; an identifier belongs to one member only."""
        if kind not in IDENTIFIER_KINDS:
            raise IdentityError("bad_request", f"unknown identifier kind {kind!r}")
        digest = self.digest(kind, value)
        key = IDENT.format(kind=kind, digest=digest)
        owner = await self.redis.get(key)
        if owner is not None and _text(owner) != member_id:
            raise IdentityError("conflict", f"this {kind} belongs to another member", 409)
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(key, member_id)
        pipe.sadd(MEMBER_IDENTS.format(id=member_id), f"{kind}:{digest}")
        await pipe.execute()

    async def resolve(self, kind: str, value: str) -> MemberId | None:
        """The member an identifier belongs to, if any."""
        owner = await self.redis.get(IDENT.format(kind=kind, digest=self.digest(kind, value)))
        return MemberId(_text(owner)) if owner is not None else None
