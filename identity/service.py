"""The identity service: sign-in, tokens, member codes, check-in, consent, erasure.

Other packages plug in through hooks: ``on_stitch`` when an anonymous viewer signs in
(their events and cart follow), ``on_checkin`` when a member checks in at a screen,
``on_erase`` when a member is erased (they drop events, carts, factors, offers).

After erasure the same phone may sign in again: that makes a fresh member with a new
id; the old id and its stitched anonymous ids stay erased for good (``is_erased``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aredis

from identity.codes import normalize_phone
from identity.consent import apply_consent, parse_consent
from identity.devices import Device, Devices
from identity.errors import IdentityError, bad_request, invalid_code, not_found
from identity.keys import ERASURES, MEMBER_ANON, TOMB
from identity.members import IDENTIFIER_KINDS, Member, Members, Purpose, is_junk, member_from
from identity.otp import NoSender, OtpLimits, OtpService, OutboxSender, SmsSender
from identity.tokens import KeyRing, RefreshTokens
from identity.types import (
    CheckIn,
    CheckinHook,
    Claims,
    Clock,
    EraseHook,
    MemberCode,
    SignIn,
    StitchHook,
    TokenPair,
    wall_clock,
)

log = logging.getLogger("newretail.identity")


@dataclass(frozen=True)
class IdentityConfig:
    """Tunables. ``fictional_prefixes`` are accepted as phones although not valid
    numbers (Ofcom's drama range, for the demo)."""

    region: str = "GB"
    fictional_prefixes: tuple[str, ...] = ("+447700900",)
    access_ttl: int = 900
    viewer_ttl: int = 12 * 3600
    max_devices: int = 10
    dev_outbox: bool = True
    otp: OtpLimits = field(default_factory=OtpLimits)


def _short_text(value: object, name: str, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 100:
        raise bad_request(f"{name} must be text of 1 to 100 characters")
    return value.strip()


class IdentityService:
    """Members, sign-in and everything that says who someone is.

    Args:
        redis: the datastore.
        keyring: signs and verifies access tokens.
        pepper: HMAC key for identifier lookups, code hashes and tombstones.
        sender: where sign-in codes go (``None``: the dev outbox when allowed).
        config: tunables.
        clock: time source for codes, limits and member codes.
    """

    def __init__(
        self, redis: aredis.Redis, keyring: KeyRing, pepper: bytes,
        sender: SmsSender | None = None, config: IdentityConfig | None = None,
        clock: Clock = wall_clock,
    ) -> None:
        self.redis = redis
        self.keyring = keyring
        self.config = config or IdentityConfig()
        self.clock = clock
        self._pepper = pepper
        self.members = Members(redis, pepper)
        self.outbox = OutboxSender(redis) if self.config.dev_outbox else None
        chosen: SmsSender = sender or self.outbox or NoSender()
        otp_key = hmac.new(pepper, b"otp-key", hashlib.sha256).digest()
        self.otp = OtpService(redis, otp_key, chosen, self._now, self.config.otp)
        self.devices = Devices(redis, self._now)
        self.refresh_tokens = RefreshTokens(redis)
        self.on_erase: list[EraseHook] = []
        self.on_stitch: list[StitchHook] = []
        self.on_checkin: list[CheckinHook] = []
        self._background: set[asyncio.Task[None]] = set()

    def _now(self) -> float:
        # Read through the attribute so a test may swap the clock after construction.
        return self.clock()

    # -- sign-in -------------------------------------------------------------------

    def anonymous(self) -> dict[str, str]:
        """A fresh anonymous viewer id and its viewer token."""
        anon_id = "a_" + secrets.token_hex(10)
        token = self.keyring.issue(anon_id, "viewer", self.config.viewer_ttl)
        return {"anon_id": anon_id, "token": token}

    def phone(self, raw: object) -> str:
        return normalize_phone(raw, self.config.region, self.config.fictional_prefixes)

    async def send_text(self, phone: str, text: str) -> None:
        """A message to a member's phone through the sender of sign-in codes (the dev
        outbox in dev and demo), e.g. that a live they asked to be reminded of started."""
        await self.otp.sender.send(phone, text, "")

    async def request_code(self, raw_phone: object) -> None:
        """Send a sign-in code; the same answer whether or not the number is a member's."""
        await self.otp.request(self.phone(raw_phone))

    async def verify(self, raw_phone: object, code: object, device_id: object,
                     anon_id: object = None) -> SignIn:
        """Check the code and sign the device in; an unknown number becomes a new member."""
        phone = self.phone(raw_phone)
        device_name = _short_text(device_id, "device_id")
        anon = _short_text(anon_id, "anon_id", required=False)
        if device_name is None or is_junk(device_name):
            raise bad_request("device_id must name the device")
        await self.otp.verify(phone, code)
        member_id = await self.members.resolve("phone", phone)
        created = member_id is None
        if member_id is None:
            member = await self.members.create("", now=self._now())
            member_id = member.id
            await self.members.link(member_id, "phone", phone, source="otp", actor=member_id)
        device = await self._register_device(member_id, device_name)
        stitched = await self._stitch(anon, member_id) if anon else False
        refresh = await self.refresh_tokens.start(member_id, device.index)
        return {
            "member_id": member_id, "token": self.member_token(member_id, device.index),
            "expires_in": self.config.access_ttl, "refresh_token": refresh,
            "device_id": device_name, "device_index": device.index,
            "device_secret": device.secret.hex(), "created": created, "stitched": stitched,
        }

    async def _register_device(self, member_id: str, device_name: str) -> Device:
        active = await self.devices.of_member(member_id)
        others = sorted((d for d in active if d.device_id != device_name),
                        key=lambda d: d.created_at)
        while len(others) >= self.config.max_devices:
            oldest = others.pop(0)
            await self.revoke_device(oldest.index, member_id)
        device = await self.devices.register(member_id, device_name)
        try:
            await self.members.link(member_id, "device", device_name, "signin", member_id)
        except IdentityError as exc:
            # A shared device stays with its first member: never merge two members.
            log.info("device not linked to %s: %s", member_id, exc.code)
        return device

    async def _stitch(self, anon_id: str, member_id: str) -> bool:
        if await self.is_erased(anon_id) or not anon_id.startswith("a_"):
            return False
        try:
            linked = await self.members.link(member_id, "web", anon_id, "stitch", member_id)
        except IdentityError as exc:
            log.info("anonymous id not stitched into %s: %s", member_id, exc.code)
            return False
        if not linked:
            return False
        await self.members.add_anon(member_id, anon_id)
        try:
            for hook in self.on_stitch:
                await hook(anon_id, member_id)
        except Exception:  # the sign-in stands; the next sign-in retries the stitch
            log.exception("stitch hook failed; %s stays unstitched", anon_id)
            await self.members.unlink(member_id, "web", anon_id, "stitch", member_id)
            await self.redis.srem(MEMBER_ANON.format(id=member_id), anon_id)
            return False
        return True

    def member_token(self, member_id: str, device_index: str) -> str:
        return self.keyring.issue(member_id, "member", self.config.access_ttl,
                                  extra={"dev": device_index})

    async def refresh(self, refresh_token: object) -> TokenPair:
        """Rotate a refresh token into a new access token and refresh token."""
        member_id, device_index, next_token = await self.refresh_tokens.rotate(refresh_token)
        if await self.devices.get(device_index) is None:
            raise IdentityError("unauthorized", "this device was signed out", 401)
        return {"token": self.member_token(member_id, device_index),
                "expires_in": self.config.access_ttl, "refresh_token": next_token}

    async def outbox_messages(self) -> list[dict[str, Any]]:
        if self.outbox is None:
            raise not_found("outbox")
        return await self.outbox.messages()

    # -- members -------------------------------------------------------------------

    async def me(self, member_id: str) -> Member:
        return await self.members.get(member_id)

    async def update_me(self, member_id: str, body: object) -> Member:
        """Apply ``{"name"?, "consent"?}``; a bad field changes nothing."""
        if not isinstance(body, dict) or not set(body) <= {"name", "consent"}:
            raise bad_request('the body must be {"name"?: str, "consent"?: {purpose: bool}}')
        name = body.get("name")
        if name is not None and (not isinstance(name, str) or len(name) > 80):
            raise bad_request("name must be text of at most 80 characters")
        changes = parse_consent(body["consent"]) if "consent" in body else {}
        member = await self.members.get(member_id)
        consent = apply_consent(member.consent, changes, self._now()) if changes else None
        return await self.members.update(member_id, name=name, consent=consent)

    async def consents(self, member_id: str, purpose: Purpose | str) -> bool:
        """Whether the member consents to ``purpose`` now (no member: no consent)."""
        try:
            member = await self.members.get(member_id)
        except IdentityError:
            return False
        return member.consents_to(purpose)  # type: ignore[arg-type]

    async def record_spend(self, member_id: str, amount: float) -> Member:
        """Add a purchase to the member's lifetime spend; the tier follows it."""
        if not amount > 0:
            raise bad_request("amount must be positive")
        return await self.members.add_spend(member_id, amount)

    def identifier_value(self, kind: object, value: object) -> tuple[str, str]:
        if kind not in IDENTIFIER_KINDS:
            raise bad_request(f"kind must be one of {', '.join(IDENTIFIER_KINDS)}")
        if not isinstance(value, str) or not value.strip() or len(value) > 200:
            raise bad_request("value must be text of 1 to 200 characters")
        return str(kind), self.phone(value) if kind == "phone" else value.strip()

    async def resolve(self, kind: object, value: object) -> str | None:
        k, v = self.identifier_value(kind, value)
        return await self.members.resolve(k, v)

    async def add_identifier(self, member_id: str, kind: object, value: object,
                             claims: Claims) -> bool:
        """Link an identifier on an admin's or the member's own say.

        A member may add ``payment`` and ``loyalty_card``; a phone is proven by its code,
        a device by signing in and a web id by stitching, so those need an admin.
        """
        k, v = self.identifier_value(kind, value)
        if claims.role != "admin" and k not in ("payment", "loyalty_card"):
            raise IdentityError(
                "forbidden", f"a {k} is linked by signing in, not by asking", 403)
        source = "admin" if claims.role == "admin" else "member"
        return await self.members.link(member_id, k, v, source, claims.sub)  # type: ignore[arg-type]

    # -- member codes and check-in -------------------------------------------------

    async def member_code(self, claims: Claims) -> MemberCode:
        device = await self._own_device(claims)
        return await self.devices.code(device.index)

    async def _own_device(self, claims: Claims) -> Device:
        if claims.device is None:
            raise bad_request("this token is not bound to a device; sign in on the device")
        device = await self.devices.get(claims.device)
        if device is None or device.member_id != claims.sub:
            raise not_found("device (it was signed out)")
        return device

    async def check_in(self, code: object, screen_id: str, store_id: str | None) -> CheckIn:
        """Resolve a member code shown at a screen; ``on_checkin`` hooks run after."""
        _, raw = await self.devices.check_code(code, self.members.key)
        if not raw:
            raise invalid_code()  # the member is gone (erased) but the device lingered
        member = member_from(dict(zip(raw[::2], raw[1::2], strict=True)))
        for hook in self.on_checkin:
            self._spawn(hook(member.id, screen_id, store_id))
        return {"member_id": member.id, "greeting": member.greeting,
                "tier": member.tier}

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("check-in hook failed", exc_info=task.exception())

    async def drain(self) -> None:
        """Wait for hooks started in the background (tests, shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def list_devices(self, member_id: str) -> list[dict[str, object]]:
        return [d.public() for d in await self.devices.of_member(member_id)]

    async def revoke_device(self, index: str, member_id: str | None) -> None:
        """Sign a device out (``member_id``: only if it is theirs; ``None``: an admin)."""
        device = await self.devices.get(index)
        if device is None or (member_id is not None and device.member_id != member_id):
            raise not_found("device")
        await self.devices.revoke(index)
        await self.refresh_tokens.revoke_device(device.member_id, index)
        actor = member_id or "admin"
        await self.members.unlink(device.member_id, "device", device.device_id, "signin", actor)

    # -- erasure -------------------------------------------------------------------

    def _tomb(self, user_id: str) -> str:
        return hmac.new(self._pepper, f"tomb:{user_id}".encode(), hashlib.sha256).hexdigest()

    def _tomb_key(self, user_id: str) -> str:
        return TOMB.format(digest=self._tomb(user_id))

    async def is_erased(self, user_id: str) -> bool:
        """True for a member id or stitched anonymous id that was erased."""
        return bool(await self.redis.exists(self._tomb_key(user_id)))

    async def erased_among(self, user_ids: Sequence[str]) -> set[str]:
        """The ids of ``user_ids`` that were erased, in one round trip."""
        if not user_ids:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.exists(self._tomb_key(user_id))
            found = await pipe.execute()
        return {u for u, n in zip(user_ids, found, strict=True) if n}

    async def erase(self, member_id: str, by_role: str) -> dict[str, Any]:
        """Erase a member everywhere. Tombstones go first (late events are refused from
        then on), then the hooks (if one fails nothing of identity is gone yet, so the
        erasure can be retried), then identity's own data, then a record with no
        personal data in it."""
        if not await self.members.exists(member_id):
            raise not_found(f"member {member_id!r}")
        user_ids = [member_id, *await self.members.anon_ids(member_id)]
        pipe = self.redis.pipeline(transaction=True)
        for uid in user_ids:
            pipe.set(self._tomb_key(uid), "1")
        await pipe.execute()
        for hook in self.on_erase:
            try:
                await hook(member_id, user_ids)
            except Exception as exc:  # any failing part leaves a retryable erasure
                log.exception("erase hook %s failed", getattr(hook, "__qualname__", hook))
                raise IdentityError(
                    "erasure_incomplete",
                    "erasure could not finish everywhere; nothing of the member is back, "
                    "retry the request", 503) from exc
        if self.outbox is not None:
            phones = {d for k, d in await self.members.identifiers(member_id) if k == "phone"}
            await self.outbox.forget(lambda p: self.members.digest("phone", p) in phones)
        devices = await self.devices.revoke_all(member_id)
        await self.refresh_tokens.revoke_member(member_id)
        identifiers = await self.members.delete(member_id)
        record = {
            "erasure_id": "er_" + secrets.token_hex(8), "at": self._now(), "by_role": by_role,
            "subject": self._tomb(member_id), "user_ids": len(user_ids),
            "identifiers": identifiers, "devices": devices, "hooks": len(self.on_erase),
        }
        await self.redis.xadd(ERASURES, {"record": orjson.dumps(record)})
        log.info("erased a member: %s", record["erasure_id"])
        return record
