"""Identifiers, over-merge rules, stitching, consent and erasure."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import redis.asyncio as aredis
from starlette.testclient import TestClient

from identity.errors import IdentityError
from identity.members import Members
from tests.identity_support import admin, auth, service, sign_in, token

PHONE = "+447700900601"


class Recorder:
    """A hook that records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def __call__(self, *args: Any) -> None:
        self.calls.append(args)


def anonymous(client: TestClient) -> dict[str, str]:
    r = client.post("/identity/anonymous")
    assert r.status_code == 201
    body: dict[str, str] = r.json()
    return body


async def test_link_rules(redis: aredis.Redis) -> None:
    """Junk is refused, an identifier stays with its first member (no merge), kinds have
    a limit, and every link and unlink is logged and can be undone."""
    members = Members(redis, b"p" * 32)
    a = await members.create("Ann Lee")
    b = await members.create("Bob Ray")
    for junk in ("0", "-1", "null", "anonymous", "000000", ""):
        with pytest.raises(IdentityError, match="placeholder"):
            await members.link(a.id, "payment", junk)
    assert await members.link(a.id, "loyalty_card", "LC1") is True
    assert await members.link(a.id, "loyalty_card", "LC1") is False
    with pytest.raises(IdentityError) as err:
        await members.link(b.id, "loyalty_card", "LC1")
    assert err.value.code == "conflict" and await members.resolve("loyalty_card", "LC1") == a.id
    await members.link(a.id, "loyalty_card", "LC2")
    await members.link(a.id, "loyalty_card", "LC3")
    with pytest.raises(IdentityError) as err:
        await members.link(a.id, "loyalty_card", "LC4")
    assert err.value.code == "limit"
    assert await members.resolve("loyalty_card", "LC4") is None
    keys = [k.decode() for k in await redis.keys("nr:ident:*")]
    assert keys and not any("LC1" in k for k in keys)
    log = await members.link_log(a.id)
    assert [e.action for e in log] == ["link", "link", "link"]
    await members.undo(log[0].id, "admin1")
    assert await members.resolve("loyalty_card", "LC1") is None
    undo_entry = (await members.link_log(a.id))[-1]
    assert undo_entry.action == "unlink" and undo_entry.source == "undo"
    await members.undo(undo_entry.id, "admin1")
    assert await members.resolve("loyalty_card", "LC1") == a.id


async def test_concurrent_links_of_one_identifier_give_one_owner(redis: aredis.Redis) -> None:
    """Twenty members racing for one card: exactly one wins, the others get conflict."""
    members = Members(redis, b"p" * 32)
    people = [await members.create(f"P{i}") for i in range(20)]
    results = await asyncio.gather(
        *(members.link(p.id, "payment", "card-9") for p in people), return_exceptions=True)
    assert sum(r is True for r in results) == 1
    assert all(isinstance(r, IdentityError) and r.code == "conflict"
               for r in results if r is not True)


def test_stitching_an_anonymous_viewer(client: TestClient) -> None:
    """An anon id given at verify is linked as web and the stitch hooks get
    (anon_id, member_id); it is stitched once, and never into a second member."""
    hook = Recorder()
    service(client).on_stitch.append(hook)
    anon = anonymous(client)
    assert client.app.state.keyring.verify(anon["token"]).role == "viewer"  # type: ignore[attr-defined]
    signed = sign_in(client, PHONE, anon_id=anon["anon_id"])
    assert signed["stitched"] is True
    assert hook.calls == [(anon["anon_id"], signed["member_id"])]
    r = client.get("/identity/resolve", params={"kind": "web", "value": anon["anon_id"]},
                   headers=admin(client))
    assert r.json()["member_id"] == signed["member_id"]
    again = sign_in(client, PHONE, anon_id=anon["anon_id"])
    other = sign_in(client, "+447700900602", anon_id=anon["anon_id"])
    assert again["stitched"] is False and other["stitched"] is False
    assert len(hook.calls) == 1


def test_consent_changes(client: TestClient) -> None:
    """PATCH /identity/me records consent with its time; consents() follows it;
    a bad body changes nothing."""
    signed = sign_in(client, PHONE)
    h = auth(signed["token"])
    mid = signed["member_id"]
    svc = service(client)
    assert client.portal.call(svc.consents, mid, "personalization") is False  # type: ignore[union-attr]
    r = client.patch("/identity/me", headers=h,
                     json={"name": "Ada Lovelace", "consent": {"personalization": True}})
    assert r.status_code == 200
    assert r.json()["consent"]["personalization"]["given"] is True
    assert client.portal.call(svc.consents, mid, "personalization") is True  # type: ignore[union-attr]
    for bad in ({"consent": {"personalization": "yes"}}, {"consent": {"x": True}},
                {"name": 5}, {"tier": "gold"}):
        assert client.patch("/identity/me", headers=h, json=bad).status_code == 400
    me = client.get("/identity/me", headers=h).json()
    assert me["name"] == "Ada Lovelace" and me["tier"] == "member"
    r = client.patch("/identity/me", headers=h, json={"consent": {"personalization": False}})
    entry = r.json()["consent"]["personalization"]
    assert entry["given"] is False and entry["withdrawn_at"] >= entry["given_at"]


def test_identifiers_route(client: TestClient) -> None:
    """A member adds a payment card to themself, not a phone and not to someone else;
    an admin may add any kind; resolve finds phones by any spelling."""
    signed = sign_in(client, PHONE)
    other = sign_in(client, "+447700900602")
    mid = signed["member_id"]
    h = auth(signed["token"])
    url = f"/identity/members/{mid}/identifiers"
    assert client.post(url, headers=h, json={"kind": "payment", "value": "tok_4242"}
                       ).status_code == 201
    assert client.post(url, headers=h, json={"kind": "phone", "value": "+447700900609"}
                       ).status_code == 403
    assert client.post(f"/identity/members/{other['member_id']}/identifiers", headers=h,
                       json={"kind": "payment", "value": "tok_1"}).status_code == 403
    assert client.post(url, headers=h, json={"kind": "payment", "value": "null"}
                       ).status_code == 400
    r = client.post(url, headers=admin(client), json={"kind": "phone", "value": "02079460000"})
    assert r.status_code == 201
    found = client.get("/identity/resolve", headers=admin(client),
                       params={"kind": "phone", "value": "+44 20 7946 0000"}).json()
    assert found["member_id"] == mid
    clash = client.post(f"/identity/members/{other['member_id']}/identifiers",
                        headers=admin(client), json={"kind": "payment", "value": "tok_4242"})
    assert clash.status_code == 409


def test_erasure_then_late_event(client: TestClient, sync_redis: Any) -> None:
    """Erasure removes the member, identifiers, devices and refresh tokens, runs the
    erase hooks with every user id, leaves a record with no personal data, and a late
    event or late stitch does not bring the member back. The same phone may sign in
    again and gets a fresh member."""
    svc = service(client)
    erase_hook = Recorder()
    stitch_hook = Recorder()
    svc.on_erase.append(erase_hook)
    svc.on_stitch.append(stitch_hook)
    anon = anonymous(client)
    signed = sign_in(client, PHONE, anon_id=anon["anon_id"])
    mid = signed["member_id"]
    client.patch("/identity/me", headers=auth(signed["token"]), json={"name": "Zed Quill"})
    r = client.delete("/identity/me", headers=auth(signed["token"]))
    assert r.status_code == 200
    record = r.json()
    assert erase_hook.calls == [(mid, [mid, anon["anon_id"]])]
    assert client.portal.call(svc.is_erased, mid) is True  # type: ignore[union-attr]
    assert client.portal.call(svc.is_erased, anon["anon_id"]) is True  # type: ignore[union-attr]
    assert client.portal.call(svc.is_erased, "m_someone_else") is False  # type: ignore[union-attr]
    assert client.portal.call(  # type: ignore[union-attr]
        svc.erased_among, ["m_someone_else", anon["anon_id"], mid]) == {mid, anon["anon_id"]}
    assert client.portal.call(svc.erased_among, []) == set()  # type: ignore[union-attr]
    # Nothing personal is left under any key or in the erasure record.
    for key in sync_redis.keys("*"):
        assert mid.encode() not in key and b"Zed" not in key
        if sync_redis.type(key) == b"hash":
            assert mid.encode() not in b"".join(sync_redis.hvals(key))
    stored = sync_redis.xrange("nr:erasures")
    assert len(stored) == 1
    blob = stored[0][1][b"record"]
    assert orjson.loads(blob)["erasure_id"] == record["erasure_id"]
    for personal in (mid, PHONE, anon["anon_id"], "Zed"):
        assert personal.encode() not in blob
    assert client.get("/identity/me", headers=auth(signed["token"])).status_code == 404
    refreshed = client.post("/identity/token/refresh",
                            json={"refresh_token": signed["refresh_token"]})
    assert refreshed.status_code == 401
    # A late event: consumers ask is_erased and drop it; a late stitch is refused.
    again = sign_in(client, PHONE, anon_id=anon["anon_id"])
    assert again["created"] is True and again["member_id"] != mid
    assert again["stitched"] is False and len(stitch_hook.calls) == 1
    assert client.portal.call(svc.is_erased, again["member_id"]) is False  # type: ignore[union-attr]
    assert client.delete(f"/identity/members/{mid}", headers=admin(client)).status_code == 404


def test_admin_erasure_and_failed_hook_can_be_retried(client: TestClient) -> None:
    """If an erase hook fails nothing of identity is removed yet and the admin can
    retry; the second attempt completes."""
    svc = service(client)
    signed = sign_in(client, PHONE)
    mid = signed["member_id"]
    attempts: list[str] = []

    async def flaky(member_id: str, user_ids: list[str]) -> None:
        attempts.append(member_id)
        if len(attempts) == 1:
            raise RuntimeError("recommender down")

    svc.on_erase.append(flaky)
    url = f"/identity/members/{mid}"
    assert client.delete(url, headers=auth(token(client, "host"))).status_code == 403
    failed = client.delete(url, headers=admin(client))
    assert failed.status_code == 503 and failed.json()["error"]["code"] == "erasure_incomplete"
    assert client.portal.call(svc.is_erased, mid) is True  # type: ignore[union-attr]
    assert client.get("/identity/me", headers=auth(signed["token"])).status_code == 200
    assert client.delete(url, headers=admin(client)).status_code == 200
    assert attempts == [mid, mid]
    assert client.get("/identity/me", headers=auth(signed["token"])).status_code == 404
