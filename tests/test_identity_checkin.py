"""Member codes on the phone and check-in at a store screen."""

from __future__ import annotations

from starlette.testclient import TestClient

from identity.codes import member_code
from identity.types import DeviceIndex
from tests.identity_support import FakeClock, admin, auth, service, sign_in, token, use_clock

PHONE = "+447700900701"


def screen(client: TestClient, store: str | None = "store-soho") -> dict[str, str]:
    return auth(token(client, "screen", "screen-7", store=store))


def check_in(client: TestClient, code: str) -> tuple[int, dict[str, object]]:
    r = client.post("/identity/checkin", headers=screen(client), json={"code": code})
    return r.status_code, r.json()


def test_check_in_greets_by_first_name_and_runs_hooks(client: TestClient) -> None:
    """The screen gets the first name and tier only; on_checkin gets member, screen
    and the screen's store."""
    calls: list[tuple[str, str, str | None]] = []

    async def hook(member_id: str, screen_id: str, store_id: str | None) -> None:
        calls.append((member_id, screen_id, store_id))

    svc = service(client)
    svc.on_checkin.append(hook)
    signed = sign_in(client, PHONE)
    h = auth(signed["token"])
    client.patch("/identity/me", headers=h, json={"name": "Grace Hopper"})
    code = client.get("/identity/member-code", headers=h).json()
    assert code["code"].startswith("NR") and code["expires_at"] > svc.clock()
    assert signed["member_id"] not in code["code"] and PHONE[1:] not in code["code"]
    status, body = check_in(client, code["code"])
    assert status == 200
    assert body == {"member_id": signed["member_id"], "greeting": "Welcome, Grace!",
                    "tier": "member"}
    assert "Hopper" not in str(body)
    client.portal.call(svc.drain)  # type: ignore[union-attr]
    assert calls == [(signed["member_id"], "screen-7", "store-soho")]


def test_code_computed_on_the_phone_matches(client: TestClient) -> None:
    """The phone can compute its own code from device_secret and the index."""
    clock = use_clock(client, FakeClock())
    signed = sign_in(client, PHONE)
    own = member_code(DeviceIndex(signed["device_index"]),
                      bytes.fromhex(signed["device_secret"]), clock())
    assert check_in(client, own)[0] == 200


def test_member_code_works_once(client: TestClient) -> None:
    """A code is accepted once; the next step's code works; an older step's does not."""
    clock = use_clock(client, FakeClock(1_800_000_000.0))
    signed = sign_in(client, PHONE)
    h = auth(signed["token"])
    first = client.get("/identity/member-code", headers=h).json()["code"]
    assert check_in(client, first)[0] == 200
    status, body = check_in(client, first)
    assert status == 401 and body["error"]["code"] == "invalid_code"  # type: ignore[index]
    secret = bytes.fromhex(signed["device_secret"])
    index = DeviceIndex(signed["device_index"])
    previous = member_code(index, secret, clock() - 30)
    assert check_in(client, previous)[0] == 401  # older than the one accepted
    clock.advance(30)
    assert check_in(client, client.get("/identity/member-code", headers=h).json()["code"]
                    )[0] == 200


def test_stale_and_forged_codes(client: TestClient) -> None:
    """A code two steps old, a code with a wrong TOTP and junk are refused."""
    clock = use_clock(client, FakeClock(1_800_000_000.0))
    signed = sign_in(client, PHONE)
    h = auth(signed["token"])
    stale = client.get("/identity/member-code", headers=h).json()["code"]
    clock.advance(60)
    assert check_in(client, stale)[0] == 401
    fresh = client.get("/identity/member-code", headers=h).json()["code"]
    forged = fresh[:-6] + f"{(int(fresh[-6:]) + 1) % 1_000_000:06d}"
    assert check_in(client, forged)[0] == 401
    assert check_in(client, "NR" + "0" * 10 + "123456")[0] == 401
    assert check_in(client, "hello")[0] == 400
    assert check_in(client, fresh)[0] == 200


def test_revoked_device_codes_stop_working(client: TestClient) -> None:
    """After DELETE /identity/devices/{index} that device's codes and refresh token are
    refused and the device identifier is unlinked; the member's other device still works;
    others cannot revoke it."""
    use_clock(client, FakeClock(1_800_000_000.0))
    phone = sign_in(client, PHONE, device_id="phone")
    tablet = sign_in(client, PHONE, device_id="tablet")
    stranger = sign_in(client, "+447700900702")
    code = client.get("/identity/member-code", headers=auth(phone["token"])).json()["code"]
    url = f"/identity/devices/{phone['device_index']}"
    assert client.delete(url, headers=auth(stranger["token"])).status_code == 404
    listed = client.get("/identity/devices", headers=auth(tablet["token"])).json()["devices"]
    assert {d["device_id"] for d in listed} == {"phone", "tablet"}
    linked = client.get("/identity/resolve", headers=admin(client),
                        params={"kind": "device", "value": "phone"}).json()
    assert linked["member_id"] == phone["member_id"]
    assert client.delete(url, headers=auth(tablet["token"])).status_code == 204
    gone = client.get("/identity/resolve", headers=admin(client),
                      params={"kind": "device", "value": "phone"}).json()
    assert gone["member_id"] is None
    assert check_in(client, code)[0] == 401
    assert client.get("/identity/member-code", headers=auth(phone["token"])).status_code == 404
    r = client.post("/identity/token/refresh", json={"refresh_token": phone["refresh_token"]})
    assert r.status_code == 401
    other = client.get("/identity/member-code", headers=auth(tablet["token"])).json()["code"]
    assert check_in(client, other)[0] == 200
    assert client.delete(f"/identity/devices/{tablet['device_index']}",
                         headers=admin(client)).status_code == 204


def test_signing_in_again_on_a_device_replaces_its_secret(client: TestClient) -> None:
    """A second sign-in on the same device revokes the first secret."""
    use_clock(client, FakeClock(1_800_000_000.0))
    first = sign_in(client, PHONE, device_id="phone")
    old = client.get("/identity/member-code", headers=auth(first["token"])).json()["code"]
    second = sign_in(client, PHONE, device_id="phone")
    assert second["device_secret"] != first["device_secret"]
    assert check_in(client, old)[0] == 401


def test_member_code_svg_is_a_qr(client: TestClient) -> None:
    """The SVG endpoint returns a standalone QR image (an <img> needs the namespace), not cached."""
    signed = sign_in(client, PHONE)
    r = client.get("/identity/member-code.svg", headers=auth(signed["token"]))
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    assert r.text.startswith('<svg xmlns="http://www.w3.org/2000/svg"')
    assert r.headers["cache-control"] == "no-store"
    assert "<path" in r.text
