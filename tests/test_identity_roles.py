"""Role checks on every identity route: no token, an expired token, a token under a
retired key, each role, and another member's token."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from starlette.testclient import TestClient

from identity.routes import ROUTES
from identity.tokens import KeyRing
from identity.types import ROLES
from tests.identity_support import auth, service, sign_in, token


@dataclass
class Row:
    method: str
    path: str
    allowed: dict[str, set[int]]  # role -> statuses that show the call got through
    body: Any = None
    public: bool = False
    other_member: set[int] = field(default_factory=set)


def expired_token(client: TestClient) -> str:
    ring: KeyRing = client.app.state.keyring  # type: ignore[attr-defined]
    kid = ring.active_kid
    claims = {"sub": "admin1", "role": "admin", "exp": int(time.time()) - 10, "iss": "newretail"}
    return jwt.encode(claims, ring.secret(kid), algorithm="HS256", headers={"kid": kid})


def retired_token() -> str:
    return KeyRing({"k_retired": b"r" * 32}).issue("admin1", "admin", 300)


def test_role_table_covers_every_identity_route(client: TestClient) -> None:
    """Each identity route answers 401 without a valid token and 403 to roles it does not
    serve; the roles it serves get through; members cannot act on other members."""
    a = sign_in(client, "+447700900801")
    b = sign_in(client, "+447700900802")
    svc = service(client)
    entry = client.portal.call(svc.members.link_log, a["member_id"])[0].id  # type: ignore[union-attr]
    tokens = {
        "viewer": token(client, "viewer", "a_viewer"),
        "member": a["token"],
        "host": token(client, "host", "host1"),
        "screen": token(client, "screen", "screen-1", store="store-soho"),
        "admin": token(client, "admin", "admin1"),
    }
    mid = a["member_id"]
    every = {r: {201} for r in ROLES}
    rows = [
        Row("POST", "/identity/anonymous", every, public=True),
        Row("POST", "/identity/otp/request", {}, {"phone": "+447700900803"}, public=True),
        Row("POST", "/identity/otp/verify", {}, {"phone": "+447700900803", "code": "1"},
            public=True),
        Row("POST", "/identity/token/refresh", {}, {"refresh_token": "x"}, public=True),
        Row("GET", "/identity/dev/outbox", {"admin": {200}}),
        Row("GET", "/identity/me", {"member": {200}}),
        Row("PATCH", "/identity/me", {"member": {200}}, {"name": "Ann"}),
        Row("POST", f"/identity/members/{mid}/identifiers",
            {"member": {201}, "admin": {200}}, {"kind": "payment", "value": "tok_1"},
            other_member={403}),
        Row("GET", "/identity/resolve?kind=web&value=a_1", {"admin": {200}}),
        Row("POST", f"/identity/linklog/{entry}/undo", {"admin": {200}}),
        Row("GET", "/identity/member-code", {"member": {200}}),
        Row("GET", "/identity/member-code.svg", {"member": {200}}),
        Row("GET", "/identity/devices", {"member": {200}}),
        Row("POST", "/identity/checkin", {"screen": {400}}, {"code": "not-a-code"}),
        Row("DELETE", f"/identity/devices/{a['device_index']}",
            {"member": {204}, "admin": {404}}, other_member={404}),
        Row("DELETE", f"/identity/members/{b['member_id']}", {"admin": {200}}),
        Row("DELETE", "/identity/me", {"member": {200}}),
    ]
    covered = {(r.method, r.path.split("?")[0]) for r in rows}
    for route in ROUTES:
        for method in route.methods or ():  # type: ignore[attr-defined]
            if method != "HEAD":
                assert any(m == method and _matches(route.path, p)  # type: ignore[attr-defined]
                           for m, p in covered), (method, route.path)  # type: ignore[attr-defined]

    def call(row: Row, headers: dict[str, str]) -> int:
        return client.request(row.method, row.path, json=row.body, headers=headers).status_code

    for row in rows:
        label = f"{row.method} {row.path}"
        no_token = call(row, {})
        if row.public:
            assert no_token not in (401, 403) or row.path.endswith(("verify", "refresh")), label
        else:
            assert no_token == 401, label
            assert call(row, auth(expired_token(client))) == 401, label
            assert call(row, auth(retired_token())) == 401, label
            assert call(row, {"authorization": "Basic abc"}) == 401, label
        if row.other_member:
            assert call(row, auth(b["token"])) in row.other_member, label
        for role in ROLES:
            status = call(row, auth(tokens[role]))
            if role in row.allowed:
                assert status in row.allowed[role], (label, role, status)
            elif not row.public:
                assert status == 403, (label, role, status)


def _matches(template: str, path: str) -> bool:
    t, p = template.strip("/").split("/"), path.strip("/").split("/")
    return len(t) == len(p) and all(x.startswith("{") or x == y for x, y in zip(t, p, strict=True))
