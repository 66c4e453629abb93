"""The payment port: what the order lifecycle asks of a payment provider, and what a
provider tells it back (events, through a verified webhook). Providers implement
``PaymentProvider``; the order lifecycle implements ``PaymentEvents``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from live.money import Money


class PaymentStatus(StrEnum):
    """Where a payment stands at its provider."""

    REQUIRES_ACTION = "requires_action"  # waiting for the payer (page, 3-D Secure)
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    REFUNDED = "refunded"


class EventKind(StrEnum):
    """What a webhook event says happened to a payment."""

    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    REFUNDED = "refunded"


@dataclass(frozen=True)
class Payment:
    """A payment as its provider has it.

    Attributes:
        payment_id: the provider's id (``pf_...`` for the fake, ``pi_...`` for Stripe).
        order_id: the order it pays for (kept by the provider as metadata).
        amount: what is asked of the payer.
        status: where it stands.
        url: where to send the payer (the fake's page), or ``None`` (Stripe: the page uses
            ``client_secret`` with Stripe's own scripts).
        provider: ``fake`` or ``stripe``.
        client_secret: Stripe's secret for the payer's page, ``None`` for the fake.
        refunded: how much has been refunded so far.
    """

    payment_id: str
    order_id: str
    amount: Money
    status: PaymentStatus
    url: str | None
    provider: str
    client_secret: str | None = None
    refunded: Money | None = None

    def to_wire(self) -> dict[str, Any]:
        """The order's ``payment`` field: ``{"provider", "status", "url"?}`` and the id."""
        out: dict[str, Any] = {"provider": self.provider, "status": self.status.value,
                               "payment_id": self.payment_id}
        if self.url is not None:
            out["url"] = self.url
        return out


@dataclass(frozen=True)
class Refund:
    """A refund of (part of) a payment."""

    refund_id: str
    payment_id: str
    amount: Money
    status: str  # "succeeded" or "pending"


@dataclass(frozen=True)
class PaymentEvent:
    """One verified webhook event.

    Attributes:
        event_id: unique per event at its provider: duplicates carry the same id.
        provider: who sent it.
        kind: what happened.
        payment_id, order_id: the payment and the order it is for.
        amount: the payment's amount (for ``refunded``: the amount refunded so far).
        created: the provider's time of the event (seconds since the epoch); events may
            arrive in any order, so this is informative, never the order of truth.
    """

    event_id: str
    provider: str
    kind: EventKind
    payment_id: str
    order_id: str
    amount: Money
    created: float


class PaymentError(Exception):
    """A provider refused a request (a wrong state, a reused key with other parameters,
    a refund larger than what is left). ``code`` is the wire error code."""

    def __init__(self, message: str, code: str = "payment_error") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ProviderUnavailable(PaymentError):
    """The provider did not answer in time or could not be reached. The request may or may
    not have taken effect: retry it with the same idempotency key."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "payment_provider_unavailable")


class BadSignature(PaymentError):
    """A webhook whose signature is missing, malformed, wrong or too old."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "bad_signature")


class PaymentProvider(Protocol):
    """One payment provider. Every call that moves money takes an idempotency key: the
    same key returns the first answer, whatever happened in between."""

    @property
    def name(self) -> str:
        """``fake`` or ``stripe``: the ``{provider}`` of the webhook's path."""
        ...

    async def create(self, order_id: str, amount: Money, idempotency_key: str,
                     payer: str | None = None) -> Payment:
        """Ask the payer for ``amount`` for ``order_id``; the outcome comes as an event.

        Raises:
            ProviderUnavailable: no answer in time; retry with the same key.
            PaymentError: refused (e.g. the key was used with other parameters).
        """
        ...

    async def get(self, payment_id: str) -> Payment:
        """The payment as the provider has it now (to re-read state when order matters)."""
        ...

    async def capture(self, payment_id: str, idempotency_key: str) -> Payment:
        """Take the money of an authorised payment (a no-op for one already captured)."""
        ...

    async def cancel(self, payment_id: str, idempotency_key: str) -> Payment:
        """Stop a payment that has not succeeded; the payer can no longer pay it."""
        ...

    async def refund(self, payment_id: str, amount: Money, idempotency_key: str) -> Refund:
        """Give back ``amount`` (at most what is left) of a succeeded payment."""
        ...

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> PaymentEvent | None:
        """Verify a webhook's signature and read its event.

        Returns:
            the event, or ``None`` for a correctly signed event of a kind payments do not
            follow (answered 200 and ignored).

        Raises:
            BadSignature: unsigned, forged, tampered with or too old.
        """
        ...


class PaymentEvents(Protocol):
    """What the order lifecycle implements to hear of payments. Called at least once per
    event, in any order, possibly concurrently for duplicates: it must be idempotent."""

    async def on_payment_event(self, event: PaymentEvent) -> None: ...
