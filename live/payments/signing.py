"""The fake provider's webhook signature, built like Stripe's: the header
``t=<unix time>,v1=<hex HMAC-SHA256 of "<t>." + body>``. Pure functions, no I/O."""

from __future__ import annotations

import hashlib
import hmac

from live.payments.port import BadSignature

HEADER = "fake-signature"
TOLERANCE = 300  # seconds a signature's timestamp may be away from now


def signature(secret: bytes, body: bytes, timestamp: int) -> str:
    return hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The header value signing ``body`` at ``timestamp``."""
    return f"t={timestamp},v1={signature(secret, body, timestamp)}"


def verify(secret: bytes, body: bytes, header: str | None, now: float,
           tolerance: int = TOLERANCE) -> None:
    """Raise ``BadSignature`` unless ``header`` signs ``body`` with ``secret`` within
    ``tolerance`` seconds of ``now``. Any ``v1`` in the header may match (key rotation)."""
    if not header:
        raise BadSignature(f"the {HEADER} header is missing")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise BadSignature("the signature's timestamp is not a number") from None
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise BadSignature("the signature header needs t=<time> and v1=<signature>")
    if abs(now - timestamp) > tolerance:
        raise BadSignature(f"the signature's timestamp is more than {tolerance} s away")
    expected = signature(secret, body, timestamp)
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise BadSignature("the signature does not match the body")
