"""Erasure leaves nothing of the member in the store: a member with every kind of activity
(anonymous browsing stitched at sign-in, identifiers, consent, events, carts, an order,
a flash-sale purchase, chat, reactions, a mute, a check-in, two devices) is erased, by
themself or by an admin, and then every key and every value of the store is read: the
member id, the phone (E.164 and as typed), the device ids and indexes, the anonymous id
and the payment and loyalty identifiers appear nowhere. Orders stay for the books,
detached from the member. Late events and late carts for them are refused."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync
from websockets.exceptions import ConnectionClosed

from live.db.client import connect
from recommender.train import AlsParams
from recommender.trainer import train_from_log
from tests.access_support import SERVER_ENV, auth, seed_world, sign_in, token
from tests.hub_support import Client
from tests.utils import ServerProcess, run_server


@pytest.fixture(scope="module")
def server(store_url: str, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    seed_world(store_url)
    with run_server(store_url, tmp_path_factory.mktemp("privacy"), env=SERVER_ENV) as srv:
        yield srv


def store_dump(store: redis_sync.Redis) -> Iterator[tuple[bytes, bytes]]:
    """Every key with its whole value as bytes, whatever its type."""
    for key in store.scan_iter(count=1000):
        kind = store.type(key).decode()
        value: Any
        if kind == "string":
            value = store.get(key)
        elif kind == "hash":
            value = store.hgetall(key)
        elif kind == "list":
            value = store.lrange(key, 0, -1)
        elif kind == "set":
            value = store.smembers(key)
        elif kind == "zset":
            value = store.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            value = store.xrange(key)
        elif kind == "none":  # expired between SCAN and TYPE
            continue
        else:
            raise AssertionError(f"unexpected type {kind} of {key!r}")
        yield key, repr(value).encode()


@dataclass
class Trace:
    """What the member left behind, to look for after erasure."""

    member_id: str
    token: str
    needles: dict[str, str]
    session_id: str


def _ok(r: httpx.Response, *statuses: int) -> Any:
    assert r.status_code in (statuses or (200,)), r.text
    return r.json() if r.content else None


async def leave_traces(srv: ServerProcess, n: int) -> Trace:
    """A member who browsed anonymously, signed in on two devices and did everything."""
    base = srv.url
    host = auth(token("host-1", "host"))
    screen = auth(token("screen-1", "screen", store="store-a"))
    typed, e164 = f"07700 900{n:03d}", f"+447700900{n:03d}"
    anon = _ok(httpx.post(f"{base}/identity/anonymous"), 201)
    viewer = auth(anon["token"])
    sid = _ok(httpx.post(f"{base}/live/sessions", headers=host,
                         json={"title": f"Privacy {n}", "products": ["mug", "kite"]}), 201)[
        "session_id"]
    _ok(httpx.post(f"{base}/carts/{anon['anon_id']}/items", headers=viewer,
                   json={"sku": "mug", "qty": 1, "session_id": sid}))
    _ok(httpx.post(f"{base}/events", headers=viewer,
                   json=[{"anon_id": anon["anon_id"], "sku": "pot", "kind": "view",
                          "session_id": sid}]), 202)
    # The phone as a person types it; a second device signs in too.
    first = sign_in(base, typed.replace(" ", ""), f"pixel-{n}-a", anon_id=anon["anon_id"])
    assert first["stitched"] is True
    sign_in(base, e164, f"pixel-{n}-b")
    member_id = first["member_id"]
    me = auth(first["token"])
    _ok(httpx.patch(f"{base}/identity/me", headers=me, json={
        "name": "Priya Example", "consent": {"personalization": True, "marketing": True}}))
    for kind, value in (("payment", f"tok_visa_{n}x"), ("loyalty_card", f"LC-{n}-77")):
        _ok(httpx.post(f"{base}/identity/members/{member_id}/identifiers", headers=me,
                       json={"kind": kind, "value": value}), 201)
    _ok(httpx.post(f"{base}/events", headers=me, json=[
        {"member_id": member_id, "sku": s, "kind": k, "session_id": sid, "store_id": "store-a"}
        for s, k in (("mug", "click"), ("lamp", "view"), ("pot", "cart"))]), 202)
    # A refresh token is rotated once.
    _ok(httpx.post(f"{base}/identity/token/refresh",
                   json={"refresh_token": first["refresh_token"]}))
    # In the live session: chat, reactions, cart, a flash-sale purchase; the host mutes them.
    _ok(httpx.post(f"{base}/live/sessions/{sid}/flash-sale", headers=host,
                   json={"sku": "kite", "price": {"amount": 500, "currency": "GBP"},
                         "qty": 10, "seconds": 120, "limit": 2}),
        201)
    ws = await Client.open(srv.ws_url, f"/ws/live/{sid}")
    try:
        assert (await ws.hello(first["token"]))["type"] == "welcome"
        for ref, op, payload in (
            ("c1", "chat", {"text": f"love it, I am {member_id} on {e164}"}),
            ("r1", "react", {"kind": "heart"}),
            ("a1", "cart.add", {"sku": "kite", "qty": 2}),
            ("k1", "checkout", {"idempotency_key": f"priv-{n}"}),
        ):
            reply = await ws.op(op, ref, **payload)
            assert reply["type"] == "ack", reply
        hws = await Client.open(srv.ws_url, f"/ws/live/{sid}")
        try:
            assert (await hws.hello(token("host-1", "host")))["type"] == "welcome"
            assert (await hws.op("mute", "m1", member_id=member_id))["type"] == "ack"
        finally:
            await hws.close()
    finally:
        await ws.close()
    # An order outside the session.
    _ok(httpx.post(f"{base}/carts/{member_id}/items", headers=me, json={"sku": "pot", "qty": 1}))
    order = _ok(httpx.post(f"{base}/carts/{member_id}/checkout", headers=me,
                           json={"idempotency_key": f"web-{n}"}), 201)["order"]
    assert order["member_id"] == member_id
    # A check-in at a store screen.
    code = _ok(httpx.get(f"{base}/identity/member-code", headers=me))["code"]
    _ok(httpx.post(f"{base}/identity/checkin", headers=screen, json={"code": code}))
    devices = _ok(httpx.get(f"{base}/identity/devices", headers=me))["devices"]
    assert len(devices) == 2
    needles = {
        "member id": member_id, "phone (E.164)": e164, "phone as typed": typed,
        "phone digits": typed.replace(" ", ""), "anonymous id": anon["anon_id"],
        "payment": f"tok_visa_{n}x", "loyalty card": f"LC-{n}-77", "name": "Priya Example",
        "device secret": first["device_secret"],
    }
    for d in devices:
        needles[f"device {d['device_id']}"] = d["device_id"]
        needles[f"device index {d['device_index']}"] = d["device_index"]
    return Trace(member_id, first["token"], needles, sid)


def _scan_for(store: redis_sync.Redis, needles: dict[str, str]) -> list[str]:
    found = []
    for key, value in store_dump(store):
        for what, needle in needles.items():
            if needle.encode() in key or needle.encode() in value:
                found.append(f"{what} in {key.decode()}: {value[:300]!r}")
    return found


async def _wait_presence_gone(store: redis_sync.Redis, member_id: str) -> None:
    """The member's sockets closed; wait (bounded) until no session lists them present."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        present = [k for k in store.scan_iter(match="nr:live:present:*")
                   if store.zscore(k, member_id) is not None]
        if not present or asyncio.get_running_loop().time() > deadline:
            return
        await asyncio.sleep(0.05)


async def _train(store_url: str, model_dir: Path) -> list[bytes]:
    """Train a model version from the event log; the bytes of every file it wrote."""
    client = connect(store_url)
    try:
        result = await train_from_log(client, model_dir, AlsParams(factors=8, iterations=2))
    finally:
        await client.aclose()
    version_dir = model_dir / result.version
    return [p.read_bytes() for p in sorted(version_dir.rglob("*")) if p.is_file()]


@pytest.mark.parametrize("by", ["member", "admin"])
async def test_erasure_leaves_nothing(server: ServerProcess, store_url: str, by: str,
                                      tmp_path: Path) -> None:
    """After erasure (``DELETE /identity/me`` or the admin's ``DELETE
    /identity/members/{id}``) no key or value anywhere in the store holds anything of
    the member; their orders remain, detached; late events and carts are refused."""
    n = 401 if by == "member" else 402
    trace = await leave_traces(server, n)
    store = redis_sync.Redis.from_url(store_url)
    try:
        before = _scan_for(store, trace.needles)
        assert any("member id" in f for f in before)  # the scan does find them
        await _wait_presence_gone(store, trace.member_id)
        ids = (trace.member_id.encode(), trace.needles["anonymous id"].encode())
        bystander = [{"member_id": f"m_bystander{i}", "sku": s, "kind": "purchase"}
                     for i in range(3) for s in ("mug", "kite", "lamp")]
        r = httpx.post(f"{server.url}/events", headers=auth(token("admin-1", "admin")),
                       json=bystander)
        assert r.status_code == 202, r.text
        orders_before = store.zcard("nr:orders")
        # Still watching while erased: the connection is closed, a new hello refused.
        still = await Client.open(server.ws_url, f"/ws/live/{trace.session_id}")
        assert (await still.hello(trace.token))["type"] == "welcome"
        if by == "member":
            r = httpx.delete(f"{server.url}/identity/me", headers=auth(trace.token))
        else:
            r = httpx.delete(f"{server.url}/identity/members/{trace.member_id}",
                             headers=auth(token("admin-1", "admin")))
        assert r.status_code == 200, r.text
        assert r.json()["identifiers"] >= 5
        with pytest.raises(ConnectionClosed):
            await still.until(lambda m: False, timeout=10)
        assert still.ws.close_code == 1008
        late_ws = await Client.open(server.ws_url, f"/ws/live/{trace.session_id}")
        try:
            refused = await late_ws.hello(trace.token)
            assert refused["type"] == "error" and refused["code"] == "unauthorized", refused
        finally:
            await late_ws.close()
        await _wait_presence_gone(store, trace.member_id)
        leftovers = _scan_for(store, trace.needles)
        assert not leftovers, "\n".join(leftovers)
        # The next trained model knows nothing of them.
        trained = await _train(store_url, tmp_path / "after")
        assert any(b"m_bystander0" in blob for blob in trained)  # the files name users
        assert not [i for i in ids for blob in trained if i in blob]
        # Orders are kept for the books, with no member on them.
        assert store.zcard("nr:orders") == orders_before
        admin = auth(token("admin-1", "admin"))
        orders = httpx.get(f"{server.url}/orders?limit=500", headers=admin).json()["orders"]
        assert orders and all(o["member_id"] != trace.member_id for o in orders)
        # Late events for the member or their old anonymous id are refused.
        late = [{"member_id": trace.member_id, "sku": "mug", "kind": "view"},
                {"anon_id": trace.needles["anonymous id"], "sku": "mug", "kind": "view"}]
        r = httpx.post(f"{server.url}/events", headers=admin, json=late)
        assert r.status_code == 202 and r.json() == {"recorded": 0, "refused": 2}, r.text
        # Their still-unexpired access token brings nothing back either.
        me = auth(trace.token)
        assert httpx.get(f"{server.url}/identity/me", headers=me).status_code in (401, 404)
        r = httpx.post(f"{server.url}/carts/{trace.member_id}/items", headers=me,
                       json={"sku": "mug", "qty": 1})
        assert r.status_code in (401, 403, 404), r.text
        leftovers = _scan_for(store, trace.needles)
        assert not leftovers, "\n".join(leftovers)
    finally:
        store.close()


async def test_erasure_closes_the_members_sockets_on_every_process(
    server: ServerProcess, store_url: str, tmp_path: Path,
) -> None:
    """A member watching through another web process than the one that erases them is
    disconnected there too (1008), and cannot say hello again on either."""
    trace = await leave_traces(server, 403)
    with run_server(store_url, tmp_path / "other", env=SERVER_ENV) as other:
        watching = await Client.open(other.ws_url, f"/ws/live/{trace.session_id}")
        assert (await watching.hello(trace.token))["type"] == "welcome"
        r = httpx.delete(f"{server.url}/identity/me", headers=auth(trace.token))
        assert r.status_code == 200, r.text
        with pytest.raises(ConnectionClosed):
            await watching.until(lambda m: False, timeout=10)
        assert watching.ws.close_code == 1008
        for srv in (server, other):
            late = await Client.open(srv.ws_url, f"/ws/live/{trace.session_id}")
            try:
                refused = await late.hello(trace.token)
                assert (refused["type"], refused.get("code")) == ("error", "unauthorized"), refused
            finally:
                await late.close()
