"""Set-up shared by the access, fuzz and OpenAPI tests: a seeded store, a real server's
key ring, and one caller of each role (plus another member, an expired token and one
signed with a retired key)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import redis as redis_sync

from identity.tokens import ISSUER, KeyRing
from tests.commerce_helpers import seed_sync

# The server signs with k2; k1 was retired (no longer in its ring).
RETIRED = KeyRing.from_spec("k1:" + "retired-key-of-the-access-tests-0123456789")
RING = KeyRing.from_spec("k2:" + "current-key-of-the-access-tests-0123456789")
# Web processes of one deployment share their keys (each var dir would make its own).
SERVER_ENV = {"NEWRETAIL_JWT_KEYS": "k2:current-key-of-the-access-tests-0123456789",
              "NEWRETAIL_IDENTITY_PEPPER": "pepper-of-the-access-tests-0123456789",
              "NEWRETAIL_LIVE_COALESCE": "0.05", "NEWRETAIL_WS_MAX_FRAME": "65536"}
ROLES = ("viewer", "member", "host", "screen", "admin")


def token(sub: str, role: str, store: str | None = None, ttl: int = 900,
          **extra: Any) -> str:
    return RING.issue(sub, role, ttl, store=store, extra=extra or None)  # type: ignore[arg-type]


def expired(sub: str, role: str) -> str:
    """A token of ``RING`` that expired a minute ago."""
    claims = {"sub": sub, "role": role, "iat": int(time.time()) - 1000,
              "exp": int(time.time()) - 60, "iss": ISSUER}
    return jwt.encode(claims, RING.secret("k2"), algorithm="HS256", headers={"kid": "k2"})


def retired(sub: str, role: str) -> str:
    """A well-formed, unexpired token signed with the retired key ``k1``."""
    return RETIRED.issue(sub, role, 900)  # type: ignore[arg-type]


def auth(tok: str) -> dict[str, str]:
    return {"authorization": f"Bearer {tok}"}


def seed_world(store_url: str) -> None:
    """A flushed store with the commerce catalog (stores, products, stock)."""
    client = redis_sync.Redis.from_url(store_url)
    try:
        client.flushdb()
    finally:
        client.close()
    # In a thread: Playwright's sync API keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(seed_sync, store_url).result(timeout=60)


def sign_in(base: str, phone: str, device_id: str, anon_id: str | None = None
            ) -> dict[str, Any]:
    """Request a code, read it from the admin outbox and verify it."""
    r = httpx.post(f"{base}/identity/otp/request", json={"phone": phone}, timeout=10)
    assert r.status_code == 202, r.text
    r = httpx.get(f"{base}/identity/dev/outbox", headers=auth(token("admin-1", "admin")),
                  timeout=10)
    assert r.status_code == 200, r.text
    digits = phone.replace(" ", "")[-10:]  # the outbox has it in E.164, typed or not
    code = next(m["code"] for m in r.json()["messages"] if m["phone"].endswith(digits))
    body = {"phone": phone, "code": code, "device_id": device_id}
    if anon_id is not None:
        body["anon_id"] = anon_id
    r = httpx.post(f"{base}/identity/otp/verify", json=body, timeout=10)
    assert r.status_code == 200, r.text
    signed: dict[str, Any] = r.json()
    return signed


@dataclass
class Actors:
    """One caller of each role on a running server."""

    tokens: dict[str, str]
    subs: dict[str, str]
    member_id: str
    device_index: str
    other_token: str
    other_id: str
    victim_token: str
    session_id: str
    extra: dict[str, Any] = field(default_factory=dict)


def make_actors(base: str, store_url: str) -> Actors:
    """Members signed in over HTTP, staff tokens from the ring, a live session."""
    anon = httpx.post(f"{base}/identity/anonymous", timeout=10).json()
    a = sign_in(base, "+447700900101", "phone-a")
    b = sign_in(base, "+447700900102", "phone-b")
    victim = sign_in(base, "+447700900103", "phone-v")
    subs = {"viewer": anon["anon_id"], "member": a["member_id"], "host": "host-1",
            "screen": "screen-1", "admin": "admin-1"}
    tokens = {
        "viewer": anon["token"], "member": a["token"], "host": token("host-1", "host"),
        "screen": token("screen-1", "screen", store="store-a"),
        "admin": token("admin-1", "admin"),
    }
    r = httpx.post(f"{base}/live/sessions", json={"title": "Access", "products": ["mug", "kite"]},
                   headers=auth(tokens["host"]), timeout=10)
    assert r.status_code == 201, r.text
    return Actors(tokens, subs, a["member_id"], a["device_index"], b["token"],
                  b["member_id"], victim["token"], r.json()["session_id"])
