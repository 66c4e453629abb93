"""Signed-in devices and their member-code secrets.

Each sign-in gives the device a fresh secret (160 bits) under a random index; the member
code it shows is ``PREFIX + index + TOTP(secret)``. A code is accepted once: the last
accepted step is stored and a code from that step or an earlier one is refused. Revoking
a device deletes its secret, so its codes stop working at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aredis

from identity.codes import (
    matching_step,
    member_code,
    new_device_index,
    new_device_secret,
    parse_member_code,
    step_expires_at,
)
from identity.errors import invalid_code, not_found
from identity.keys import DEVICE, MEMBER_DEVICES
from identity.types import Clock, DeviceIndex, MemberCode, MemberId

# Accept a step only if it is later than the last one accepted for this device; on
# success also return the owner's record (KEYS[2]) to save a round trip.
_ACCEPT = """
local last = redis.call('HGET', KEYS[1], 'last_step')
if not last or tonumber(last) >= tonumber(ARGV[1]) then return false end
redis.call('HSET', KEYS[1], 'last_step', ARGV[1])
return redis.call('HGETALL', KEYS[2])
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class Device:
    """A signed-in device; ``device_id`` is the client's own name for it."""

    index: DeviceIndex
    member_id: MemberId
    device_id: str
    secret: bytes
    created_at: float
    last_step: int

    def public(self) -> dict[str, object]:
        return {"device_index": self.index, "device_id": self.device_id,
                "created_at": self.created_at}


class Devices:
    """Device secrets by index, and the member-code check.

    Args:
        redis: the datastore.
        clock: the time source (TOTP steps come from it).
    """

    def __init__(self, redis: aredis.Redis, clock: Clock) -> None:
        self.redis = redis
        self.clock = clock
        self._accept = redis.register_script(_ACCEPT)

    async def register(self, member_id: str, device_id: str) -> Device:
        """A fresh secret for this device; an earlier sign-in of the same device is revoked."""
        for old in await self.of_member(member_id):
            if old.device_id == device_id:
                await self.revoke(old.index)
        secret = new_device_secret()
        now = self.clock()
        while True:
            index = new_device_index()
            created = await self.redis.hsetnx(DEVICE.format(index=index), "member", member_id)
            if created:
                break
        await self.redis.hset(DEVICE.format(index=index), mapping={
            "device_id": device_id, "secret": secret.hex(), "created_at": f"{now:.3f}",
            "last_step": -1,
        })
        await self.redis.sadd(MEMBER_DEVICES.format(id=member_id), index)
        return Device(index, MemberId(member_id), device_id, secret, now, -1)

    async def get(self, index: str) -> Device | None:
        raw = await self.redis.hgetall(DEVICE.format(index=index))
        if not raw or b"secret" not in raw:
            return None
        return Device(
            index=DeviceIndex(index), member_id=MemberId(_text(raw[b"member"])),
            device_id=_text(raw[b"device_id"]), secret=bytes.fromhex(_text(raw[b"secret"])),
            created_at=float(raw[b"created_at"]), last_step=int(raw[b"last_step"]),
        )

    async def of_member(self, member_id: str) -> list[Device]:
        indices = sorted(_text(i) for i in await self.redis.smembers(
            MEMBER_DEVICES.format(id=member_id)))
        found = [await self.get(i) for i in indices]
        return [d for d in found if d is not None]

    async def code(self, index: str) -> MemberCode:
        """The code the device shows now (the phone can also compute it from its secret)."""
        device = await self.get(index)
        if device is None:
            raise not_found("device")
        now = self.clock()
        return {"code": member_code(device.index, device.secret, now),
                "expires_at": step_expires_at(now)}

    async def check_code(
        self, code: object, owner_key: Callable[[str], str],
    ) -> tuple[Device, list[bytes]]:
        """The device whose current code this is, and its owner's record (the flat
        ``HGETALL`` reply of ``owner_key(member_id)``); each code works once.

        Raises ``bad_request`` for something not shaped like a member code and
        ``invalid_code`` for a wrong, stale, reused or revoked one.
        """
        parsed = parse_member_code(code)
        device = await self.get(parsed.index)
        if device is None:
            raise invalid_code()
        step = matching_step(device.secret, parsed.otp, self.clock())
        if step is None:
            raise invalid_code()
        owner: Any = await self._accept(
            keys=[DEVICE.format(index=device.index), owner_key(device.member_id)], args=[step])
        if owner is None:
            raise invalid_code()
        return device, list(owner)

    async def revoke(self, index: str) -> Device | None:
        """Forget the device's secret; returns what was revoked."""
        device = await self.get(index)
        if device is None:
            return None
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(DEVICE.format(index=index))
        pipe.srem(MEMBER_DEVICES.format(id=device.member_id), index)
        await pipe.execute()
        return device

    async def revoke_all(self, member_id: str) -> int:
        devices = await self.of_member(member_id)
        for d in devices:
            await self.revoke(d.index)
        await self.redis.delete(MEMBER_DEVICES.format(id=member_id))
        return len(devices)
