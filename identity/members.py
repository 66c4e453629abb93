"""Members and the identifiers linked to them.

Identifier values are never used in clear in key names: each is looked up by a
keyed HMAC (``pepper``), so a copy of the datastore does not list phone numbers.

Rules against over-merging: junk values are refused, each kind has a limit per member,
an identifier owned by one member is never moved to another (two members are never
merged automatically), and every link and unlink is appended to a log so it can be undone.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import orjson
import redis.asyncio as aredis

from identity.errors import IdentityError, bad_request, not_found
from identity.keys import (
    IDENT,
    LINKLOG,
    MEMBER,
    MEMBER_ANON,
    MEMBER_IDENTS,
    MEMBER_LINKLOG,
    MEMBERS,
)
from identity.types import MemberId

IdentifierKind = Literal["phone", "device", "payment", "loyalty_card", "web"]
IDENTIFIER_KINDS: tuple[IdentifierKind, ...] = get_args(IdentifierKind)
Purpose = Literal["personalization", "marketing"]
PURPOSES: tuple[Purpose, ...] = get_args(Purpose)
Tier = Literal["member", "silver", "gold"]
LinkSource = Literal["otp", "signin", "stitch", "admin", "member", "import", "undo"]

KIND_LIMITS: dict[str, int] = {
    "phone": 2, "device": 10, "payment": 10, "loyalty_card": 3, "web": 200,
}
JUNK_VALUES = frozenset({"", "0", "-1", "null", "none", "nil", "undefined", "nan", "anonymous"})
_ZEROS = re.compile(r"[0\s\-.]+")
_ENTRY_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")  # a stream entry id; anything else is no entry


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# Atomic link: ownership check, per-kind limit, link, log entry.
_LINK = """
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then return 'same' end
if owner then return 'conflict' end
local n = 0
for _, v in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if string.sub(v, 1, string.len(ARGV[3]) + 1) == ARGV[3] .. ':' then n = n + 1 end
end
if n >= tonumber(ARGV[5]) then return 'limit' end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[3] .. ':' .. ARGV[4])
local id = redis.call('XADD', KEYS[3], '*', 'action', 'link', 'member', ARGV[1],
  'kind', ARGV[3], 'digest', ARGV[4], 'source', ARGV[2], 'actor', ARGV[6], 'at', ARGV[7])
redis.call('RPUSH', KEYS[4], id)
return 'linked'
"""
_UNLINK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'absent' end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[3] .. ':' .. ARGV[4])
local id = redis.call('XADD', KEYS[3], '*', 'action', 'unlink', 'member', ARGV[1],
  'kind', ARGV[3], 'digest', ARGV[4], 'source', ARGV[2], 'actor', ARGV[6], 'at', ARGV[7])
redis.call('RPUSH', KEYS[4], id)
return 'unlinked'
"""


def is_junk(value: str) -> bool:
    """Placeholder values that would glue unrelated people together if linked."""
    v = value.strip().lower()
    return v in JUNK_VALUES or bool(_ZEROS.fullmatch(v))


@dataclass(frozen=True)
class Member:
    """A member as the service sees them; ``consent`` maps purpose -> {given, at, ...}."""

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

    @property
    def greeting(self) -> str:
        """What a store screen says: the first name when there is one, a plain welcome
        otherwise (never "Welcome, there!")."""
        return f"Welcome, {self.name.split()[0]}!" if self.name.strip() else "Welcome!"

    def public(self) -> dict[str, Any]:
        return {
            "member_id": self.id, "name": self.name, "tier": self.tier,
            "home_store": self.home_store, "spend": self.spend,
            "created_at": self.created_at, "consent": self.consent,
        }


def tier_for(spend: float) -> Tier:
    """Tier from lifetime spend: silver from 500, gold from 2,000."""
    if spend >= 2000:
        return "gold"
    if spend >= 500:
        return "silver"
    return "member"


def member_from(raw: Mapping[bytes, bytes]) -> Member:
    """A member from its stored hash."""
    return Member(
        id=MemberId(_text(raw[b"id"])),
        name=_text(raw[b"name"]),
        tier=_text(raw[b"tier"]),  # type: ignore[arg-type]
        home_store=_text(raw[b"home_store"]) or None,
        spend=float(raw[b"spend"]),
        created_at=float(raw[b"created_at"]),
        consent=orjson.loads(raw[b"consent"]),
    )


@dataclass(frozen=True)
class LinkEntry:
    """One line of the link log: who linked or unlinked which identifier (by digest)."""

    id: str
    action: Literal["link", "unlink"]
    member: str
    kind: str
    digest: str
    source: str
    actor: str
    at: float


class Members:
    """Member records and identifier lookups.

    Args:
        redis: the datastore.
        pepper: the HMAC key for identifier lookups (kept outside the datastore).
    """

    def __init__(self, redis: aredis.Redis, pepper: bytes) -> None:
        if len(pepper) < 16:
            raise ValueError("the identifier pepper needs at least 16 bytes")
        self.redis = redis
        self._pepper = pepper
        self._link = redis.register_script(_LINK)
        self._unlink = redis.register_script(_UNLINK)

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

    async def exists(self, member_id: str) -> bool:
        return bool(await self.redis.exists(MEMBER.format(id=member_id)))

    @staticmethod
    def key(member_id: str) -> str:
        return MEMBER.format(id=member_id)

    async def get(self, member_id: str) -> Member:
        raw: Any = await self.redis.hgetall(MEMBER.format(id=member_id))
        if not raw:
            raise not_found(f"member {member_id!r}")
        return member_from(raw)


    async def update(
        self, member_id: str, name: str | None = None,
        consent: dict[str, dict[str, object]] | None = None,
    ) -> Member:
        """Change the display name and/or replace the consent map."""
        key = MEMBER.format(id=member_id)
        fields: dict[str, str | bytes] = {}
        if name is not None:
            fields["name"] = name
        if consent is not None:
            fields["consent"] = orjson.dumps(consent)
        if not await self.redis.exists(key):
            raise not_found(f"member {member_id!r}")
        if fields:
            await self.redis.hset(key, mapping=fields)  # type: ignore[arg-type]
        return await self.get(member_id)

    async def add_spend(self, member_id: str, amount: float) -> Member:
        """Add to lifetime spend and move the tier with it."""
        key = MEMBER.format(id=member_id)
        if not await self.redis.exists(key):
            raise not_found(f"member {member_id!r}")
        spend = float(await self.redis.hincrbyfloat(key, "spend", amount))
        await self.redis.hset(key, "tier", tier_for(spend))
        return await self.get(member_id)

    async def link(
        self, member_id: str, kind: IdentifierKind, value: str,
        source: LinkSource = "admin", actor: str = "system",
    ) -> bool:
        """Link an identifier to a member; returns False when it was already theirs.

        Raises ``conflict`` (409) when another member owns it, ``bad_request`` for junk
        values and ``limit`` (409) when the member has as many of this kind as allowed.
        """
        if kind not in IDENTIFIER_KINDS:
            raise bad_request(f"unknown identifier kind {kind!r}")
        if not isinstance(value, str) or len(value) > 200 or is_junk(value):
            raise bad_request(f"{kind} value is empty, too long or a placeholder")
        return await self.link_digest(
            member_id, kind, self.digest(kind, value), source, actor)

    async def link_digest(
        self, member_id: str, kind: str, digest: str, source: str, actor: str,
    ) -> bool:
        if not await self.exists(member_id):
            raise not_found(f"member {member_id!r}")
        keys = [IDENT.format(kind=kind, digest=digest), MEMBER_IDENTS.format(id=member_id),
                LINKLOG, MEMBER_LINKLOG.format(id=member_id)]
        args: list[str | int] = [member_id, source, kind, digest, KIND_LIMITS.get(kind, 1),
                                 actor, f"{time.time():.3f}"]
        result = _text(await self._link(keys=keys, args=args))
        if result == "conflict":
            raise IdentityError("conflict", f"this {kind} belongs to another member", 409)
        if result == "limit":
            raise IdentityError(
                "limit", f"a member may have at most {KIND_LIMITS[kind]} of kind {kind}", 409)
        return result == "linked"

    async def unlink_digest(
        self, member_id: str, kind: str, digest: str, source: str, actor: str,
    ) -> bool:
        keys = [IDENT.format(kind=kind, digest=digest), MEMBER_IDENTS.format(id=member_id),
                LINKLOG, MEMBER_LINKLOG.format(id=member_id)]
        args: list[str | int] = [member_id, source, kind, digest, 0, actor,
                                 f"{time.time():.3f}"]
        return _text(await self._unlink(keys=keys, args=args)) == "unlinked"

    async def unlink(
        self, member_id: str, kind: IdentifierKind, value: str,
        source: LinkSource = "admin", actor: str = "system",
    ) -> bool:
        return await self.unlink_digest(
            member_id, kind, self.digest(kind, value), source, actor)

    async def resolve(self, kind: str, value: str) -> MemberId | None:
        """The member an identifier belongs to, if any."""
        owner = await self.redis.get(IDENT.format(kind=kind, digest=self.digest(kind, value)))
        return MemberId(_text(owner)) if owner is not None else None

    async def identifiers(self, member_id: str) -> list[tuple[str, str]]:
        """``(kind, digest)`` of every identifier linked to the member."""
        raw = await self.redis.smembers(MEMBER_IDENTS.format(id=member_id))
        pairs = [_text(v).split(":", 1) for v in raw]
        return sorted((k, d) for k, d in pairs)

    async def link_log(self, member_id: str) -> list[LinkEntry]:
        """The member's link and unlink entries, oldest first."""
        ids = [_text(i) for i in await self.redis.lrange(
            MEMBER_LINKLOG.format(id=member_id), 0, -1)]
        entries = []
        for entry_id in ids:
            found = await self.redis.xrange(LINKLOG, entry_id, entry_id)
            if found:
                entries.append(_entry(found[0]))
        return entries

    async def undo(self, entry_id: str, actor: str) -> LinkEntry:
        """Reverse one log entry: a link is unlinked, an unlink is linked again."""
        if not _ENTRY_ID.fullmatch(entry_id):
            raise not_found(f"link log entry {entry_id!r}")
        found = await self.redis.xrange(LINKLOG, entry_id, entry_id)
        if not found:
            raise not_found(f"link log entry {entry_id!r}")
        entry = _entry(found[0])
        if entry.action == "link":
            await self.unlink_digest(entry.member, entry.kind, entry.digest, "undo", actor)
        else:
            await self.link_digest(entry.member, entry.kind, entry.digest, "undo", actor)
        return entry

    async def add_anon(self, member_id: str, anon_id: str) -> None:
        """Remember a stitched anonymous id in clear: erasure must reach its events."""
        await self.redis.sadd(MEMBER_ANON.format(id=member_id), anon_id)

    async def anon_ids(self, member_id: str) -> list[str]:
        return sorted(_text(v) for v in await self.redis.smembers(
            MEMBER_ANON.format(id=member_id)))

    async def delete(self, member_id: str) -> int:
        """Remove the member, every identifier lookup and their link log lines.

        Returns the number of identifiers removed.
        """
        idents = await self.identifiers(member_id)
        log_ids = [_text(i) for i in await self.redis.lrange(
            MEMBER_LINKLOG.format(id=member_id), 0, -1)]
        pipe = self.redis.pipeline(transaction=True)
        for kind, digest in idents:
            pipe.delete(IDENT.format(kind=kind, digest=digest))
        if log_ids:
            pipe.xdel(LINKLOG, *log_ids)
        pipe.delete(MEMBER.format(id=member_id), MEMBER_IDENTS.format(id=member_id),
                    MEMBER_ANON.format(id=member_id), MEMBER_LINKLOG.format(id=member_id))
        pipe.srem(MEMBERS, member_id)
        await pipe.execute()
        return len(idents)


def _entry(raw: Any) -> LinkEntry:
    entry_id, fields = raw
    f = {_text(k): _text(v) for k, v in fields.items()}
    return LinkEntry(
        id=_text(entry_id), action=f["action"],  # type: ignore[arg-type]
        member=f["member"], kind=f["kind"], digest=f["digest"], source=f["source"],
        actor=f["actor"], at=float(f["at"]),
    )
