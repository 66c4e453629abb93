"""The fake provider and the webhook, on the real app served in the test's loop with the
real datastore: idempotent payments, signed webhooks delivered at least once (duplicated,
reordered, late, after the service was down), forged ones refused with nothing changed."""

from __future__ import annotations

import dataclasses
import time

import httpx
import orjson
import pytest
import redis.asyncio as aredis
import uvicorn

from live.money import Money
from live.payments import signing
from live.payments.delivery import FakeDelivery
from live.payments.fake import FakeConfig, FakeProvider, payment_id_for
from live.payments.ledger import PaymentLedger
from live.payments.port import EventKind, Payment, PaymentError, PaymentStatus, ProviderUnavailable
from live.payments.service import Payments
from live.web.app import create_app
from live.web.settings import Settings
from tests.payments_support import FAKE_SECRET, Running, running_service
from tests.utils import free_port, uvicorn_in_loop, wait_until

GBP = Money(295, "GBP")


def _fake(run: Running) -> FakeProvider:
    fake = run.services.payments.fake_page
    if fake is None:
        raise AssertionError("the fake provider's page is not served")
    return fake


async def _status(payments: Payments, payment: Payment) -> PaymentStatus | None:
    return await payments.ledger.status(payment.order_id, payment.payment_id)


async def _post(run: Running, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=run.url, timeout=10) as http:
        return await http.post("/payments/webhook/fake", content=body, headers=headers)


async def test_create_is_idempotent(settings: Settings) -> None:
    """The same key returns the first payment; the key with another amount is refused."""
    async with running_service(settings, deliver=False) as run:
        pay = run.services.payments
        first = await pay.create("o-1", GBP, "key-1", payer="ann")
        again = await pay.create("o-1", GBP, "key-1", payer="ann")
        assert first == again and first.status is PaymentStatus.REQUIRES_ACTION
        assert first.url == f"/pay/fake/{first.payment_id}"
        with pytest.raises(PaymentError) as err:
            await pay.create("o-1", Money(296, "GBP"), "key-1", payer="ann")
        assert err.value.code == "idempotency_key_reused"


async def test_timeouts_raise_provider_unavailable(redis: aredis.Redis) -> None:
    """A ``_timeout`` payer times out with nothing made; a random timeout after the
    payment was made leaves it for the retry with the same key to find."""
    fake = FakeProvider(redis, FakeConfig(secret=b"s"))
    with pytest.raises(ProviderUnavailable):
        await fake.create("o-2", GBP, "key-2", payer="bob_timeout")
    with pytest.raises(PaymentError):
        await fake.get(payment_id_for("key-2"))
    flaky = FakeProvider(redis, FakeConfig(secret=b"s", timeout_rate=1.0, seed=1))
    with pytest.raises(ProviderUnavailable):
        await flaky.create("o-3", GBP, "key-3")
    assert (await fake.create("o-3", GBP, "key-3")).payment_id == payment_id_for("key-3")


async def test_approve_delivers_signed_webhook_at_least_once(settings: Settings) -> None:
    """Approval reaches the service as a signed webhook, sent twice (duplicate rate 1):
    the ledger shows one success and the duplicate is answered as one."""
    async with running_service(settings, fake_pay_duplicate_rate=1.0, fake_pay_seed=7) as run:
        pay, fake = run.services.payments, _fake(run)
        delivery = run.services.payment_parts.delivery
        assert delivery is not None
        payment = await pay.create("o-4", GBP, "key-4", payer="ann")
        await fake.decide(payment.payment_id, "approve")
        await wait_until(lambda: delivery.sent >= 2, "the event delivered twice")

        async def succeeded() -> bool:
            return await _status(pay, payment) is PaymentStatus.SUCCEEDED

        await wait_until(succeeded, "the success reaching the ledger")
        history = await pay.ledger.history("o-4")
        assert [(h["from"], h["to"]) for h in history] == [("requires_action", "succeeded")]
        assert await delivery.pending() == 0


async def test_declined_test_payer(settings: Settings) -> None:
    """A payer ending in ``_decline`` who approves is declined: the payment fails."""
    async with running_service(settings) as run:
        pay = run.services.payments
        payment = await pay.create("o-5", GBP, "key-5", payer="carol_decline")
        decided = await _fake(run).decide(payment.payment_id, "approve")
        assert decided.status is PaymentStatus.FAILED

        async def failed() -> bool:
            return await _status(pay, payment) is PaymentStatus.FAILED

        await wait_until(failed, "the failure reaching the ledger")


async def test_reordered_webhooks(settings: Settings) -> None:
    """Events in any order end in the right state: a failure after the success changes
    nothing; a success after the refund leaves the payment refunded."""
    async with running_service(settings, deliver=False) as run:
        pay, fake = run.services.payments, _fake(run)
        payment = await pay.create("o-6", GBP, "key-6")
        body = {k: fake.event_body(payment, n, k) for n, k in enumerate(EventKind, 1)}
        for kind in (EventKind.SUCCEEDED, EventKind.FAILED):
            r = await _post(run, body[kind], fake.signed(body[kind]))
            assert r.status_code == 200 and r.json()["outcome"] == "handled", r.text
        assert await _status(pay, payment) is PaymentStatus.SUCCEEDED
        other = await pay.create("o-7", GBP, "key-7")
        late = {k: fake.event_body(other, n, k) for n, k in enumerate(EventKind, 1)}
        for kind in (EventKind.REFUNDED, EventKind.SUCCEEDED, EventKind.FAILED):
            r = await _post(run, late[kind], fake.signed(late[kind]))
            assert r.status_code == 200, r.text
        assert await _status(pay, other) is PaymentStatus.REFUNDED
        assert [h["to"] for h in await pay.ledger.history("o-7")] == ["refunded"]


async def test_duplicated_webhook(settings: Settings) -> None:
    """The same event delivered three times is applied once; the others are duplicates."""
    async with running_service(settings, deliver=False) as run:
        pay, fake = run.services.payments, _fake(run)
        payment = await pay.create("o-8", GBP, "key-8")
        body = fake.event_body(payment, 1, EventKind.SUCCEEDED)
        outcomes = [(await _post(run, body, fake.signed(body))).json()["outcome"]
                    for _ in range(3)]
        assert outcomes == ["handled", "duplicate", "duplicate"]
        assert len(await pay.ledger.history("o-8")) == 1


async def test_late_success_is_refunded_once(settings: Settings) -> None:
    """A success after the order closed (an expired hold) is refunded exactly once, even
    delivered twice, and the order is not resurrected."""
    async with running_service(settings, fake_pay_duplicate_rate=1.0, fake_pay_seed=3) as run:
        pay, fake = run.services.payments, _fake(run)
        payment = await pay.create("o-9", GBP, "key-9")
        assert await pay.ledger.mark_not_payable("o-9") is True
        await fake.decide(payment.payment_id, "approve")

        async def refunded() -> bool:
            return await _status(pay, payment) is PaymentStatus.REFUNDED

        await wait_until(refunded, "the refund's event reaching the ledger")
        delivery = run.services.payment_parts.delivery
        assert delivery is not None
        await wait_until(lambda: delivery.sent >= 4, "every event delivered twice")
        assert await fake.refunds(payment.payment_id) == [f"late-success:{payment.payment_id}"]
        assert [(h["to"], h["action"]) for h in await pay.ledger.history("o-9")] == [
            ("succeeded", "refund"), ("refunded", "none")]
        assert await pay.ledger.mark_not_payable("o-9") is True  # still closed, never paid


async def test_paid_order_cannot_be_closed(settings: Settings) -> None:
    """Once a payment succeeded, ``mark_not_payable`` says the order is paid."""
    async with running_service(settings, deliver=False) as run:
        pay, fake = run.services.payments, _fake(run)
        payment = await pay.create("o-10", GBP, "key-10")
        body = fake.event_body(payment, 1, EventKind.SUCCEEDED)
        assert (await _post(run, body, fake.signed(body))).status_code == 200
        assert await pay.ledger.mark_not_payable("o-10") is False


async def test_forged_webhooks_change_nothing(settings: Settings) -> None:
    """Unsigned, wrongly signed, tampered, stale and wrong-amount webhooks get 400 and
    change nothing; the genuine event still applies afterwards."""
    async with running_service(settings, deliver=False) as run:
        pay, fake = run.services.payments, _fake(run)
        payment = await pay.create("o-11", GBP, "key-11")
        body = fake.event_body(payment, 1, EventKind.SUCCEEDED)
        now = int(time.time())
        tampered = body.replace(b'"amount":295', b'"amount":1')
        wrong = fake.event_body(
            Payment(payment.payment_id, "o-11", Money(1, "GBP"), payment.status, None, "fake"),
            1, EventKind.SUCCEEDED)
        forged = [
            ({}, body, "bad_signature"),
            ({signing.HEADER: signing.sign(b"not-the-secret", body, now)}, body,
             "bad_signature"),
            (fake.signed(body), tampered, "bad_signature"),
            ({signing.HEADER: signing.sign(FAKE_SECRET.encode(), body, now - 3600)}, body,
             "bad_signature"),
            ({signing.HEADER: "t=abc,v1=00"}, body, "bad_signature"),
            (fake.signed(wrong), wrong, "amount_mismatch"),
        ]
        for headers, sent, code in forged:
            r = await _post(run, sent, headers)
            assert r.status_code == 400 and r.json()["error"]["code"] == code, r.text
            assert await _status(pay, payment) is PaymentStatus.REQUIRES_ACTION
            assert await pay.ledger.history("o-11") == []
        r = await _post(run, body, fake.signed(body))
        assert r.json()["outcome"] == "handled", r.text
        assert await _status(pay, payment) is PaymentStatus.SUCCEEDED


async def test_delivery_survives_the_service_being_down(settings: Settings,
                                                         redis: aredis.Redis) -> None:
    """An event sent while the service is down stays in the outbox and is delivered,
    signed anew, once the service is back."""
    port = free_port()
    fake = FakeProvider(redis, FakeConfig(secret=FAKE_SECRET.encode()))
    delivery = FakeDelivery(redis, f"http://127.0.0.1:{port}/payments/webhook/fake",
                            fake.signed, retry_base=0.01, retry_cap=0.05, seed=1)
    fake.delivery = delivery
    payment = await fake.create("o-12", GBP, "key-12")
    await PaymentLedger(redis, {}).expect(payment)
    await fake.decide(payment.payment_id, "approve")
    async with httpx.AsyncClient(timeout=5) as http:
        assert await delivery.deliver_due(http) == 1  # refused: nothing listens
        assert await delivery.pending() == 1 and delivery.sent == 0
        record = orjson.loads(await redis.hget("nr:payfake:{outbox}:body",  # type: ignore[misc]
                                               f"evf_{payment.payment_id[3:]}_1"))
        assert record["attempts"] == 1
        app = create_app(dataclasses.replace(settings, fake_pay_secret=FAKE_SECRET))
        config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on",
                                log_level="warning")
        async with uvicorn_in_loop(config):
            async def delivered() -> bool:
                await delivery.deliver_due(http)
                return delivery.sent == 1

            await wait_until(delivered, "the delivery after the service came back")
            ledger = app.state.services.payments.ledger
            assert await ledger.status("o-12", payment.payment_id) is PaymentStatus.SUCCEEDED
