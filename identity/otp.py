"""Sign-in codes sent by SMS: request, send limits, verification, failure lock.

Codes are stored as a keyed hash only, live five minutes and work once. Limits (per
phone): 3 sends in 10 minutes, 5 wrong tries per code, 10 failures in an hour and the
phone is locked for an hour. Every answer is the same whether the number belongs to a
member or not. Times come from an injected clock; the datastore's own expiries only clean up.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import redis.asyncio as aredis

from identity.codes import check_otp_shape, hash_otp, new_otp
from identity.errors import IdentityError, invalid_code, too_many
from identity.keys import CODE, FAILS, LOCK, OUTBOX, SENDS
from identity.types import Clock

log = logging.getLogger("newretail.identity")


@dataclass(frozen=True)
class OtpLimits:
    ttl: float = 300.0
    max_tries: int = 5
    max_sends: int = 3
    send_window: float = 600.0
    max_failures: int = 10
    failure_window: float = 3600.0
    lock_seconds: float = 3600.0


class SmsSender(Protocol):
    """Where sign-in codes go: an SMS gateway in production."""

    async def send(self, phone: str, text: str, code: str) -> None: ...


class OutboxSender:
    """The dev/demo sender: writes to the log and to an admin-only outbox in the datastore."""

    def __init__(self, redis: aredis.Redis, keep: int = 200) -> None:
        self.redis = redis
        self.keep = keep

    async def send(self, phone: str, text: str, code: str) -> None:
        log.info("sms to %s: %s", phone, text)
        entry = orjson.dumps({"phone": phone, "text": text, "code": code})
        pipe = self.redis.pipeline(transaction=True)
        pipe.lpush(OUTBOX, entry)
        pipe.ltrim(OUTBOX, 0, self.keep - 1)
        pipe.expire(OUTBOX, 86400)
        await pipe.execute()

    async def forget(self, is_theirs: Callable[[str], bool]) -> None:
        """Erasure: drop the messages sent to phones ``is_theirs`` says are the member's."""
        sent: Any = await self.redis.lrange(OUTBOX, 0, -1)
        for raw in sent:
            if is_theirs(str(orjson.loads(raw).get("phone", ""))):
                await self.redis.lrem(OUTBOX, 0, raw)

    async def messages(self, limit: int = 50) -> list[dict[str, Any]]:
        raw = await self.redis.lrange(OUTBOX, 0, limit - 1)
        return [orjson.loads(r) for r in raw]


class NoSender:
    """Production without a configured gateway: sign-in is refused with a clear error."""

    async def send(self, phone: str, text: str, code: str) -> None:
        raise IdentityError("sms_unavailable", "no SMS gateway is configured", 503)


# KEYS: code, sends. ARGV: now, hash, ttl, max_sends, window, nonce, lock key state
_REQUEST = """
local lock = redis.call('GET', KEYS[3])
if lock and tonumber(lock) > tonumber(ARGV[1]) then return {'locked', lock} end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[5]))
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return {'limited', tostring(tonumber(oldest[2]) + tonumber(ARGV[5]))}
end
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], math.ceil(tonumber(ARGV[5])) + 60)
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'hash', ARGV[2], 'expires', tonumber(ARGV[1]) + tonumber(ARGV[3]),
  'tries', 0)
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) + 60)
return {'ok', ''}
"""

# KEYS: code, fails, lock. ARGV: now, hash, max_tries, max_failures, window, lock_s, nonce
_VERIFY = """
local now = tonumber(ARGV[1])
local lock = redis.call('GET', KEYS[3])
if lock and tonumber(lock) > now then return {'locked', lock} end
local function fail()
  redis.call('ZADD', KEYS[2], now, ARGV[7])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[5]))
  redis.call('EXPIRE', KEYS[2], math.ceil(tonumber(ARGV[5])) + 60)
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
    local untl = now + tonumber(ARGV[6])
    redis.call('SET', KEYS[3], tostring(untl), 'EX', math.ceil(tonumber(ARGV[6])) + 60)
    redis.call('DEL', KEYS[1], KEYS[2])
    return {'locked', tostring(untl)}
  end
  return {'invalid', ''}
end
local stored = redis.call('HMGET', KEYS[1], 'hash', 'expires', 'tries')
if not stored[1] or tonumber(stored[2]) <= now then
  redis.call('DEL', KEYS[1])
  return fail()
end
if stored[1] == ARGV[2] then
  redis.call('DEL', KEYS[1])
  return {'ok', ''}
end
if redis.call('HINCRBY', KEYS[1], 'tries', 1) >= tonumber(ARGV[3]) then
  redis.call('DEL', KEYS[1])
end
return fail()
"""


class OtpService:
    """Sign-in codes for phones (already in E.164).

    Args:
        redis: the datastore.
        key: HMAC key for code hashes and per-phone key names.
        sender: where codes go.
        clock: the time source.
        limits: the limits above.
    """

    def __init__(self, redis: aredis.Redis, key: bytes, sender: SmsSender, clock: Clock,
                 limits: OtpLimits | None = None) -> None:
        self.redis = redis
        self.sender = sender
        self.clock = clock
        self.limits = limits or OtpLimits()
        self._key = key
        self._request = redis.register_script(_REQUEST)
        self._verify = redis.register_script(_VERIFY)

    def _phone_key(self, phone: str) -> str:
        return hmac.new(self._key, f"otp-phone:{phone}".encode(), hashlib.sha256).hexdigest()

    async def request(self, phone: str) -> None:
        """Make and send a fresh code (replacing any earlier one), within the send limit."""
        d = self._phone_key(phone)
        code = new_otp()
        lim = self.limits
        status, detail = await self._request(
            keys=[CODE.format(d=d), SENDS.format(d=d), LOCK.format(d=d)],
            args=[self.clock(), hash_otp(self._key, phone, code), lim.ttl, lim.max_sends,
                  lim.send_window, secrets.token_hex(8)],
        )
        _raise_for(status, detail, self.clock())
        minutes = int(lim.ttl // 60)
        try:
            await self.sender.send(
                phone, f"Your newretail code is {code}. It expires in {minutes} minutes.", code)
        except Exception as exc:
            # A code nobody received must not stay valid.
            await self.redis.delete(CODE.format(d=d))
            if isinstance(exc, IdentityError):
                raise
            log.exception("SMS sender failed")
            raise IdentityError("sms_failed", "the code could not be sent; try again", 502
                                ) from exc

    async def verify(self, phone: str, code: object) -> None:
        """Accept the phone's current code once; raise ``invalid_code`` or ``locked``."""
        code = check_otp_shape(code)
        d = self._phone_key(phone)
        lim = self.limits
        status, detail = await self._verify(
            keys=[CODE.format(d=d), FAILS.format(d=d), LOCK.format(d=d)],
            args=[self.clock(), hash_otp(self._key, phone, code), lim.max_tries,
                  lim.max_failures, lim.failure_window, lim.lock_seconds, secrets.token_hex(8)],
        )
        _raise_for(status, detail, self.clock())

    async def forget(self, phone: str) -> None:
        """Drop a phone's pending code and counters (erasure)."""
        d = self._phone_key(phone)
        await self.redis.delete(CODE.format(d=d), SENDS.format(d=d), FAILS.format(d=d))


def _raise_for(status: bytes | str, detail: bytes | str, now: float) -> None:
    status = status.decode() if isinstance(status, bytes) else status
    detail = detail.decode() if isinstance(detail, bytes) else detail
    if status == "ok":
        return
    if status == "invalid":
        raise invalid_code()
    wait = max(1, int(float(detail) - now))
    if status == "locked":
        raise too_many(f"too many failed codes for this phone; try again in {wait} s", "locked")
    raise too_many(f"too many codes sent to this phone; try again in {wait} s")
