"""Stripe behind the payment port, with the official ``stripe`` library: PaymentIntents,
an idempotency key on every call that moves money, ``Webhook.construct_event`` for the
signature. The library's async methods run on its HTTPX client (no thread, no blocking)."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

import stripe

from live.money import Money
from live.payments.port import (
    BadSignature,
    EventKind,
    Payment,
    PaymentError,
    PaymentEvent,
    PaymentStatus,
    ProviderUnavailable,
    Refund,
)

T = TypeVar("T")

# PaymentIntent statuses -> ours (requires_capture: authorised, the money not yet taken).
_STATUS = {
    "requires_payment_method": PaymentStatus.REQUIRES_ACTION,
    "requires_confirmation": PaymentStatus.REQUIRES_ACTION,
    "requires_action": PaymentStatus.REQUIRES_ACTION,
    "processing": PaymentStatus.PROCESSING,
    "requires_capture": PaymentStatus.PROCESSING,
    "succeeded": PaymentStatus.SUCCEEDED,
    "canceled": PaymentStatus.CANCELED,
}
# Webhook event types the payments follow; others are answered 200 and ignored.
_EVENTS = {
    "payment_intent.processing": EventKind.PROCESSING,
    "payment_intent.succeeded": EventKind.SUCCEEDED,
    "payment_intent.payment_failed": EventKind.FAILED,
    "payment_intent.canceled": EventKind.CANCELED,
    "charge.refunded": EventKind.REFUNDED,
}
SIGNATURE_HEADER = "stripe-signature"


class StripeProvider:
    """The ``PaymentProvider`` for Stripe.

    Args:
        secret_key: the API key (``sk_live_...`` / ``sk_test_...``).
        webhook_secret: the endpoint's signing secret (``whsec_...``).
        api_base: Stripe's API address; a local stand-in in tests.
        max_network_retries: the library's own retries (each with the same idempotency key).
    """

    name = "stripe"

    def __init__(self, secret_key: str, webhook_secret: str,
                 api_base: str = stripe.DEFAULT_API_BASE, max_network_retries: int = 2,
                 timeout: float = 20.0) -> None:
        if not secret_key or not webhook_secret:
            raise ValueError("the stripe provider needs a secret key and a webhook secret")
        self.webhook_secret = webhook_secret
        self._http = stripe.HTTPXClient(timeout=timeout)
        self.client = stripe.StripeClient(
            secret_key, base_addresses={"api": api_base}, http_client=self._http,
            max_network_retries=max_network_retries)

    async def close(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    async def _call(self, what: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except stripe.APIConnectionError as exc:
            raise ProviderUnavailable(f"stripe did not answer {what}: {exc.user_message or exc}"
                                      ) from None
        except stripe.IdempotencyError as exc:
            raise PaymentError(f"stripe refused {what}: {exc.user_message or exc}",
                               "idempotency_key_reused") from None
        except stripe.StripeError as exc:
            code = exc.code or "payment_error"
            raise PaymentError(f"stripe refused {what}: {exc.user_message or exc}",
                               str(code)) from None

    def _payment(self, resource: Any) -> Payment:
        intent = _plain(resource)
        currency = str(intent["currency"]).upper()
        metadata = intent.get("metadata") or {}
        return Payment(
            payment_id=str(intent["id"]), order_id=str(metadata.get("order_id", "")),
            amount=Money(int(intent["amount"]), currency),
            status=_STATUS.get(str(intent["status"]), PaymentStatus.REQUIRES_ACTION),
            url=None, provider=self.name, client_secret=intent.get("client_secret"))

    async def create(self, order_id: str, amount: Money, idempotency_key: str,
                     payer: str | None = None) -> Payment:
        params: dict[str, Any] = {
            "amount": amount.amount, "currency": amount.currency.lower(),
            "metadata": {"order_id": order_id},
            "automatic_payment_methods": {"enabled": True},
        }
        if payer:
            params["customer"] = payer
        intent = await self._call("the payment", self.client.v1.payment_intents.create_async(
            params,  # type: ignore[arg-type]
            {"idempotency_key": idempotency_key}))
        return self._payment(intent)

    async def get(self, payment_id: str) -> Payment:
        intent = await self._call("the payment",
                                  self.client.v1.payment_intents.retrieve_async(payment_id))
        return self._payment(intent)

    async def capture(self, payment_id: str, idempotency_key: str) -> Payment:
        intent = await self._call("the capture", self.client.v1.payment_intents.capture_async(
            payment_id, None, {"idempotency_key": idempotency_key}))
        return self._payment(intent)

    async def cancel(self, payment_id: str, idempotency_key: str) -> Payment:
        intent = await self._call("the cancellation",
                                  self.client.v1.payment_intents.cancel_async(
                                      payment_id, None, {"idempotency_key": idempotency_key}))
        return self._payment(intent)

    async def refund(self, payment_id: str, amount: Money, idempotency_key: str) -> Refund:
        made = await self._call("the refund", self.client.v1.refunds.create_async(
            {"payment_intent": payment_id, "amount": amount.amount},
            {"idempotency_key": idempotency_key}))
        refund = _plain(made)
        return Refund(str(refund["id"]), payment_id,
                      Money(int(refund["amount"]), str(refund["currency"]).upper()),
                      str(refund["status"]))

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> PaymentEvent | None:
        try:
            event = self.client.construct_event(
                body, headers.get(SIGNATURE_HEADER), self.webhook_secret)
        except stripe.SignatureVerificationError as exc:
            raise BadSignature(f"stripe signature: {exc.user_message or exc}") from None
        except ValueError as exc:  # signed, but not JSON
            raise PaymentError(f"the webhook's event cannot be read: {exc}",
                               "bad_event") from None
        kind = _EVENTS.get(event.type)
        if kind is None:
            return None
        obj = _plain(event.data.object)
        try:
            payment_id = str(obj["payment_intent"] if kind is EventKind.REFUNDED else obj["id"])
            metadata = obj.get("metadata") or {}
            return PaymentEvent(
                event_id=event.id, provider=self.name, kind=kind, payment_id=payment_id,
                order_id=str(metadata.get("order_id", "")),
                amount=Money(int(obj["amount"]), str(obj["currency"]).upper()),
                created=float(event.created))
        except (KeyError, TypeError, ValueError) as exc:
            raise PaymentError(f"the webhook's event cannot be read: {exc}",
                               "bad_event") from None


def _plain(resource: Any) -> dict[str, Any]:
    """A library object as a plain dict (its objects refuse ``.get``)."""
    plain: dict[str, Any] = resource.to_dict() if hasattr(resource, "to_dict") else resource
    return plain
