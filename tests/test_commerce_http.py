"""Carts, checkout, flash sales and orders over HTTP (the app under TestClient)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from identity.tokens import KeyRing
from tests.commerce_helpers import gbp, seed_sync
from tests.identity_support import sign_in


def _auth(client: TestClient, sub: str, role: str) -> dict[str, str]:
    ring: KeyRing = client.app.state.keyring  # type: ignore[attr-defined]
    return {"authorization": f"Bearer {ring.issue(sub, role, ttl=300)}"}  # type: ignore[arg-type]


def test_cart_checkout_and_orders(client: TestClient, store_url: str) -> None:
    """A member fills a cart, checks out (201), retries the key (200, same order), then sees
    the order in /orders; the admin sees everyone's, another member gets 404 for it."""
    a, b = seed_sync(store_url, 2)
    ha, hb = _auth(client, a, "member"), _auth(client, b, "member")
    r = client.post(f"/carts/{a}/items", json={"sku": "mug", "qty": 2}, headers=ha)
    assert r.status_code == 200 and r.json()["cart"]["total"] == gbp(2500)
    assert client.get(f"/carts/{a}", headers=ha).json()["cart"]["count"] == 2
    first = client.post(f"/carts/{a}/checkout", json={"idempotency_key": "x1"}, headers=ha)
    assert first.status_code == 201
    order = first.json()["order"]
    assert order["lines"] == [{"sku": "mug", "qty": 2, "list_price": gbp(1250),
                               "discount": gbp(0), "price": gbp(1250), "location": "store-a"}]
    again = client.post(f"/carts/{a}/checkout", json={"idempotency_key": "x1"}, headers=ha)
    assert again.status_code == 200 and again.json() == {"order": order, "replayed": True}
    assert client.get("/orders", headers=ha).json()["orders"] == [order]
    assert client.get(f"/orders/{order['id']}", headers=ha).json() == order
    assert client.get(f"/orders/{order['id']}", headers=hb).status_code == 404
    assert client.get("/orders", headers=hb).json()["orders"] == []
    admin = _auth(client, "ops", "admin")
    assert client.get("/orders?limit=1", headers=admin).json()["orders"] == [order]
    product = client.get("/catalog/products/mug").json()
    assert product["stock_by_location"]["store-a"] == 3


@pytest.mark.parametrize(("path", "body", "status", "code"), [
    ("/carts/{a}/items", {"sku": "nope", "qty": 1}, 404, "not_found"),
    ("/carts/{a}/items", {"sku": "mug", "qty": 0}, 400, "invalid_qty"),
    ("/carts/{a}/items", {"sku": "mug", "qty": -2}, 400, "invalid_qty"),
    ("/carts/{a}/items", {"sku": "mug", "qty": 10**20}, 400, "invalid_qty"),
    ("/carts/{a}/items", {"sku": "mug", "qty": "1"}, 400, "invalid_qty"),
    ("/carts/{a}/items", {"sku": "mug", "qty": 1.0}, 400, "invalid_qty"),
    ("/carts/{a}/items", ["mug"], 400, "bad_request"),
    ("/carts/{b}/items", {"sku": "mug", "qty": 1}, 403, "forbidden"),
    ("/carts/{b}/checkout", {"idempotency_key": "k"}, 403, "forbidden"),
    ("/carts/{a}/checkout", {"idempotency_key": "k"}, 409, "empty_cart"),
    ("/carts/{a}/checkout", {}, 400, "bad_request"),
    ("/carts/{a}/checkout", {"idempotency_key": "k", "session_id": 5}, 400, "bad_request"),
    ("/live/sessions/s1/flash-sale", {"sku": "mug", "price": gbp(1), "qty": 1, "seconds": 60},
     403, "forbidden"),
])
def test_bad_requests_get_a_clear_error(
    client: TestClient, store_url: str, path: str, body: object, status: int, code: str,
) -> None:
    """Every bad input gets its status and code, and leaves stock, carts and orders as they were."""
    a, b = seed_sync(store_url, 2)
    ha = _auth(client, a, "member")
    client.post(f"/carts/{b}/items", json={"sku": "kite", "qty": 1},
                headers=_auth(client, b, "member"))
    r = client.post(path.format(a=a, b=b), json=body, headers=ha)
    assert r.status_code == status and r.json()["error"]["code"] == code, r.text
    assert client.get(f"/carts/{a}", headers=ha).json()["cart"]["count"] == 0
    assert client.get(f"/carts/{b}", headers=ha).status_code == 403
    assert client.get("/catalog/products/mug").json()["stock"] == 57
    assert client.get("/orders", headers=_auth(client, "ops", "admin")).json()["orders"] == []


def test_viewers_are_asked_to_sign_in_to_buy(client: TestClient, store_url: str) -> None:
    """An anonymous viewer may fill a cart but checkout says sign_in_required."""
    seed_sync(store_url, 2)
    hv = _auth(client, "anon_9", "viewer")
    assert client.post("/carts/anon_9/items", json={"sku": "kite", "qty": 1},
                       headers=hv).status_code == 200
    r = client.post("/carts/anon_9/checkout", json={"idempotency_key": "k"}, headers=hv)
    assert r.status_code == 403 and r.json()["error"]["code"] == "sign_in_required"
    assert client.get("/orders", headers=hv).status_code == 403
    assert client.get("/carts/anon_9").status_code == 401


def test_the_anonymous_cart_follows_the_viewer_who_signs_in(
    client: TestClient, store_url: str,
) -> None:
    """A viewer fills a cart anonymously, signs in with that anonymous id (the identity
    hook), and finds the lines in the member's cart, quantities added; then buys them."""
    seed_sync(store_url, 0)
    anon = client.post("/identity/anonymous").json()
    hv = {"authorization": f"Bearer {anon['token']}"}
    for sku, qty in (("mug", 2), ("kite", 1)):
        r = client.post(f"/carts/{anon['anon_id']}/items", json={"sku": sku, "qty": qty},
                        headers=hv)
        assert r.status_code == 200, r.text
    signed = sign_in(client, "07700 900222", anon_id=anon["anon_id"])
    assert signed["stitched"] is True
    mid, hm = signed["member_id"], {"authorization": f"Bearer {signed['token']}"}
    cart = client.get(f"/carts/{mid}", headers=hm).json()["cart"]
    assert {x["sku"]: x["qty"] for x in cart["lines"]} == {"mug": 2, "kite": 1}
    assert client.get(f"/carts/{anon['anon_id']}", headers=hv).json()["cart"]["count"] == 0
    r = client.post(f"/carts/{mid}/checkout", json={"idempotency_key": "first"}, headers=hm)
    assert r.status_code == 201 and r.json()["order"]["total"] == gbp(4499)


def test_host_runs_a_flash_sale(client: TestClient, store_url: str) -> None:
    """A host starts a sale (201) in a session that exists, anyone reads it, a second start
    is 409, stop ends it, and figures are for hosts only."""
    [a, _] = seed_sync(store_url, 2)
    hh = _auth(client, "host_1", "host")
    body: dict[str, Any] = {"sku": "kite", "price": gbp(500), "qty": 10, "seconds": 30,
                            "limit": 2}
    unknown = client.post("/live/sessions/nope/flash-sale", json=body, headers=hh)
    assert unknown.status_code == 404
    s1 = client.post("/live/sessions", json={"title": "Drop", "products": ["kite"]},
                     headers=hh).json()["session_id"]
    r = client.post(f"/live/sessions/{s1}/flash-sale", json=body, headers=hh)
    assert r.status_code == 201 and r.json()["qty_left"] == 10
    assert client.get(f"/live/sessions/{s1}/flash-sale").json()["flash_sale"]["price"] == gbp(500)
    assert client.post(f"/live/sessions/{s1}/flash-sale", json=body,
                       headers=hh).json()["error"]["code"] == "flash_sale_active"
    ha = _auth(client, a, "member")
    stray = client.post(f"/carts/{a}/items", json={"sku": "kite", "qty": 2,
                                                    "session_id": "nope"}, headers=ha)
    assert stray.status_code == 404
    client.post(f"/carts/{a}/items", json={"sku": "kite", "qty": 2, "session_id": s1},
                headers=ha)
    order = client.post(f"/carts/{a}/checkout", json={"idempotency_key": "f",
                                                      "session_id": s1}, headers=ha)
    assert order.json()["order"]["total"] == gbp(1000)
    figures = client.get(f"/live/sessions/{s1}/figures", headers=hh).json()
    assert (figures["orders"], figures["revenue"], figures["stock"]["kite"]) == (1, gbp(1000), 8)
    assert client.get(f"/live/sessions/{s1}/figures", headers=ha).status_code == 403
    assert client.delete(f"/live/sessions/{s1}/flash-sale", headers=hh).status_code == 200
    assert client.get(f"/live/sessions/{s1}/flash-sale").json()["flash_sale"] is None
    assert client.delete(f"/live/sessions/{s1}/flash-sale", headers=hh).status_code == 404
