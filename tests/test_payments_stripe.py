"""The Stripe provider through the official library against a local stand-in of Stripe's
API (never the network): idempotency keys on the wire, replays, refunds, webhook
signatures checked by ``construct_event``; and the settings that select it."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import orjson
import pytest
import redis.asyncio as aredis

from live.money import Money
from live.payments.port import BadSignature, EventKind, PaymentError, PaymentStatus
from live.payments.service import Payments
from live.payments.stripe_provider import StripeProvider
from live.web.settings import Settings
from tests.payments_support import stripe_stand_in

WHSEC = "whsec_test_of_the_stand_in"


def _signed(payload: dict[str, Any], secret: str = WHSEC,
            at: int | None = None) -> tuple[bytes, dict[str, str]]:
    """A webhook body with the ``Stripe-Signature`` header Stripe would send."""
    body = orjson.dumps(payload)
    t = int(time.time()) if at is None else at
    sig = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"stripe-signature": f"t={t},v1={sig}"}


def _event(kind: str, obj: dict[str, Any], event_id: str = "evt_1") -> dict[str, Any]:
    return {"id": event_id, "object": "event", "type": kind, "created": 1_700_000_000,
            "api_version": "2024-06-20", "data": {"object": obj}}


async def test_create_sends_the_idempotency_key_and_replays() -> None:
    """Create sends ``Idempotency-Key``; a retry with it gets the same intent, one made."""
    async with stripe_stand_in() as (stand_in, base):
        provider = StripeProvider("sk_test_x", WHSEC, api_base=base)
        try:
            first = await provider.create("o-1", Money(295, "GBP"), "order:o-1:pay")
            again = await provider.create("o-1", Money(295, "GBP"), "order:o-1:pay")
            assert first.payment_id == again.payment_id and len(stand_in.intents) == 1
            assert first.amount == Money(295, "GBP") and first.order_id == "o-1"
            assert first.status is PaymentStatus.REQUIRES_ACTION and first.client_secret
            method, path, key, params = stand_in.requests[0]
            assert (method, path, key) == ("POST", "/v1/payment_intents", "order:o-1:pay")
            assert params["amount"] == "295" and params["currency"] == "gbp"
            with pytest.raises(PaymentError) as err:
                await provider.create("o-1", Money(300, "GBP"), "order:o-1:pay")
            assert err.value.code == "idempotency_key_reused"
        finally:
            await provider.close()


async def test_refund_capture_and_cancel() -> None:
    """Refunds carry their key (replayed, not repeated); capture and cancel reach the API."""
    async with stripe_stand_in() as (stand_in, base):
        provider = StripeProvider("sk_test_x", WHSEC, api_base=base)
        try:
            payment = await provider.create("o-2", Money(1000, "EUR"), "k-2")
            captured = await provider.capture(payment.payment_id, "cap-2")
            assert captured.status is PaymentStatus.SUCCEEDED
            one = await provider.refund(payment.payment_id, Money(400, "EUR"), "ref-2")
            two = await provider.refund(payment.payment_id, Money(400, "EUR"), "ref-2")
            assert one == two and one.amount == Money(400, "EUR")
            refunds = [r for r in stand_in.requests if r[1] == "/v1/refunds"]
            assert [r[2] for r in refunds] == ["ref-2", "ref-2"]
            other = await provider.create("o-3", Money(5, "EUR"), "k-3")
            assert (await provider.cancel(other.payment_id, "can-3")).status is \
                PaymentStatus.CANCELED
        finally:
            await provider.close()


def test_construct_event_accepts_signed_and_refuses_forged() -> None:
    """A correctly signed event is read; a wrong secret, a tampered body, a stale or
    missing signature raise ``BadSignature``; other event types are ignored."""
    provider = StripeProvider("sk_test_x", WHSEC, api_base="http://127.0.0.1:9")
    intent = {"id": "pi_1", "object": "payment_intent", "amount": 295, "currency": "gbp",
              "status": "succeeded", "metadata": {"order_id": "o-1"}}
    body, headers = _signed(_event("payment_intent.succeeded", intent))
    event = provider.parse_webhook(body, headers)
    assert event is not None and event.kind is EventKind.SUCCEEDED
    assert (event.payment_id, event.order_id, event.amount) == ("pi_1", "o-1",
                                                                Money(295, "GBP"))
    refund = {"id": "ch_1", "object": "charge", "payment_intent": "pi_1", "amount": 295,
              "currency": "gbp", "metadata": {}}
    body_r, headers_r = _signed(_event("charge.refunded", refund, "evt_2"))
    refunded = provider.parse_webhook(body_r, headers_r)
    assert refunded is not None and refunded.kind is EventKind.REFUNDED
    assert refunded.payment_id == "pi_1" and refunded.order_id == ""
    forged = [
        _signed(_event("payment_intent.succeeded", intent), secret="whsec_other"),
        (body.replace(b"295", b"1"), headers),
        _signed(_event("payment_intent.succeeded", intent), at=int(time.time()) - 3600),
        (body, {}),
    ]
    for sent, sent_headers in forged:
        with pytest.raises(BadSignature):
            provider.parse_webhook(sent, sent_headers)
    other, other_headers = _signed(_event("customer.created", {"id": "cus_1"}))
    assert provider.parse_webhook(other, other_headers) is None


async def test_stripe_webhook_through_the_service(redis: aredis.Redis) -> None:
    """A Stripe event for a payment made through ``Payments`` is handled once, its
    refund found by payment id; a wrong amount is refused."""
    async with stripe_stand_in() as (_, base):
        provider = StripeProvider("sk_test_x", WHSEC, api_base=base)
        try:
            pay = Payments(redis, provider)
            payment = await pay.create("o-4", Money(295, "GBP"), "k-4")
            intent = {"id": payment.payment_id, "object": "payment_intent", "amount": 295,
                      "currency": "gbp", "status": "succeeded",
                      "metadata": {"order_id": "o-4"}}
            body, headers = _signed(_event("payment_intent.succeeded", intent, "evt_a"))
            assert await pay.receive_webhook("stripe", body, headers) == "handled"
            assert await pay.receive_webhook("stripe", body, headers) == "duplicate"
            charge = {"id": "ch_4", "object": "charge", "payment_intent": payment.payment_id,
                      "amount": 295, "currency": "gbp", "metadata": {}}
            body, headers = _signed(_event("charge.refunded", charge, "evt_b"))
            assert await pay.receive_webhook("stripe", body, headers) == "handled"
            assert await pay.ledger.status("o-4", payment.payment_id) is PaymentStatus.REFUNDED
            wrong = {**intent, "amount": 1}
            body, headers = _signed(_event("payment_intent.succeeded", wrong, "evt_c"))
            with pytest.raises(Exception) as err:
                await pay.receive_webhook("stripe", body, headers)
            assert getattr(err.value, "code", None) == "amount_mismatch"
        finally:
            await provider.close()


def test_settings_select_and_check_the_provider() -> None:
    """``fake`` by default outside prod; prod must name one; ``stripe`` needs its keys;
    rates are probabilities."""
    assert Settings.from_env({}).payments == "fake"
    with pytest.raises(ValueError, match="NEWRETAIL_PAYMENTS"):
        Settings.from_env({"NEWRETAIL_MODE": "prod"})
    with pytest.raises(ValueError, match="NEWRETAIL_STRIPE_SECRET_KEY"):
        Settings.from_env({"NEWRETAIL_PAYMENTS": "stripe"})
    with pytest.raises(ValueError, match="NEWRETAIL_PAYMENTS"):
        Settings.from_env({"NEWRETAIL_PAYMENTS": "paypal"})
    with pytest.raises(ValueError, match="NEWRETAIL_FAKE_PAY_DUPLICATE_RATE"):
        Settings.from_env({"NEWRETAIL_FAKE_PAY_DUPLICATE_RATE": "1.5"})
    s = Settings.from_env({"NEWRETAIL_PAYMENTS": "stripe", "NEWRETAIL_STRIPE_SECRET_KEY": "sk",
                           "NEWRETAIL_STRIPE_WEBHOOK_SECRET": "whsec",
                           "NEWRETAIL_STRIPE_API_BASE": "http://127.0.0.1:12111/"})
    assert (s.payments, s.stripe_api_base) == ("stripe", "http://127.0.0.1:12111")
