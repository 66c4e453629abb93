"""Helpers for the identity tests: a settable clock and the sign-in steps over HTTP."""

from __future__ import annotations

import time
from typing import Any

from starlette.testclient import TestClient

from identity.service import IdentityService
from identity.types import Role


class FakeClock:
    """A clock the test moves by hand (starts at the real time)."""

    def __init__(self, start: float | None = None) -> None:
        self.t = time.time() if start is None else start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def service(client: TestClient) -> IdentityService:
    svc: IdentityService = client.app.state.services.identity  # type: ignore[attr-defined]
    return svc


def use_clock(client: TestClient, clock: FakeClock) -> FakeClock:
    service(client).clock = clock
    return clock


def token(client: TestClient, role: Role, sub: str = "staff1", store: str | None = None,
          ttl: int = 300, **extra: Any) -> str:
    ring = client.app.state.keyring  # type: ignore[attr-defined]
    issued: str = ring.issue(sub, role, ttl, store=store, extra=extra or None)
    return issued


def auth(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


def admin(client: TestClient) -> dict[str, str]:
    return auth(token(client, "admin", "admin1"))


def last_code(client: TestClient, phone: str) -> str:
    """The latest code sent to ``phone``, read from the admin outbox."""
    r = client.get("/identity/dev/outbox", headers=admin(client))
    assert r.status_code == 200, r.text
    e164 = service(client).phone(phone)
    for message in r.json()["messages"]:
        if message["phone"] == e164:
            code: str = message["code"]
            return code
    raise AssertionError(f"no code sent to {phone}")


def sign_in(client: TestClient, phone: str, device_id: str = "phone-1",
            anon_id: str | None = None) -> dict[str, Any]:
    """Request a code, read it from the outbox and verify it; returns the answer."""
    r = client.post("/identity/otp/request", json={"phone": phone})
    assert r.status_code == 202, r.text
    body: dict[str, Any] = {"phone": phone, "code": last_code(client, phone),
                            "device_id": device_id}
    if anon_id is not None:
        body["anon_id"] = anon_id
    r = client.post("/identity/otp/verify", json=body)
    assert r.status_code == 200, r.text
    signed: dict[str, Any] = r.json()
    return signed
