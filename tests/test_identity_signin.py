"""Phone sign-in over HTTP: codes, every limit, replay, expiry, identical answers,
refresh-token rotation and the dev outbox. Time moves through an injected clock."""

from __future__ import annotations

from pathlib import Path

from starlette.testclient import TestClient

from live.web.app import create_app
from live.web.settings import Settings
from tests.identity_support import (
    FakeClock,
    admin,
    auth,
    last_code,
    service,
    sign_in,
    token,
    use_clock,
)

PHONE = "+447700900501"


def request_code(client: TestClient, phone: str = PHONE) -> int:
    return client.post("/identity/otp/request", json={"phone": phone}).status_code


def verify(client: TestClient, code: str, phone: str = PHONE) -> tuple[int, dict[str, object]]:
    r = client.post("/identity/otp/verify",
                    json={"phone": phone, "code": code, "device_id": "phone-1"})
    return r.status_code, r.json()


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def test_unknown_number_signs_up_and_known_number_signs_in(client: TestClient) -> None:
    """Verify makes a new member for a new number and finds the same member next time;
    national spelling and E.164 are one number."""
    first = sign_in(client, PHONE)
    assert first["created"] is True and first["member_id"].startswith("m_")
    assert len(bytes.fromhex(first["device_secret"])) >= 20
    again = sign_in(client, "07700 900501", device_id="tablet")
    assert again["created"] is False and again["member_id"] == first["member_id"]
    me = client.get("/identity/me", headers=auth(again["token"]))
    assert me.status_code == 200 and me.json()["member_id"] == first["member_id"]
    assert PHONE not in str(me.json())


def test_identical_answers_for_known_and_unknown_numbers(client: TestClient) -> None:
    """Request and a wrong verify answer byte for byte the same for a member's number
    and a number nobody has."""
    sign_in(client, PHONE)
    unknown = "+447700900502"
    answers = []
    for phone in (PHONE, unknown):
        r1 = client.post("/identity/otp/request", json={"phone": phone})
        r2 = client.post("/identity/otp/verify",
                         json={"phone": phone, "code": wrong(last_code(client, phone)),
                               "device_id": "d"})
        answers.append((r1.status_code, r1.content, r2.status_code, r2.content))
    assert answers[0] == answers[1]
    assert answers[0][2] == 401


def test_code_works_once(client: TestClient) -> None:
    """A code that signed in is refused the second time (replay)."""
    assert request_code(client) == 202
    code = last_code(client, PHONE)
    assert verify(client, code)[0] == 200
    status, body = verify(client, code)
    assert status == 401 and body["error"]["code"] == "invalid_code"  # type: ignore[index]


def test_code_expires_after_five_minutes(client: TestClient) -> None:
    """A code works at 4:59 and not at 5:00."""
    clock = use_clock(client, FakeClock())
    assert request_code(client) == 202
    clock.advance(299)
    assert verify(client, last_code(client, PHONE))[0] == 200
    assert request_code(client) == 202
    clock.advance(300)
    assert verify(client, last_code(client, PHONE))[0] == 401


def test_five_wrong_tries_burn_the_code(client: TestClient) -> None:
    """After five wrong tries even the right code is refused."""
    assert request_code(client) == 202
    code = last_code(client, PHONE)
    for _ in range(5):
        assert verify(client, wrong(code))[0] == 401
    assert verify(client, code)[0] == 401


def test_four_wrong_tries_then_right_code(client: TestClient) -> None:
    """Four wrong tries still leave the code usable."""
    assert request_code(client) == 202
    code = last_code(client, PHONE)
    for _ in range(4):
        assert verify(client, wrong(code))[0] == 401
    assert verify(client, code)[0] == 200


def test_three_sends_per_ten_minutes(client: TestClient) -> None:
    """The fourth request in ten minutes is 429 and sends nothing; later it works."""
    clock = use_clock(client, FakeClock())
    assert [request_code(client) for _ in range(3)] == [202, 202, 202]
    sent = last_code(client, PHONE)
    r = client.post("/identity/otp/request", json={"phone": PHONE})
    assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_requests"
    assert last_code(client, PHONE) == sent
    assert verify(client, sent)[0] == 200  # the last code sent still works
    clock.advance(601)
    assert request_code(client) == 202
    assert request_code(client, "+447700900503") == 202  # other phones are not affected


def test_ten_failures_in_an_hour_lock_the_phone(client: TestClient) -> None:
    """The tenth failure locks the phone: the right code and new sends are refused
    until the hour is over."""
    clock = use_clock(client, FakeClock())
    statuses = []
    for _ in range(2):
        assert request_code(client) == 202
        code = last_code(client, PHONE)
        statuses += [verify(client, wrong(code))[0] for _ in range(5)]
    assert statuses == [401] * 9 + [429]
    r = client.post("/identity/otp/request", json={"phone": PHONE})
    assert r.status_code == 429 and r.json()["error"]["code"] == "locked"
    assert request_code(client) == 429
    clock.advance(3601)
    assert request_code(client) == 202
    assert verify(client, last_code(client, PHONE))[0] == 200


def test_bad_input_is_refused_and_changes_nothing(client: TestClient) -> None:
    """Bad phone, code shape, device id or JSON give 400 and send nothing."""
    for body in ({"phone": "hello"}, {"phone": 447700}, {}, {"phone": "+1" + "5" * 30}):
        r = client.post("/identity/otp/request", json=body)
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    r = client.post("/identity/otp/request", content=b"{nope")
    assert r.status_code == 400
    assert client.get("/identity/dev/outbox", headers=admin(client)).json()["messages"] == []
    assert request_code(client) == 202
    code = last_code(client, PHONE)
    for body in ({"phone": PHONE, "code": "12345", "device_id": "d"},
                 {"phone": PHONE, "code": code, "device_id": ""},
                 {"phone": PHONE, "code": code, "device_id": "null"},
                 {"phone": PHONE, "code": code}):
        assert client.post("/identity/otp/verify", json=body).status_code == 400
    assert verify(client, code)[0] == 200  # refused requests did not burn the code


def test_refresh_token_rotates_and_reuse_revokes_the_family(client: TestClient) -> None:
    """A refresh token works once; replaying a rotated one revokes its successors too."""
    signed = sign_in(client, PHONE)
    r1 = client.post("/identity/token/refresh", json={"refresh_token": signed["refresh_token"]})
    assert r1.status_code == 200
    pair = r1.json()
    assert client.get("/identity/me", headers=auth(pair["token"])).status_code == 200
    replay = client.post("/identity/token/refresh",
                         json={"refresh_token": signed["refresh_token"]})
    assert replay.status_code == 401 and "reused" in replay.json()["error"]["message"]
    r2 = client.post("/identity/token/refresh", json={"refresh_token": pair["refresh_token"]})
    assert r2.status_code == 401
    for bad in ({}, {"refresh_token": "rt.unknown"}, {"refresh_token": 5}):
        assert client.post("/identity/token/refresh", json=bad).status_code == 401


def test_access_tokens_last_fifteen_minutes(client: TestClient) -> None:
    """The member token carries role member, the device and a 15-minute expiry."""
    signed = sign_in(client, PHONE)
    claims = client.app.state.keyring.verify(signed["token"])  # type: ignore[attr-defined]
    assert claims.role == "member" and claims.sub == signed["member_id"]
    assert claims.device == signed["device_index"]
    assert signed["expires_in"] == 900
    assert 890 <= claims.exp - int(service(client).clock()) <= 901


def test_outbox_is_admin_only_and_absent_in_prod(settings: Settings, tmp_path: Path) -> None:
    """Dev outbox: admin only; in prod mode it does not exist and sign-in says the SMS
    gateway is missing."""
    with TestClient(create_app(settings)) as client:
        assert client.get("/identity/dev/outbox").status_code == 401
        member = token(client, "member", "m_x")
        assert client.get("/identity/dev/outbox", headers=auth(member)).status_code == 403
    prod = Settings(redis_url=settings.redis_url, var_dir=tmp_path / "prod", mode="prod",
                    jwt_keys="k1:" + "s" * 40, log_level="WARNING", identity_pepper="p" * 32)
    with TestClient(create_app(prod)) as client:
        r = client.get("/identity/dev/outbox", headers=admin(client))
        assert r.status_code == 404
        r = client.post("/identity/otp/request", json={"phone": PHONE})
        assert r.status_code == 503 and r.json()["error"]["code"] == "sms_unavailable"
