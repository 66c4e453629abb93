"""The fake provider's payer page and decision route: served in dev and demo with the
amount and a script of our own (no inline script), 404 in prod; bad decisions refused."""

from __future__ import annotations

import dataclasses

import httpx

from live.money import Money
from live.payments.port import PaymentStatus
from live.web.settings import Settings
from tests.payments_support import running_service

PROD = {"mode": "prod", "jwt_keys": "k1:payments-tests-key-0123456789abcdef",
        "identity_pepper": "payments-tests-pepper-0123456789"}


async def test_fake_page_and_decision_in_dev(settings: Settings) -> None:
    """The page shows the payment under a strict CSP; the decision moves it once."""
    async with running_service(settings, deliver=False) as run:
        payment = await run.services.payments.create("o-1", Money(295, "GBP"), "k-1")
        async with httpx.AsyncClient(base_url=run.url, timeout=10) as http:
            r = await http.get(payment.url or "")
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            assert "script-src 'self'" in r.headers["content-security-policy"]
            assert 'data-amount="295"' in r.text and 'data-currency="GBP"' in r.text
            assert "<script>" not in r.text and "/static/js/pay.js" in r.text
            r = await http.post(payment.url or "", json={"decision": "maybe"})
            assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
            r = await http.post(payment.url or "", json={"decision": 2.5})
            assert r.status_code == 400
            r = await http.post(payment.url or "", json={"decision": "approve"})
            assert r.status_code == 200 and r.json()["payment"]["status"] == "succeeded"
            r = await http.post(payment.url or "", json={"decision": "decline"})
            assert r.json()["payment"]["status"] == "succeeded"  # decided once
            assert (await http.get("/pay/fake/pf_nothing")).status_code == 404
            assert (await http.get("/static/js/pay.js")).status_code == 200
        fake = run.services.payments.fake_page
        assert fake is not None
        assert (await fake.get(payment.payment_id)).status is PaymentStatus.SUCCEEDED


async def test_fake_page_is_404_in_prod(settings: Settings) -> None:
    """In prod the fake provider's page and decision route answer 404."""
    prod = dataclasses.replace(settings, **PROD)  # type: ignore[arg-type]
    async with running_service(prod, deliver=False) as run:
        payment = await run.services.payments.create("o-2", Money(295, "GBP"), "k-2")
        async with httpx.AsyncClient(base_url=run.url, timeout=10) as http:
            assert (await http.get(f"/pay/fake/{payment.payment_id}")).status_code == 404
            r = await http.post(f"/pay/fake/{payment.payment_id}", json={"decision": "approve"})
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_webhook_for_an_unknown_provider(settings: Settings) -> None:
    """A webhook for a provider that is not configured is 404; a body too large is 400."""
    async with running_service(settings, deliver=False) as run:
        async with httpx.AsyncClient(base_url=run.url, timeout=10) as http:
            r = await http.post("/payments/webhook/stripe", content=b"{}")
            assert r.status_code == 404
            r = await http.post("/payments/webhook/fake", content=b"x" * 300_000)
            assert r.status_code == 400
