"""The service's own record of each order's payments, and the rules that make webhooks safe
in any order: ``decide`` (pure) says what an event does to a payment; ``PaymentLedger``
applies it in the datastore with compare-and-set, so duplicates and races change nothing.

Rules: ``succeeded`` is final unless refunded; ``refunded`` is final; a ``failed`` or
``canceled`` after ``succeeded`` changes nothing; a ``succeeded`` for an order that is no
longer payable (``mark_not_payable``, as an expired hold does) is refunded, and the order
is not resurrected. The order lifecycle will implement ``PaymentEvents`` with these rules.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson
import redis.asyncio as aredis

from live.db.client import text
from live.money import Money
from live.payments import keys
from live.payments.port import EventKind, Payment, PaymentEvent, PaymentProvider
from live.payments.port import PaymentStatus as S

log = logging.getLogger("newretail.live")


class Action(StrEnum):
    NONE = "none"
    REFUND = "refund"  # money arrived for an order that can no longer take it


@dataclass(frozen=True)
class Decision:
    status: S
    action: Action = Action.NONE


_FINAL = {S.REFUNDED}
_OPEN = {S.REQUIRES_ACTION, S.PROCESSING, S.FAILED, S.CANCELED}


def decide(current: S, kind: EventKind, payable: bool) -> Decision:
    """What an event of ``kind`` does to a payment in ``current`` for an order that is
    (not) ``payable``. Events come in any order and more than once."""
    if current in _FINAL:
        return Decision(current)
    if kind is EventKind.REFUNDED:
        return Decision(S.REFUNDED)
    if kind is EventKind.SUCCEEDED:
        # A payment may succeed after a failed attempt (another card); money arriving for
        # an order that expired or was cancelled goes back.
        return Decision(S.SUCCEEDED, Action.NONE if payable else Action.REFUND)
    if current is S.SUCCEEDED:
        return Decision(current)  # failed, canceled, processing after success: stale
    if kind is EventKind.PROCESSING:
        return Decision(S.PROCESSING if current is S.REQUIRES_ACTION else current)
    if kind is EventKind.FAILED:
        return Decision(S.FAILED if current in (S.REQUIRES_ACTION, S.PROCESSING) else current)
    return Decision(S.CANCELED)  # canceled, from any open state


# Sets a payment's status if nothing moved since it was read (status and the order's
# ``closed`` flag), marks the order paid on a success it can take, and logs the transition.
_APPLY = """
local status = redis.call('HGET', KEYS[1], 'p:' .. ARGV[1] .. ':status')
local closed = redis.call('HGET', KEYS[1], 'closed') or '0'
if status ~= ARGV[2] or closed ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], 'p:' .. ARGV[1] .. ':status', ARGV[4])
if ARGV[5] == '1' then redis.call('HSET', KEYS[1], 'paid', ARGV[1]) end
if ARGV[6] ~= '' then redis.call('RPUSH', KEYS[2], ARGV[6]) end
return 1
"""

# Closes an order to payment unless a payment already succeeded: 1 closed, 0 paid.
_CLOSE = """
if redis.call('HEXISTS', KEYS[1], 'paid') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'closed', '1')
return 1
"""


class PaymentLedger:
    """Per order: its payments, their statuses and transitions; the ``PaymentEvents`` of
    this package until the order lifecycle takes the role (its behaviour is the contract).

    Args:
        providers: by name, to refund a payment that arrived too late.
    """

    def __init__(self, redis: aredis.Redis, providers: Mapping[str, PaymentProvider]) -> None:
        self.redis = redis
        self.providers = providers
        self._apply = redis.register_script(_APPLY)
        self._close = redis.register_script(_CLOSE)

    async def expect(self, payment: Payment) -> None:
        """Record a payment created for an order (its amount is what webhooks must say)."""
        h = keys.ledger(payment.order_id)
        p = f"p:{payment.payment_id}:"
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hsetnx(h, p + "status", S.REQUIRES_ACTION.value)
            pipe.hsetnx(h, p + "amount", payment.amount.amount)
            pipe.hsetnx(h, p + "currency", payment.amount.currency)
            pipe.hsetnx(h, p + "provider", payment.provider)
            pipe.set(keys.payment_order(payment.provider, payment.payment_id), payment.order_id)
            await pipe.execute()

    async def expected(self, order_id: str, payment_id: str) -> Money | None:
        """The amount asked for ``payment_id`` of ``order_id``, ``None`` if unknown."""
        amount, currency = await self.redis.hmget(
            keys.ledger(order_id), [f"p:{payment_id}:amount", f"p:{payment_id}:currency"])
        if amount is None or currency is None:
            return None
        return Money(int(amount), text(currency))

    async def order_of(self, provider: str, payment_id: str) -> str | None:
        raw = await self.redis.get(keys.payment_order(provider, payment_id))
        return None if raw is None else text(raw)

    async def status(self, order_id: str, payment_id: str) -> S | None:
        raw = await self.redis.hget(
            keys.ledger(order_id), f"p:{payment_id}:status")
        return None if raw is None else S(text(raw))

    async def history(self, order_id: str) -> list[dict[str, Any]]:
        """The order's payment transitions, oldest first."""
        raw = await self.redis.lrange(keys.ledger_log(order_id), 0, -1)
        return [orjson.loads(r) for r in raw]

    async def mark_not_payable(self, order_id: str) -> bool:
        """Close the order to payment (expired, cancelled); a later success is refunded.

        Returns:
            ``False`` when a payment already succeeded: the order is paid, not closed.
        """
        return bool(await self._close(keys=[keys.ledger(order_id)]))

    async def on_payment_event(self, event: PaymentEvent) -> None:
        """Apply a verified event (idempotent); refund money that came too late."""
        h, p = keys.ledger(event.order_id), f"p:{event.payment_id}:status"
        while True:
            raw_status, raw_closed = await self.redis.hmget(h, [p, "closed"])
            if raw_status is None:
                log.warning("payment event %s for unknown payment %s of order %s ignored",
                            event.event_id, event.payment_id, event.order_id)
                return
            current, closed = S(text(raw_status)), text(raw_closed or b"0")
            decision = decide(current, event.kind, payable=closed != "1")
            moved = decision.status is not current
            entry = orjson.dumps({
                "payment_id": event.payment_id, "event_id": event.event_id,
                "kind": event.kind.value, "from": current.value,
                "to": decision.status.value, "action": decision.action.value,
                "at": time.time()}) if moved else b""
            paid = decision.status is S.SUCCEEDED and decision.action is Action.NONE
            done = await self._apply(keys=[h, keys.ledger_log(event.order_id)], args=[
                event.payment_id, current.value, closed, decision.status.value,
                "1" if paid and moved else "0", entry])
            if int(done):
                break
        if decision.action is Action.REFUND:
            await self._refund_late(event)

    async def _refund_late(self, event: PaymentEvent) -> None:
        """Give back a payment that succeeded after its order closed: once, whatever the
        number of deliveries (one idempotency key per payment)."""
        provider = self.providers[event.provider]
        log.info("payment %s succeeded after order %s closed: refunding %s",
                 event.payment_id, event.order_id, event.amount)
        await provider.refund(event.payment_id, event.amount,
                              idempotency_key=f"late-success:{event.payment_id}")
