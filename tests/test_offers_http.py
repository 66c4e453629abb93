"""The offers, events and suggestions routes through the app, and the train, import and
eval commands."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis as redis_sync
from prometheus_client import REGISTRY
from starlette.testclient import TestClient

from live.money import Money
from live.types import WAREHOUSE, Product, Sku
from live.web.app import create_app
from live.web.cli import main
from live.web.settings import Settings
from recommender.model import current_version
from tests.identity_support import auth, sign_in
from tests.identity_support import token as id_token
from tests.rec_support import write_csv


def token(client: TestClient, sub: str, role: str) -> dict[str, str]:
    return {"authorization": f"Bearer {client.app.state.keyring.issue(sub, role, ttl=600)}"}  # type: ignore[attr-defined]


def make_member(client: TestClient, consent: bool = True) -> str:
    svc: Any = client.app.state.services  # type: ignore[attr-defined]

    async def create() -> str:
        await svc.catalog.put_products(
            Product(Sku(f"9{i:03d}"), f"Thing {i}", f"c{i % 5}",
                    Money(500, "GBP"), "") for i in range(20))
        for i in range(20):
            await svc.catalog.set_stock(f"9{i:03d}", WAREHOUSE, 3)
        m = await svc.members.create("Bo", consent={"personalization": consent})
        return str(m.id)
    return str(client.portal.call(create))  # type: ignore[union-attr]


def test_events_then_offers(client: TestClient) -> None:
    """A member posts their events and gets offers, in stock, with the spec's fields."""
    mid = make_member(client)
    me = token(client, mid, "member")
    r = client.post("/events", headers=me, json=[
        {"member_id": mid, "sku": "9001", "kind": "purchase"},
        {"member_id": mid, "sku": "9002", "kind": "view", "ts": time.time() - 60}])
    assert r.status_code == 202 and r.json() == {"recorded": 2, "refused": 0}
    body = client.get("/offers", params={"n": 5}, headers=me).json()
    assert body["member_id"] == mid and body["personalized"] is True
    assert len(body["offers"]) == 5 and body["took_ms"] >= 0
    assert set(body["offers"][0]) == {"sku", "title", "price", "offer_price", "reason", "score"}


def test_roles_and_validation(client: TestClient) -> None:
    """Other members' offers and events are forbidden; no token 401; bad body 400."""
    mid = make_member(client)
    other = token(client, "m_other", "member")
    assert client.get("/offers", params={"member_id": mid}, headers=other).status_code == 403
    assert client.get("/offers", params={"member_id": mid}).status_code == 401
    assert client.get("/offers", params={"member_id": mid},
                      headers=token(client, "scr", "screen")).status_code == 200
    r = client.post("/events", headers=other,
                    json=[{"member_id": mid, "sku": "9001", "kind": "view"}])
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = client.post("/events", headers=other, content=b"not json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    r = client.get("/offers", params={"member_id": mid, "n": "0"},
                   headers=token(client, "h", "host"))
    assert r.status_code == 400
    viewer = token(client, "anon-1", "viewer")
    r = client.post("/events", headers=viewer,
                    json=[{"anon_id": "anon-1", "sku": "9003", "kind": "click"}])
    assert r.status_code == 202


def test_suggestions_route(client: TestClient, sync_redis: redis_sync.Redis) -> None:
    """Hosts get suggestions without pinned products; viewers are refused."""
    make_member(client)
    host = token(client, "h", "host")
    created = client.post("/live/sessions", headers=host,
                          json={"title": "t", "products": ["9000", "9001"]})
    sid = created.json()["session_id"]
    hub = client.app.state.services.hub  # type: ignore[attr-defined]
    client.portal.call(hub.sessions.pin, sid, {"sku": "9000"})  # type: ignore[union-attr]
    r = client.get(f"/live/sessions/{sid}/suggestions", params={"n": 3}, headers=host)
    assert r.status_code == 200
    got = [s["sku"] for s in r.json()["suggestions"]]
    assert len(got) == 3 and "9000" not in got
    assert client.get(f"/live/sessions/{sid}/suggestions",
                      headers=token(client, "v", "viewer")).status_code == 403


def retail_csv(path: Path) -> Path:
    rng = np.random.default_rng(9)
    lines = []
    for c in range(40):
        for month in range(1, 10):
            for p in rng.choice(12, 3, replace=False):
                sku = 20000 + (c % 2) * 100 + int(p)
                lines.append(f"{c}{month},{sku},ITEM {sku},1,2011-0{month}-10 10:00:00,2.0,"
                             f"{14000 + c}.0,United Kingdom")
    lines.append("9,POST,POSTAGE,1,2011-01-10 10:00:00,18,14000.0,United Kingdom")
    return write_csv(path, lines)


def test_eval_command_prints_all_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    """eval prints recall@20, ndcg@20, precision@10 for the engine and both baselines."""
    assert main(["eval", "--data", str(retail_csv(tmp_path / "r.csv.gz")),
                 "--split", "2011-07-01"]) == 0
    out = capsys.readouterr().out
    for word in ("recall@20", "ndcg@20", "precision@10", "engine", "popularity_90d",
                 "frequency_then_popularity"):
        assert word in out


def test_import_then_train(settings: Settings, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch, sync_redis: redis_sync.Redis
                           ) -> None:
    """import online-retail loads products with stock, members and purchases; train then
    writes a current model version that covers them."""
    monkeypatch.setenv("NEWRETAIL_REDIS_URL", str(settings.redis_url))
    monkeypatch.setenv("NEWRETAIL_VAR_DIR", str(settings.var_dir))
    assert main(["import", "online-retail", str(retail_csv(tmp_path / "r.csv.gz")),
                 "--stock", "7"]) == 0
    assert sync_redis.hget("nr:stock:20001", "warehouse") == b"7"
    assert not sync_redis.exists("nr:product:POST")
    assert sync_redis.scard("nr:members") == 40
    assert main(["train"]) == 0
    assert current_version(settings.model_dir) is not None


def test_cart_and_purchase_reach_the_event_log(client: TestClient) -> None:
    """A member's cart add and checkout are recorded as cart and purchase events (and so
    change their very next offers: the bought product comes back as buy_again)."""
    mid = make_member(client)
    me = token(client, mid, "member")
    r = client.post(f"/carts/{mid}/items", headers=me, json={"sku": "9007", "qty": 2})
    assert r.status_code == 200, r.text
    r = client.post(f"/carts/{mid}/checkout", headers=me, json={"idempotency_key": "k1"})
    assert r.status_code == 201, r.text
    svc: Any = client.app.state.services  # type: ignore[attr-defined]

    async def kinds() -> list[tuple[str, str, int]]:
        return [(e.kind, e.sku, e.qty) async for _, e in svc.events.read() if e.user == mid]
    assert client.portal.call(kinds) == [  # type: ignore[union-attr]
        ("cart", "9007", 2), ("purchase", "9007", 2)]
    body = client.get("/offers", params={"n": 3}, headers=me).json()
    assert body["offers"][0]["sku"] == "9007" and body["offers"][0]["reason"] == "buy_again"


def test_offers_carry_server_timing(client: TestClient) -> None:
    """GET /offers says how long the handler took (server-timing), for load tests."""
    mid = make_member(client)
    r = client.get("/offers", params={"n": 3}, headers=token(client, mid, "member"))
    assert r.status_code == 200
    assert float(r.headers["server-timing"].split("dur=")[1]) >= r.json()["took_ms"]


def test_check_in_at_a_screen_is_recorded(client: TestClient) -> None:
    """A member's code shown at a store screen lands in the event log as a check-in at
    that store."""
    signed = sign_in(client, "+447700900702")
    code = client.get("/identity/member-code", headers=auth(signed["token"])).json()["code"]
    screen = auth(id_token(client, "screen", "screen-3", store="store-soho"))
    assert client.post("/identity/checkin", headers=screen, json={"code": code}).status_code == 200
    svc: Any = client.app.state.services  # type: ignore[attr-defined]
    client.portal.call(svc.identity.drain)  # type: ignore[union-attr]

    async def checkins() -> list[tuple[str, str | None]]:
        return [(e.kind, e.store_id) async for _, e in svc.events.read()
                if e.user == signed["member_id"]]
    assert client.portal.call(checkins) == [("checkin", "store-soho")]  # type: ignore[union-attr]


def held_contexts() -> float:
    return REGISTRY.get_sample_value("newretail_offers_context_lookups_total",
                                     {"result": "held"}) or 0.0


def test_offers_from_the_process_copy_follow_the_store(client: TestClient) -> None:
    """Asked again, a member's offers come from the process's copy (no store trip); a
    product's stock written since is seen at once."""
    svc: Any = client.app.state.services  # type: ignore[attr-defined]
    assert svc.offers.copy is not None and svc.offers.copy.live
    mid = make_member(client)
    me = token(client, mid, "member")
    client.post("/events", headers=me, json=[{"member_id": mid, "sku": "9007",
                                              "kind": "purchase"}])
    first = client.get("/offers", params={"n": 5}, headers=me).json()
    held = held_contexts()
    for _ in range(2):
        again = client.get("/offers", params={"n": 5}, headers=me).json()
        assert again["offers"] == first["offers"]
    assert held_contexts() >= held + 1
    gone = first["offers"][0]["sku"]
    client.portal.call(svc.catalog.set_stock, gone, WAREHOUSE, 0)  # type: ignore[union-attr]
    after = client.get("/offers", params={"n": 5}, headers=me).json()
    assert gone not in [o["sku"] for o in after["offers"]] and len(after["offers"]) == 5


def test_consent_withdrawn_is_seen_by_the_next_offer(client: TestClient) -> None:
    mid = make_member(client)
    me = token(client, mid, "member")
    client.post("/events", headers=me, json=[{"member_id": mid, "sku": "9003",
                                              "kind": "purchase"}])
    for _ in range(2):
        assert client.get("/offers", params={"n": 5}, headers=me).json()["personalized"]
    r = client.patch("/identity/me", headers=me, json={"consent": {"personalization": False}})
    assert r.status_code == 200
    body = client.get("/offers", params={"n": 5}, headers=me).json()
    assert body["personalized"] is False
    assert all(o["reason"] != "buy_again" for o in body["offers"])


def test_offers_read_the_store_every_time_without_the_copy(settings: Settings) -> None:
    with TestClient(create_app(replace(settings, offers_copy=False))) as off:
        assert off.app.state.services.offers.copy is None  # type: ignore[attr-defined]
        mid = make_member(off)
        me = token(off, mid, "member")
        held = held_contexts()
        for _ in range(3):
            assert off.get("/offers", params={"n": 5}, headers=me).status_code == 200
        assert held_contexts() == held
    assert Settings.from_env({"NEWRETAIL_OFFERS_COPY": "off"}).offers_copy is False
    with pytest.raises(ValueError, match="NEWRETAIL_OFFERS_COPY"):
        Settings.from_env({"NEWRETAIL_OFFERS_COPY": "maybe"})
