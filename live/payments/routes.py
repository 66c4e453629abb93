"""HTTP routes of payments: the providers' webhook, and the fake provider's payer page
(dev and demo only: 404 in prod, or when the provider is not the fake)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from live.errors import bad_request, not_found
from live.http import json_response, read_json
from live.payments.fake import FakeProvider
from live.payments.port import PaymentError
from live.payments.service import Payments

# The payer's page runs only its own script (no inline script) and cannot be framed.
PAGE_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
MAX_WEBHOOK = 256 * 1024


def payments(request: Request) -> Payments:
    svc: Payments = request.app.state.services.payments
    return svc


async def receive_webhook(request: Request) -> Response:
    body = await request.body()
    if len(body) > MAX_WEBHOOK:
        raise bad_request(f"a webhook body is at most {MAX_WEBHOOK} bytes")
    outcome = await payments(request).receive_webhook(
        request.path_params["provider"], body, request.headers)
    return json_response({"received": True, "outcome": outcome})


def _fake(request: Request) -> FakeProvider:
    fake = payments(request).fake_page
    if fake is None:
        raise not_found("page")
    return fake


async def _payment(fake: FakeProvider, payment_id: str) -> Any:
    try:
        return await fake.get(payment_id)
    except PaymentError:
        raise not_found("payment") from None


def _page(static_dir: Path, values: dict[str, str]) -> str:
    page = (static_dir / "pay.html").read_text()
    for name, value in values.items():
        page = page.replace("{{" + name + "}}", html.escape(value, quote=True))
    return page


async def fake_page(request: Request) -> Response:
    fake = _fake(request)
    payment = await _payment(fake, request.path_params["payment_id"])
    page = _page(request.app.state.settings.static_dir, {
        "payment_id": payment.payment_id, "amount": str(payment.amount.amount),
        "currency": payment.amount.currency, "status": payment.status.value,
        "amount_text": payment.amount.format(), "order_id": payment.order_id})
    return HTMLResponse(page, headers=PAGE_HEADERS)


async def fake_decision(request: Request) -> Response:
    fake = _fake(request)
    payment_id = request.path_params["payment_id"]
    body = await read_json(request)
    decision = body.get("decision") if isinstance(body, dict) else None
    if decision not in ("approve", "decline"):
        raise bad_request('the body must be {"decision": "approve" | "decline"}')
    await _payment(fake, payment_id)
    payment = await fake.decide(payment_id, decision)
    return json_response({"payment": payment.to_wire()})


ROUTES = [
    Route("/payments/webhook/{provider}", receive_webhook, methods=["POST"]),
    Route("/pay/fake/{payment_id}", fake_page, methods=["GET"]),
    Route("/pay/fake/{payment_id}", fake_decision, methods=["POST"]),
]
