"""Key names of the payments package in the store, in one place. Keys one script touches
together share a hash tag (``{...}``), so each script stays in one cluster slot."""

from __future__ import annotations


def fake_payment(payment_id: str) -> str:
    """hash: the fake provider's payment (order_id amount currency status payer ...)."""
    return f"nr:payfake:{{{payment_id}}}"


def fake_refunds(payment_id: str) -> str:
    """list: the idempotency keys of the refunds of the fake's payment, oldest first."""
    return f"nr:payfake:{{{payment_id}}}:refunds"


# The fake provider's webhook outbox: due time per event id, and each event's record.
FAKE_OUTBOX_DUE = "nr:payfake:{outbox}:due"  # zset: event id -> when to (re)send it
FAKE_OUTBOX_BODY = "nr:payfake:{outbox}:body"  # hash: event id -> json {body, attempts, ...}


def ledger(order_id: str) -> str:
    """hash: an order's payments as the service knows them (``p:<id>:<field>``, ``closed``,
    ``paid``)."""
    return f"nr:payledger:{{{order_id}}}"


def ledger_log(order_id: str) -> str:
    """list: the order's payment transitions, oldest first (json each)."""
    return f"nr:payledger:{{{order_id}}}:log"


def payment_order(provider: str, payment_id: str) -> str:
    """string: the order a payment is for (events that do not carry it)."""
    return f"nr:payment:{provider}:{payment_id}"


def webhook_seen(provider: str, event_id: str) -> str:
    """string with a TTL: a webhook event already handled (deduplication by event id)."""
    return f"nr:payhook:{provider}:{event_id}"
