"""The pages' server side: the page routes and favicon, offers for guests and for store
screens, and a check-in pushing the member's offers to the screen, then idle."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
from starlette.testclient import TestClient

from live.money import Money
from live.types import WAREHOUSE, Product, Sku, Store
from live.web.app import create_app
from live.web.settings import Settings
from tests.identity_support import auth, sign_in, token

PHONE = "+447700900777"
IN_STORE = {"a1", "a2", "a3"}


def seed(client: TestClient) -> None:
    """Six products; only a1..a3 are on the shelves of store-a."""
    svc: Any = client.app.state.services  # type: ignore[attr-defined]

    async def run() -> None:
        await svc.catalog.put_stores([Store("store-a", "Soho", "London")])
        await svc.catalog.put_products(
            Product(Sku(s), f"Thing {s}", f"c{i}", Money(500 + 100 * i, "GBP"), "") for i, s in
            enumerate(["a1", "a2", "a3", "w1", "w2", "w3"]))
        for sku in ("a1", "a2", "a3", "w1", "w2", "w3"):
            await svc.catalog.set_stock(sku, WAREHOUSE, 10)
        for sku in IN_STORE:
            await svc.catalog.set_stock(sku, "store-a", 2)
    client.portal.call(run)  # type: ignore[union-attr]


def test_pages_are_served_with_their_favicon(client: TestClient) -> None:
    """The four pages come with a strict CSP; the favicon and the scripts are served."""
    for path in ("/", "/live/s123", "/host/s123", "/screen/screen-1", "/me"):
        r = client.get(path)
        # an unknown live is the 404 page, with the same headers
        status = 404 if path.startswith(("/live/", "/host/")) else 200
        assert r.status_code == status and r.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert 'rel="icon"' in r.text
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
    for path in ("/static/js/viewer.js", "/static/icons/heart.svg", "/static/favicon.svg"):
        assert client.get(path).status_code == 200, path


def test_guests_get_offers_for_nobody_in_particular(client: TestClient) -> None:
    """A viewer token gets trending offers, not personalized and for no member; asking
    for a member's offers is forbidden; no token is 401."""
    seed(client)
    viewer = auth(token(client, "viewer", "a_0123456789"))
    r = client.get("/offers", params={"n": 4}, headers=viewer)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["personalized"] is False and body["member_id"] is None
    assert len(body["offers"]) == 4
    r = client.get("/offers", params={"member_id": "m_someone"}, headers=viewer)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert client.get("/offers").status_code == 401


def test_check_in_pushes_member_offers_then_idle(settings: Settings) -> None:
    """A check-in at a screen sends that screen the greeting, tier and offers in stock in
    its store, with no member id or phone; after NEWRETAIL_SCREEN_CLEAR it goes idle."""
    settings = dataclasses.replace(settings, screen_clear=0.3)
    with TestClient(create_app(settings)) as client:
        seed(client)
        signed = sign_in(client, PHONE)
        member = auth(signed["token"])
        client.patch("/identity/me", headers=member, json={"name": "Grace Hopper"})
        code = client.get("/identity/member-code", headers=member).json()["code"]
        screen_token = token(client, "screen", "screen-7", store="store-a")
        with client.websocket_connect("/ws/screen/screen-7",
                                      subprotocols=["newretail.json"]) as ws:
            ws.send_json({"op": "hello", "token": screen_token})
            assert ws.receive_json()["type"] == "welcome"
            r = client.post("/identity/checkin", headers=auth(screen_token), json={"code": code})
            assert r.status_code == 200, r.text
            shown = ws.receive_json()
            assert shown["type"] == "member_offers"
            assert (shown["greeting"], shown["tier"]) == ("Welcome, Grace!", "member")
            assert shown["offers"] and {o["sku"] for o in shown["offers"]} <= IN_STORE
            raw = orjson.dumps(shown).decode()
            for secret in (signed["member_id"], PHONE, PHONE[1:], "Hopper"):
                assert secret not in raw
            idle = ws.receive_json()
            assert idle["type"] == "idle"
            assert idle["offers"] and {o["sku"] for o in idle["offers"]} <= IN_STORE
