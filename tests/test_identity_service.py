"""IdentityService on a real store without HTTP: races on single-use codes, the SMS
boundary (a recording sender), and hooks."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aredis

from identity.errors import IdentityError
from identity.service import IdentityService
from identity.tokens import KeyRing
from tests.identity_support import FakeClock

PHONE = "+447700900901"


class RecordingSender:
    """Stands in for the SMS gateway, the one outside boundary."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    async def send(self, phone: str, text: str, code: str) -> None:
        self.sent.append((phone, text, code))


def make(redis: aredis.Redis, sender: RecordingSender, clock: FakeClock) -> IdentityService:
    return IdentityService(redis, KeyRing({"k1": b"k" * 32}), b"p" * 32, sender=sender,
                           clock=clock)


async def test_the_sender_gets_the_code_and_the_store_does_not(redis: aredis.Redis) -> None:
    """The SMS text carries the code; the store holds only its keyed hash, and no key
    name holds the phone number."""
    sender = RecordingSender()
    svc = make(redis, sender, FakeClock())
    await svc.request_code("07700 900901")
    phone, text, code = sender.sent[0]
    assert phone == PHONE and code in text and "5 minutes" in text
    for key in await redis.keys("*"):
        assert b"7700900901" not in key
        if await redis.type(key) == b"hash":
            values = b"".join(await redis.hvals(key))
            assert code.encode() not in values and b"7700900901" not in values


async def test_a_new_request_replaces_the_old_code(redis: aredis.Redis) -> None:
    """Only the latest code sent works."""
    sender = RecordingSender()
    svc = make(redis, sender, FakeClock())
    await svc.request_code(PHONE)
    await svc.request_code(PHONE)
    old, new = sender.sent[0][2], sender.sent[1][2]
    if old != new:
        with pytest.raises(IdentityError, match="wrong or has expired"):
            await svc.verify(PHONE, old, "phone")
    assert (await svc.verify(PHONE, new, "phone"))["created"] is True


async def test_racing_verifies_of_one_code_sign_in_once(redis: aredis.Redis) -> None:
    """Ten concurrent verifies with the right code: one member, one success."""
    sender = RecordingSender()
    svc = make(redis, sender, FakeClock())
    await svc.request_code(PHONE)
    code = sender.sent[0][2]
    results = await asyncio.gather(
        *(svc.verify(PHONE, code, f"d{i}") for i in range(10)), return_exceptions=True)
    ok = [r for r in results if isinstance(r, dict)]
    assert len(ok) == 1
    assert all(isinstance(r, IdentityError) and r.code == "invalid_code"
               for r in results if not isinstance(r, dict))
    assert await redis.scard("nr:members") == 1


async def test_racing_check_ins_of_one_member_code_accept_once(redis: aredis.Redis) -> None:
    """The same member code shown at ten screens at once checks in once."""
    sender = RecordingSender()
    clock = FakeClock(1_800_000_000.0)
    svc = make(redis, sender, clock)
    await svc.request_code(PHONE)
    signed = await svc.verify(PHONE, sender.sent[0][2], "phone")
    token = svc.keyring.verify(signed["token"])
    code = (await svc.member_code(token))["code"]
    results = await asyncio.gather(
        *(svc.check_in(code, f"screen-{i}", None) for i in range(10)), return_exceptions=True)
    assert sum(isinstance(r, dict) for r in results) == 1


async def test_failing_check_in_hook_does_not_fail_the_check_in(
        redis: aredis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    """A hook that raises is logged; the screen still gets its greeting."""
    sender = RecordingSender()
    svc = make(redis, sender, FakeClock())

    async def broken(member_id: str, screen_id: str, store_id: str | None) -> None:
        raise RuntimeError("offers down")

    svc.on_checkin.append(broken)
    await svc.request_code(PHONE)
    signed = await svc.verify(PHONE, sender.sent[0][2], "phone")
    code = (await svc.member_code(svc.keyring.verify(signed["token"])))["code"]
    result = await svc.check_in(code, "screen-1", "store-soho")
    assert result["greeting"] == "Welcome!"
    await svc.drain()
    assert "check-in hook failed" in caplog.text


async def test_device_limit_signs_out_the_oldest(redis: aredis.Redis) -> None:
    """An eleventh device signs out the oldest one; the member keeps ten."""
    sender = RecordingSender()
    clock = FakeClock()
    svc = make(redis, sender, clock)
    signed = []
    for i in range(11):
        clock.advance(601)  # stay inside the send limit
        await svc.request_code(PHONE)
        signed.append(await svc.verify(PHONE, sender.sent[-1][2], f"device-{i}"))
    devices = await svc.list_devices(signed[0]["member_id"])
    assert len(devices) == 10
    assert "device-0" not in {d["device_id"] for d in devices}


async def test_failed_send_leaves_no_valid_code(redis: aredis.Redis) -> None:
    """When the gateway fails the request is a 502 and no code is left to guess."""

    class Down:
        async def send(self, phone: str, text: str, code: str) -> None:
            raise ConnectionError("gateway down")

    svc = IdentityService(redis, KeyRing({"k1": b"k" * 32}), b"p" * 32, sender=Down())
    with pytest.raises(IdentityError) as err:
        await svc.request_code(PHONE)
    assert err.value.status == 502 and err.value.code == "sms_failed"
    assert await redis.keys("nr:otp:code:*") == []


async def test_failed_stitch_hook_keeps_the_sign_in_and_retries_later(
        redis: aredis.Redis) -> None:
    """If a stitch hook fails the member is signed in unstitched, and the next sign-in
    with the same anonymous id stitches it."""
    sender = RecordingSender()
    clock = FakeClock()
    svc = make(redis, sender, clock)
    calls: list[tuple[str, str]] = []

    async def flaky(anon_id: str, member_id: str) -> None:
        calls.append((anon_id, member_id))
        if len(calls) == 1:
            raise RuntimeError("carts down")

    svc.on_stitch.append(flaky)
    await svc.request_code(PHONE)
    first = await svc.verify(PHONE, sender.sent[-1][2], "phone", "a_feed")
    assert first["stitched"] is False
    assert await svc.members.resolve("web", "a_feed") is None
    await svc.request_code(PHONE)
    second = await svc.verify(PHONE, sender.sent[-1][2], "phone", "a_feed")
    assert second["stitched"] is True and len(calls) == 2
    assert await svc.members.anon_ids(second["member_id"]) == ["a_feed"]


async def test_tier_follows_spend(redis: aredis.Redis) -> None:
    """Spend moves a member from member to silver (500) to gold (2,000)."""
    svc = make(redis, RecordingSender(), FakeClock())
    member = await svc.members.create("Tia Lowe")
    assert member.tier == "member"
    assert (await svc.record_spend(member.id, 499.5)).tier == "member"
    assert (await svc.record_spend(member.id, 0.5)).tier == "silver"
    assert (await svc.record_spend(member.id, 1500)).tier == "gold"
    with pytest.raises(IdentityError):
        await svc.record_spend(member.id, -5)
