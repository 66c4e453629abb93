"""Commerce over the live WebSocket: real servers, real clients (``websockets``)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync

from live.commerce.keys import cart_key
from live.hub.keys import USER_CHANNEL
from tests.commerce_helpers import JWT_SPEC, gbp, keyring, seed_sync
from tests.hub_support import Client
from tests.utils import ServerProcess, run_server

ENV = {"NEWRETAIL_JWT_KEYS": JWT_SPEC}
HOST = "host-1"


def token(sub: str, role: str) -> str:
    return keyring().issue(sub, role, ttl=600)  # type: ignore[arg-type]


def _session(server: ServerProcess) -> str:
    r = httpx.post(f"{server.url}/live/sessions", json={"title": "Drop", "products":
                   ["kite", "mug"]}, headers={"authorization": f"Bearer {token(HOST, 'host')}"})
    r.raise_for_status()
    sid: str = r.json()["session_id"]
    return sid


async def _join(server: ServerProcess, sid: str, sub: str, role: str) -> Client:
    client = await Client.open(server.ws_url, f"/ws/live/{sid}")
    welcome = await client.hello(token(sub, role))
    assert welcome["type"] == "welcome", welcome
    return client


def _is(kind: str, **fields: Any) -> Any:
    return lambda m: m.get("type") == kind and all(m.get(k) == v for k, v in fields.items())


async def _ops_scenario(server: ServerProcess, sid: str, mid: str) -> None:
    host = await _join(server, sid, HOST, "host")
    viewer = await _join(server, sid, "anon_v", "viewer")
    buyer = await _join(server, sid, mid, "member")
    try:
        state = buyer.welcome["state"]
        assert state["flash_sale"] is None and state["cart"]["lines"] == []
        assert state["stock"] == {"kite": 1000, "mug": 57}
        assert host.welcome["state"]["figures"]["orders"] == 0
        assert buyer.welcome["state"]["figures"] is None
        bad = {
            "v-flash": (viewer, "flash.start", {"sku": "kite", "price": gbp(100), "qty": 5,
                                                "seconds": 60}, "forbidden"),
            "m-flash": (buyer, "flash.stop", {}, "forbidden"),
            "unknown": (buyer, "cart.add", {"sku": "nope", "qty": 1}, "not_found"),
            "zero": (buyer, "cart.add", {"sku": "kite", "qty": 0}, "invalid_qty"),
            "huge": (buyer, "cart.add", {"sku": "kite", "qty": 10**9}, "invalid_qty"),
            "frac": (buyer, "cart.add", {"sku": "kite", "qty": 0.5}, "invalid_qty"),
            "empty": (buyer, "checkout", {"idempotency_key": "k0"}, "empty_cart"),
            "nokey": (buyer, "checkout", {}, "bad_request"),
            "anon": (viewer, "checkout", {"idempotency_key": "k"}, "sign_in_required"),
            "h-cart": (host, "cart.add", {"sku": "kite", "qty": 1}, "forbidden"),
        }
        for ref, (client, op, payload, code) in bad.items():
            reply = await client.op(op, ref, **payload)
            assert (reply["type"], reply.get("code")) == ("error", code), (ref, reply)
        start = await host.op("flash.start", "f1", sku="kite", price=gbp(450), qty=3,
                                  seconds=60)
        assert start["type"] == "ack"
        sale = await viewer.until(_is("flash_sale"))
        assert (sale["sku"], sale["price"], sale["qty_left"]) == ("kite", gbp(450), 3)
        assert (await buyer.op("cart.add", "a1", sku="kite", qty=2))["type"] == "ack"
        cart = await buyer.until(_is("cart"))
        assert cart["cart"]["total"] == gbp(900) and cart["cart"]["lines"][0]["flash_sale"]
        await buyer.send({"op": "checkout", "ref": "c1", "idempotency_key": "k1"})
        order = await buyer.until(_is("order"))
        assert order["order"]["total"] == gbp(900) and not order["replayed"]
        assert (await buyer.until(_is("ack", ref="c1")))["ref"] == "c1"
        stock = await viewer.until(_is("stock", sku="kite", left=1))
        assert stock["seq"] > sale["seq"] and set(stock) == {"type", "seq", "ts", "sku", "left"}
        again = await buyer.op("checkout", "c2", idempotency_key="k1")
        assert again["type"] == "ack"
        replay = [m for m in buyer.personal if m.get("type") == "order"]
        assert replay[-1]["replayed"] and replay[-1]["order"] == order["order"]
        figures = await host.until(lambda m: m.get("type") == "figures" and m["orders"] == 1)
        assert (figures["revenue"], figures["carts"], figures["stock"]["kite"]) == (gbp(900), 1, 1)
        assert (await viewer.op("cart.add", "v1", sku="kite", qty=1))["type"] == "ack"
        assert (await host.op("flash.stop", "s1"))["type"] == "ack"
        ended = await viewer.until(_is("flash_sale_ended"))
        assert (ended["reason"], ended["sold"]) == ("stopped", 2)
        refused = await viewer.op("flash.stop", "s2")
        assert refused["code"] == "forbidden"
    finally:
        for c in (host, viewer, buyer):
            await c.close()


@pytest.mark.slow
def test_commerce_ops_over_the_socket(
    store_url: str, sync_redis: redis_sync.Redis, tmp_path: Path,
) -> None:
    """Welcome carries cart, flash sale, stock (and figures for the host); every bad op gets
    its error code; a sale, a cart, a checkout with order before ack, a retried key, coalesced
    stock, host figures and the stop all reach the right people."""
    [mid] = seed_sync(store_url, 1)
    with run_server(store_url, tmp_path, ENV) as server:
        asyncio.run(_ops_scenario(server, _session(server), mid))


async def _devices(a: ServerProcess, b: ServerProcess, sid: str, mid: str) -> None:
    anon = await _join(a, sid, "anon_42", "viewer")
    await anon.op("cart.add", "a", sku="mug", qty=2)
    await anon.close()
    r = httpx.post(f"{a.url}/carts/anon_42/items", json={"sku": "kite", "qty": 1},
                   headers={"authorization": f"Bearer {token('anon_42', 'viewer')}"})
    assert r.status_code == 200
    phone = await _join(a, sid, mid, "member")
    await phone.op("cart.add", "p", sku="mug", qty=1)
    laptop = await _join(b, sid, mid, "member")
    assert [(x["sku"], x["qty"]) for x in laptop.welcome["state"]["cart"]["lines"]] == [
        ("mug", 1)]
    await laptop.op("cart.add", "l", sku="pot", qty=1)
    seen = await phone.until(lambda m: m.get("type") == "cart" and m["cart"]["count"] == 2)
    assert {x["sku"] for x in seen["cart"]["lines"]} == {"mug", "pot"}
    await phone.close()
    await laptop.close()
    back = await _join(a, sid, mid, "member")  # the phone reconnects
    assert {(x["sku"], x["qty"]) for x in back.welcome["state"]["cart"]["lines"]} == {
        ("mug", 1), ("pot", 1)}
    await back.close()


@pytest.mark.slow
def test_cart_follows_the_user_across_devices_and_processes(
    store_url: str, sync_redis: redis_sync.Redis, tmp_path: Path,
) -> None:
    """A cart is restored in the welcome on another device (on another process) and on
    reconnecting, and a change on one device reaches the other."""
    [mid] = seed_sync(store_url, 1)
    with run_server(store_url, tmp_path / "a", ENV) as a, \
            run_server(store_url, tmp_path / "b", ENV) as b:
        asyncio.run(_devices(a, b, _session(a), mid))


def test_a_cart_change_missed_while_resubscribing_reaches_the_other_device(
    store_url: str, sync_redis: redis_sync.Redis, tmp_path: Path,
) -> None:
    """A cart change whose announcement the process missed (the store dropped its
    subscription; a change made meanwhile is announced to no one) still reaches the
    member's devices: once resubscribed, the process sends every connected user their
    cart again."""
    [mid] = seed_sync(store_url, 1)
    with run_server(store_url, tmp_path / "a", ENV) as server:
        asyncio.run(_missed_cart(server, _session(server), mid, sync_redis))


async def _missed_cart(server: ServerProcess, sid: str, mid: str,
                       redis: redis_sync.Redis) -> None:
    phone = await _join(server, sid, mid, "member")
    laptop = await _join(server, sid, mid, "member")
    try:
        assert redis.pubsub_numsub(USER_CHANNEL)[0][1] >= 1
        # The change as the process would have missed it: in the store, announced to no one.
        redis.hset(cart_key(mid), "kite", "2")
        assert redis.client_kill_filter(_type="pubsub") >= 1
        for device in (phone, laptop):
            cart = await device.until(lambda m: m.get("type") == "cart" and m["cart"]["lines"])
            assert [(line["sku"], line["qty"]) for line in cart["cart"]["lines"]] == [
                ("kite", 2)]
        assert redis.pubsub_numsub(USER_CHANNEL)[0][1] >= 1
        # Session events still reach both after the resubscription.
        host = await _join(server, sid, HOST, "host")
        assert (await host.op("pin", "p", sku="kite"))["type"] == "ack"
        for device in (phone, laptop):
            await device.until(_is("pinned", sku="kite"))
        await host.close()
    finally:
        await phone.close()
        await laptop.close()


async def _rush(servers: list[ServerProcess], sid: str, buyers: int) -> dict[str, Any]:
    watchers = [await _join(s, sid, f"anon_w{i}", "viewer") for i, s in enumerate(servers)]
    host = await _join(servers[0], sid, HOST, "host")
    assert (await host.op("flash.start", "go", sku="kite", price=gbp(250), qty=100,
                          seconds=600))["type"] == "ack"
    gate = asyncio.Semaphore(100)

    async def buy(i: int) -> tuple[str, list[str]]:
        user = f"m_{i:05d}"
        async with gate:
            client = await _join(servers[i % 2], sid, user, "member")
            try:
                assert (await client.op("cart.add", "a", sku="kite", qty=1))["type"] == "ack"
                answers = []
                for attempt in range(3):
                    await client.send({"op": "checkout", "ref": f"c{attempt}",
                                       "idempotency_key": "once"})
                    msg = await client.until(lambda m: m.get("type") in ("order", "error"))
                    answers.append(msg["order"]["id"] if msg["type"] == "order"
                                   else msg["code"])
                return user, answers
            finally:
                await client.close()

    results = dict(await asyncio.gather(*(buy(i) for i in range(buyers))))
    ends = []
    for w in watchers:
        ends.append(await w.until(_is("flash_sale_ended")))
        if not any(_is("stock", sku="kite", left=0)(e) for e in w.events):
            await w.until(_is("stock", sku="kite", left=0))
    for c in (*watchers, host):
        await c.close()
    return {"results": results, "ends": ends, "watchers": watchers}


@pytest.mark.slow
def test_flash_sale_rush_over_sockets_on_two_processes(
    store_url: str, sync_redis: redis_sync.Redis, tmp_path: Path,
) -> None:
    """600 buyers on sockets spread over two processes try checkout three times each
    (1,800 attempts) on 100 units: exactly 100 orders, each retry gets the same order or
    out_of_stock again, every viewer sees one flash_sale_ended (sold out) and coalesced
    stock events ending at 0."""
    seed_sync(store_url, flash_units=100)
    with run_server(store_url, tmp_path / "a", ENV) as a, \
            run_server(store_url, tmp_path / "b", ENV) as b:
        out = asyncio.run(_rush([a, b], _session(a), 600))
    results: dict[str, list[str]] = out["results"]
    orders = {ans[0] for ans in results.values() if ans[0].startswith("o_")}
    assert len(orders) == 100
    assert all(len(set(ans)) == 1 for ans in results.values()), "a retry changed its answer"
    assert Counter("order" if a[0].startswith("o_") else a[0] for a in results.values()) == {
        "order": 100, "out_of_stock": 500}
    assert [(e["reason"], e["sold"]) for e in out["ends"]] == [("sold_out", 100)] * 2
    for w in out["watchers"]:
        assert sum(1 for e in w.events if e["type"] == "flash_sale_ended") == 1
        # Stock is coalesced: whatever the number of orders, at most one stock event of the
        # product per quarter second (ts is in ms; half a second of slack for the first
        # and last publish), each in the spec's shape.
        stock = [e for e in w.events if e["type"] == "stock"]
        assert all(set(e) == {"type", "seq", "ts", "sku", "left"} for e in stock)
        times = [e["ts"] for e in stock if e["sku"] == "kite"]
        assert 2 <= len(times) < 100
        assert (len(times) - 1) * 250 <= times[-1] - times[0] + 500, times
    assert int(sync_redis.hget("nr:stock:kite", "warehouse") or -1) == 0
    assert sync_redis.zcard("nr:orders") == 100


async def _expiry(servers: list[ServerProcess], sid: str) -> list[Client]:
    watchers = [await _join(s, sid, f"anon_e{i}", "viewer") for i, s in enumerate(servers)]
    host = await _join(servers[0], sid, HOST, "host")
    assert (await host.op("flash.start", "go", sku="mug", price=gbp(100), qty=5,
                          seconds=10))["type"] == "ack"
    for w in watchers:
        ended = await w.until(_is("flash_sale_ended"), timeout=20)
        assert ended["reason"] == "expired"
    late = await _join(servers[1], sid, "anon_late", "viewer")
    assert late.welcome["state"]["flash_sale"] is None
    for c in (*watchers, host, late):
        await c.close()
    return watchers


@pytest.mark.slow
def test_expiry_is_announced_once_across_processes(
    store_url: str, sync_redis: redis_sync.Redis, tmp_path: Path,
) -> None:
    """A 10 s sale ends by itself: both processes sweep, viewers on each see exactly one
    flash_sale_ended (expired) with one seq, and a late joiner sees no sale."""
    seed_sync(store_url)
    with run_server(store_url, tmp_path / "a", ENV) as a, \
            run_server(store_url, tmp_path / "b", ENV) as b:
        watchers = asyncio.run(_expiry([a, b], _session(a)))
    seqs = [[e["seq"] for e in w.events if e["type"] == "flash_sale_ended"] for w in watchers]
    assert len(seqs[0]) == 1 and seqs[0] == seqs[1]
