"""The fake payment provider (dev, demo, tests): it behaves like a real one, not a stub.

- Its payments live in the datastore, one hash per payment (``keys.fake_payment``); the
  payment id is derived from the idempotency key, so the same key always finds the first
  payment, and a key reused with other parameters is refused, as Stripe does.
- The payer approves or declines on its page (``/pay/fake/{payment_id}``); the outcome
  reaches the service later, as a signed webhook sent by ``FakeDelivery`` (at least once,
  possibly duplicated or out of order).
- Test payers (the ``payer`` given to ``create``): one ending in ``_decline`` is declined
  when they approve (``failed``); one ending in ``_timeout`` makes ``create`` time out
  (``ProviderUnavailable``, nothing created). ``timeout_rate`` makes any call time out at
  random *after* it took effect: a retry with the same key returns the first answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import redis.asyncio as aredis

from live.db.client import text
from live.money import Money
from live.payments import keys, signing
from live.payments.delivery import FakeDelivery
from live.payments.port import (
    EventKind,
    Payment,
    PaymentError,
    PaymentEvent,
    PaymentStatus,
    ProviderUnavailable,
    Refund,
)

DECLINE_SUFFIX = "_decline"
TIMEOUT_SUFFIX = "_timeout"
PAGE_PREFIX = "/pay/fake/"
Decision = Literal["approve", "decline"]

# Creates the payment unless its hash exists; the same parameters return it, others fail.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'fingerprint') ~= ARGV[1] then return 'reused' end
  return 'existing'
end
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'order_id', ARGV[2], 'amount', ARGV[3],
           'currency', ARGV[4], 'payer', ARGV[5], 'created', ARGV[6],
           'status', 'requires_action', 'refunded', 0, 'events', 0)
return 'created'
"""

# Moves a payment from one of ARGV[2..] to ARGV[1]; answers the new event's number, or 0
# when it was already there (nothing to tell), or an error naming the state found.
_MOVE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return redis.error_reply('not_found') end
if status == ARGV[1] then return 0 end
for i = 2, #ARGV do
  if status == ARGV[i] then
    redis.call('HSET', KEYS[1], 'status', ARGV[1])
    return redis.call('HINCRBY', KEYS[1], 'events', 1)
  end
end
return redis.error_reply('state:' .. status)
"""

# A refund under ARGV[1] (its key) of ARGV[2] minor units: once per key.
_REFUND = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return redis.error_reply('not_found') end
local field = 'refund:' .. ARGV[1]
local done = redis.call('HGET', KEYS[1], field)
if done then
  if done ~= ARGV[2] then return redis.error_reply('reused') end
  return {0, done}
end
if status ~= 'succeeded' then return redis.error_reply('state:' .. status) end
local amount = tonumber(redis.call('HGET', KEYS[1], 'amount'))
local refunded = tonumber(redis.call('HGET', KEYS[1], 'refunded'))
if refunded + tonumber(ARGV[2]) > amount then return redis.error_reply('too_much') end
redis.call('HSET', KEYS[1], field, ARGV[2])
redis.call('HSET', KEYS[1], 'refunded', refunded + tonumber(ARGV[2]))
if refunded + tonumber(ARGV[2]) == amount then
  redis.call('HSET', KEYS[1], 'status', 'refunded')
end
redis.call('RPUSH', KEYS[2], ARGV[1])
return {redis.call('HINCRBY', KEYS[1], 'events', 1), ARGV[2]}
"""


@dataclass(frozen=True)
class FakeConfig:
    """How the fake behaves.

    Attributes:
        secret: the key its webhooks are signed with (shared with the service).
        timeout_rate: chance (0..1) that a call times out after taking effect.
        latency: seconds each call waits before answering (a timeout waits this long too).
        duplicate_rate: chance that a delivered webhook is delivered once more.
        reorder_rate: chance that a webhook is held back ``reorder_delay`` seconds, so a
            later one may overtake it.
        seed: makes the random choices repeatable (tests).
    """

    secret: bytes
    timeout_rate: float = 0.0
    latency: float = 0.0
    duplicate_rate: float = 0.0
    reorder_rate: float = 0.0
    reorder_delay: float = 0.5
    seed: int | None = None


def payment_id_for(idempotency_key: str) -> str:
    """The payment id of an idempotency key (the same key, the same payment)."""
    return "pf_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]


class FakeProvider:
    """The fake ``PaymentProvider``; ``decide`` is the payer's click on its page."""

    name = "fake"

    def __init__(self, redis: aredis.Redis, config: FakeConfig,
                 delivery: FakeDelivery | None = None) -> None:
        self.redis = redis
        self.config = config
        self.delivery = delivery
        self._rng = random.Random(config.seed)
        self._create = redis.register_script(_CREATE)
        self._move = redis.register_script(_MOVE)
        self._refund = redis.register_script(_REFUND)

    async def _answer(self, what: str) -> None:
        """Wait the configured latency; then, now and then, time out (the call took
        effect: the caller cannot tell, as with a real provider)."""
        if self.config.latency:
            await asyncio.sleep(self.config.latency)
        if self.config.timeout_rate and self._rng.random() < self.config.timeout_rate:
            raise ProviderUnavailable(f"the fake provider did not answer {what} in time")

    async def create(self, order_id: str, amount: Money, idempotency_key: str,
                     payer: str | None = None) -> Payment:
        if not idempotency_key:
            raise PaymentError("an idempotency key is required", "bad_request")
        payer = payer or ""
        if payer.endswith(TIMEOUT_SUFFIX):
            if self.config.latency:
                await asyncio.sleep(self.config.latency)
            raise ProviderUnavailable(f"the fake provider timed out for payer {payer!r}")
        pid = payment_id_for(idempotency_key)
        fingerprint = f"{order_id}|{amount.amount}|{amount.currency}|{payer}"
        found = text(await self._create(
            keys=[keys.fake_payment(pid)],
            args=[fingerprint, order_id, amount.amount, amount.currency, payer, time.time()]))
        if found == "reused":
            raise PaymentError(f"idempotency key {idempotency_key!r} was used with other "
                               f"parameters", "idempotency_key_reused")
        await self._answer("create")
        return await self.get(pid)

    async def get(self, payment_id: str) -> Payment:
        raw = await self.redis.hgetall(keys.fake_payment(payment_id))
        if not raw:
            raise PaymentError(f"payment {payment_id} not found", "not_found")
        h = {text(k): text(v) for k, v in raw.items()}
        currency = h["currency"]
        return Payment(
            payment_id=payment_id, order_id=h["order_id"],
            amount=Money(int(h["amount"]), currency), status=PaymentStatus(h["status"]),
            url=PAGE_PREFIX + payment_id, provider=self.name,
            refunded=Money(int(h["refunded"]), currency))

    async def _transition(self, payment_id: str, to: PaymentStatus,
                          *from_: PaymentStatus) -> int:
        try:
            return int(await self._move(keys=[keys.fake_payment(payment_id)],
                                        args=[to.value, *(s.value for s in from_)]))
        except aredis.ResponseError as exc:
            raise _refusal(payment_id, str(exc), f"to {to.value}") from None

    async def decide(self, payment_id: str, decision: Decision) -> Payment:
        """The payer's decision on the page: ``approve`` (declined anyway for a test payer
        ending in ``_decline``) or ``decline``. A second decision changes nothing."""
        payment = await self.get(payment_id)
        if payment.status is not PaymentStatus.REQUIRES_ACTION:
            return payment
        payer = text(await self.redis.hget(
            keys.fake_payment(payment_id), "payer") or b"")
        ok = decision == "approve" and not payer.endswith(DECLINE_SUFFIX)
        to = PaymentStatus.SUCCEEDED if ok else PaymentStatus.FAILED
        n = await self._transition(payment_id, to, PaymentStatus.REQUIRES_ACTION)
        if n:
            await self._emit(payment_id, n, EventKind(to.value))
        return await self.get(payment_id)

    async def capture(self, payment_id: str, idempotency_key: str) -> Payment:
        """The fake captures on approval: capturing a succeeded payment is a no-op."""
        payment = await self.get(payment_id)
        if payment.status not in (PaymentStatus.SUCCEEDED, PaymentStatus.REFUNDED):
            raise PaymentError(f"payment {payment_id} is {payment.status.value}, "
                               f"not capturable", "payment_state")
        await self._answer("capture")
        return payment

    async def cancel(self, payment_id: str, idempotency_key: str) -> Payment:
        n = await self._transition(payment_id, PaymentStatus.CANCELED,
                                   PaymentStatus.REQUIRES_ACTION, PaymentStatus.PROCESSING,
                                   PaymentStatus.FAILED)
        if n:
            await self._emit(payment_id, n, EventKind.CANCELED)
        await self._answer("cancel")
        return await self.get(payment_id)

    async def refund(self, payment_id: str, amount: Money, idempotency_key: str) -> Refund:
        payment = await self.get(payment_id)
        if amount.currency != payment.amount.currency or amount.amount <= 0:
            raise PaymentError(f"a refund of {payment_id} must be a positive amount of "
                               f"{payment.amount.currency}", "bad_request")
        try:
            n, _ = await self._refund(
                keys=[keys.fake_payment(payment_id), keys.fake_refunds(payment_id)],
                args=[idempotency_key, amount.amount])
        except aredis.ResponseError as exc:
            raise _refusal(payment_id, str(exc), "to refund") from None
        if int(n):
            await self._emit(payment_id, int(n), EventKind.REFUNDED)
        await self._answer("refund")
        rid = "rf_" + hashlib.sha256(f"{payment_id}|{idempotency_key}".encode()).hexdigest()[:24]
        return Refund(rid, payment_id, amount, "succeeded")

    async def refunds(self, payment_id: str) -> list[str]:
        """The idempotency keys of the refunds made of a payment, oldest first."""
        raw = await self.redis.lrange(keys.fake_refunds(payment_id), 0, -1)
        return [text(k) for k in raw]

    def event_body(self, payment: Payment, n: int, kind: EventKind,
                   created: float | None = None) -> bytes:
        """The JSON body of the payment's ``n``-th event."""
        return orjson.dumps({
            "id": f"evf_{payment.payment_id[3:]}_{n}", "type": f"payment.{kind.value}",
            "created": time.time() if created is None else created,
            "data": {"payment_id": payment.payment_id, "order_id": payment.order_id,
                     "amount": payment.amount.to_wire(), "status": payment.status.value},
        })

    def signed(self, body: bytes, timestamp: float | None = None) -> dict[str, str]:
        """The headers of a webhook carrying ``body`` signed now (or at ``timestamp``)."""
        t = int(time.time() if timestamp is None else timestamp)
        return {signing.HEADER: signing.sign(self.config.secret, body, t),
                "content-type": "application/json"}

    async def _emit(self, payment_id: str, n: int, kind: EventKind) -> None:
        if self.delivery is None:
            return
        payment = await self.get(payment_id)
        body = self.event_body(payment, n, kind)
        held = self.config.reorder_rate and self._rng.random() < self.config.reorder_rate
        await self.delivery.enqueue(f"evf_{payment_id[3:]}_{n}", body,
                                    delay=self.config.reorder_delay if held else 0.0)

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> PaymentEvent | None:
        signing.verify(self.config.secret, body, headers.get(signing.HEADER), time.time())
        try:
            raw: Any = orjson.loads(body)
            kind = str(raw["type"]).removeprefix("payment.")
            data = raw["data"]
            if kind not in EventKind.__members__.values():
                return None
            return PaymentEvent(
                event_id=str(raw["id"]), provider=self.name, kind=EventKind(kind),
                payment_id=str(data["payment_id"]), order_id=str(data["order_id"]),
                amount=Money.from_wire(data["amount"]), created=float(raw["created"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise PaymentError(f"the webhook's event cannot be read: {exc}",
                               "bad_event") from None


def _refusal(payment_id: str, reply: str, what: str) -> PaymentError:
    if reply == "not_found":
        return PaymentError(f"payment {payment_id} not found", "not_found")
    if reply == "reused":
        return PaymentError("idempotency key was used with another amount",
                            "idempotency_key_reused")
    if reply == "too_much":
        return PaymentError(f"the refund is more than what is left of {payment_id}",
                            "refund_too_large")
    state = reply.removeprefix("state:")
    return PaymentError(f"payment {payment_id} is {state}: cannot move it {what}",
                        "payment_state")
