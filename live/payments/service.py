"""``Payments``: the one object the rest of the service talks to about money moving. It
creates payments through the configured provider (recording what each must amount to) and
receives webhooks: signature verified, amount checked, deduplicated by event id, handed to
the ``PaymentEvents`` handler (the ledger until the order lifecycle takes over)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Literal

import redis.asyncio as aredis

from live.errors import LiveError
from live.metrics import PAYMENT_WEBHOOKS
from live.money import Money
from live.payments import keys
from live.payments.fake import FakeProvider
from live.payments.ledger import PaymentLedger
from live.payments.port import (
    BadSignature,
    Payment,
    PaymentError,
    PaymentEvent,
    PaymentEvents,
    PaymentProvider,
)

log = logging.getLogger("newretail.live")

# Longer than providers retry a webhook (Stripe: 3 days).
SEEN_TTL = 7 * 24 * 3600
Outcome = Literal["handled", "duplicate", "ignored"]


class Payments:
    """Payments through one provider.

    Args:
        provider: the configured one (``NEWRETAIL_PAYMENTS``).
        fake_page: the fake provider whose payer page is served (dev and demo), or ``None``.
    """

    def __init__(self, redis: aredis.Redis, provider: PaymentProvider,
                 fake_page: FakeProvider | None = None) -> None:
        self.redis = redis
        self.provider = provider
        self.providers: dict[str, PaymentProvider] = {provider.name: provider}
        self.fake_page = fake_page
        self.ledger = PaymentLedger(redis, self.providers)
        self.events: PaymentEvents = self.ledger

    def handle_events_with(self, handler: PaymentEvents) -> None:
        """Hand verified events to ``handler`` (the order lifecycle) instead of the ledger."""
        self.events = handler

    async def create(self, order_id: str, amount: Money, idempotency_key: str,
                     payer: str | None = None) -> Payment:
        """Ask for ``amount`` for ``order_id``; the same key returns the first payment.

        Raises:
            ProviderUnavailable: retry with the same key.
            PaymentError: refused.
        """
        payment = await self.provider.create(order_id, amount, idempotency_key, payer)
        if payment.order_id and payment.order_id != order_id:
            raise PaymentError(f"idempotency key {idempotency_key!r} belongs to another order",
                               "idempotency_key_reused")
        await self.ledger.expect(payment)
        return payment

    async def refund(self, payment_id: str, amount: Money, idempotency_key: str) -> None:
        await self.provider.refund(payment_id, amount, idempotency_key)

    async def receive_webhook(self, provider_name: str, body: bytes,
                              headers: Mapping[str, str]) -> Outcome:
        """Take one webhook delivery; raises ``LiveError`` (4xx) and changes nothing when
        it is not genuine or not consistent with the payment it names."""
        provider = self.providers.get(provider_name)
        if provider is None:
            raise LiveError("not_found", f"no payment provider {provider_name!r} here", 404)
        try:
            event = provider.parse_webhook(body, headers)
        except BadSignature as exc:
            PAYMENT_WEBHOOKS.labels(provider_name, "", "bad_signature").inc()
            log.warning("payment webhook (%s) refused: %s", provider_name, exc.message)
            raise LiveError("bad_signature", exc.message, 400) from None
        except PaymentError as exc:
            PAYMENT_WEBHOOKS.labels(provider_name, "", exc.code).inc()
            raise LiveError(exc.code, exc.message, 400) from None
        if event is None:
            PAYMENT_WEBHOOKS.labels(provider_name, "", "ignored").inc()
            return "ignored"
        outcome = await self._receive(event)
        PAYMENT_WEBHOOKS.labels(provider_name, event.kind.value, outcome).inc()
        return outcome

    async def _receive(self, event: PaymentEvent) -> Outcome:
        if not event.order_id:
            order_id = await self.ledger.order_of(event.provider, event.payment_id)
            if order_id is None:
                log.warning("payment event %s: payment %s is not one of ours; ignored",
                            event.event_id, event.payment_id)
                return "ignored"
            event = PaymentEvent(event.event_id, event.provider, event.kind, event.payment_id,
                                 order_id, event.amount, event.created)
        seen = keys.webhook_seen(event.provider, event.event_id)
        if await self.redis.exists(seen):
            return "duplicate"
        expected = await self.ledger.expected(event.order_id, event.payment_id)
        if expected is None:
            log.warning("payment event %s: payment %s of order %s is not one of ours; ignored",
                        event.event_id, event.payment_id, event.order_id)
            return "ignored"
        if event.amount != expected:
            PAYMENT_WEBHOOKS.labels(event.provider, event.kind.value, "amount_mismatch").inc()
            log.warning("payment event %s says %s, the payment is for %s: refused",
                        event.event_id, event.amount, expected)
            raise LiveError("amount_mismatch", f"the event's amount {event.amount} is not "
                            f"the payment's {expected}", 400)
        # The handler is idempotent: a failure before the mark below is retried by the
        # provider and applied once; concurrent duplicates are applied once by its rules.
        try:
            await self.events.on_payment_event(event)
        except PaymentError as exc:
            PAYMENT_WEBHOOKS.labels(event.provider, event.kind.value, "failed").inc()
            raise LiveError(exc.code, f"the event could not be applied yet: {exc.message}",
                            503) from None
        await self.redis.set(seen, b"1", ex=SEEN_TTL)
        return "handled"
