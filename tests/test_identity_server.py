"""The identity routes in a real ``newretail serve`` process: sign-in, member code,
check-in and erasure over HTTP with shared keys."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import httpx

from identity.codes import member_code as code_at
from identity.tokens import KeyRing
from identity.types import DeviceIndex
from tests.utils import run_server


def test_sign_in_and_check_in_against_a_real_server(store_url: str, sync_redis: object,
                                                    tmp_path: Path) -> None:
    """A phone signs in through the outbox, shows its code to a screen and is greeted;
    after erasure the device's next code is refused."""
    spec = "k1:" + secrets.token_hex(32)
    ring = KeyRing.from_spec(spec)
    env = {"NEWRETAIL_JWT_KEYS": spec, "NEWRETAIL_IDENTITY_PEPPER": secrets.token_hex(32)}
    admin = {"authorization": "Bearer " + ring.issue("admin1", "admin", 300)}
    screen = {"authorization": "Bearer " + ring.issue("screen-1", "screen", 300,
                                                      store="store-soho")}
    with run_server(store_url, tmp_path / "var", env=env) as server, \
            httpx.Client(base_url=server.url, timeout=10) as http:
        anon = http.post("/identity/anonymous").json()
        assert http.post("/identity/otp/request",
                         json={"phone": "07700 900111"}).status_code == 202
        outbox = http.get("/identity/dev/outbox", headers=admin).json()["messages"]
        code = next(m["code"] for m in outbox if m["phone"] == "+447700900111")
        signed = http.post("/identity/otp/verify", json={
            "phone": "+447700900111", "code": code, "device_id": "pixel",
            "anon_id": anon["anon_id"]}).json()
        assert signed["stitched"] is True
        me = {"authorization": "Bearer " + signed["token"]}
        http.patch("/identity/me", headers=me, json={"name": "Ines Costa"})
        member_code = http.get("/identity/member-code", headers=me).json()["code"]
        r = http.post("/identity/checkin", headers=screen, json={"code": member_code})
        assert r.status_code == 200 and r.json()["greeting"] == "Welcome, Ines!"
        assert "server-timing" in r.headers
        assert http.delete("/identity/me", headers=me).status_code == 200
        # The next step's code (one step of drift) would have worked before erasure.
        next_code = code_at(DeviceIndex(signed["device_index"]),
                            bytes.fromhex(signed["device_secret"]), time.time() + 30)
        r = http.post("/identity/checkin", headers=screen, json={"code": next_code})
        assert r.status_code == 401
        found = http.get("/identity/resolve", headers=admin,
                         params={"kind": "phone", "value": "+447700900111"}).json()
        assert found["member_id"] is None
