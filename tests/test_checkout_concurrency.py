"""No oversell under real concurrency: a flash sale of 100 units and thousands of buyers,
within one process, across two web processes on one store, and across restarts."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync
import redis.asyncio as aredis

from live.commerce.types import Caller
from live.db.client import connect
from live.db.server import EmbeddedValkey
from live.errors import LiveError
from tests.commerce_helpers import JWT_SPEC, keyring, make_commerce, seed, seed_sync
from tests.utils import ServerProcess, run_server

UNITS = 100
SALE = {"sku": "kite", "price": {"amount": 499, "currency": "GBP"}, "qty": UNITS, "seconds": 600}


async def _stock_never_negative(redis: aredis.Redis) -> None:
    async for key in redis.scan_iter(match="nr:stock:*"):
        values: Any = await redis.hvals(key)
        assert all(int(v) >= 0 for v in values), key


@pytest.mark.slow
async def test_many_buyers_in_one_process_get_exactly_the_units(
    redis: aredis.Redis, store_url: str,
) -> None:
    """2,000 buyers put the sale's product in their carts during a 100-unit flash sale (with
    1,000 units in the warehouse), then 2,500 checkout attempts over 8 store connections:
    exactly 100 sold, every buyer gets an order or out_of_stock, retries the same answer."""
    await seed(redis)
    clients = [connect(store_url) for _ in range(8)]
    services = [await make_commerce(c) for c in clients]
    await services[0].start_flash(Caller("host", "host"), "s1", SALE)
    buyers = [f"m_{i:05d}" for i in range(2000)]
    gate = asyncio.Semaphore(256)  # connections opened at once stay within the store's means

    async def add(i: int, user: str) -> None:
        async with gate:
            await services[i % len(services)].add_to_cart(Caller(user, "member"), "kite", 1, "s1")

    async def buy(i: int, user: str) -> tuple[str, str]:
        svc = services[i % len(services)]
        caller = Caller(user, "member")
        try:
            async with gate:
                return user, (await svc.checkout(caller, f"k-{user}", "s1")).order["id"]
        except LiveError as err:
            return user, err.code

    try:
        await asyncio.gather(*(add(i, u) for i, u in enumerate(buyers)))
        first = dict(await asyncio.gather(*(buy(i, u) for i, u in enumerate(buyers))))
        retried = buyers[::4]
        again = await asyncio.gather(*(
            services[i % 3].checkout(Caller(u, "member"), f"k-{u}", "s1") for i, u in
            enumerate(retried) if first[u].startswith("o_")))
    finally:
        for c in clients:
            await c.aclose()
    outcomes = Counter("order" if v.startswith("o_") else v for v in first.values())
    assert outcomes == {"order": UNITS, "out_of_stock": len(buyers) - UNITS}
    assert all(r.replayed and r.order["id"] == first[r.order["member_id"]] for r in again)
    check = await make_commerce(redis)  # the others' connections are closed
    assert await check.orders.count() == UNITS
    assert (await check.catalog.stock("kite"))["warehouse"] == 1000 - UNITS
    sale = await check.flash.get("s1")
    assert sale is not None and (sale.qty_left, sale.reason) == (0, "sold_out")
    await _stock_never_negative(redis)


def _headers(sub: str, role: str = "member") -> dict[str, str]:
    return {"authorization": f"Bearer {keyring().issue(sub, role, ttl=600)}"}  # type: ignore[arg-type]


async def _buy_through(
    servers: list[ServerProcess], buyers: list[str], sid: str,
) -> dict[str, Any]:
    """Each buyer adds a kite and checks out on one server, then retries on the other."""
    limits = httpx.Limits(max_connections=64)
    clients = [httpx.AsyncClient(base_url=s.url, limits=limits, timeout=30) for s in servers]
    gate = asyncio.Semaphore(128)

    async def buy(i: int, user: str) -> tuple[str, Any]:
        h = _headers(user)
        one, other = clients[i % 2], clients[(i + 1) % 2]
        async with gate:
            r = await one.post(f"/carts/{user}/items", headers=h,
                               json={"sku": "kite", "qty": 1, "session_id": sid})
            assert r.status_code == 200, r.text
            body = {"idempotency_key": f"k-{user}", "session_id": sid}
            first = (await one.post(f"/carts/{user}/checkout", headers=h, json=body)).json()
            second = (await other.post(f"/carts/{user}/checkout", headers=h, json=body)).json()
        return user, (first, second)

    try:
        return dict(await asyncio.gather(*(buy(i, u) for i, u in enumerate(buyers))))
    finally:
        for c in clients:
            await c.aclose()


@pytest.mark.slow
def test_two_web_processes_never_oversell(
    store_url: str, sync_redis: redis_sync.Redis, tmp_path: Path,
) -> None:
    """1,200 buyers checking out twice each (2,400 attempts) through two web processes on
    one store, 100 units on sale and in stock: 100 orders, no negative stock, every answer
    true, retries give the same order."""
    seed_sync(store_url, flash_units=UNITS)
    env = {"NEWRETAIL_JWT_KEYS": JWT_SPEC}
    with run_server(store_url, tmp_path / "a", env) as a, \
            run_server(store_url, tmp_path / "b", env) as b:
        sid = httpx.post(f"{a.url}/live/sessions", json={"title": "Rush", "products": ["kite"]},
                         headers=_headers("host", "host")).json()["session_id"]
        r = httpx.post(f"{a.url}/live/sessions/{sid}/flash-sale", json=SALE,
                       headers=_headers("host", "host"))
        assert r.status_code == 201, r.text
        results = asyncio.run(_buy_through([a, b], [f"m_{i:05d}" for i in range(1200)], sid))
        admin = _headers("ops", "admin")
        stored = httpx.get(f"{b.url}/orders?limit=500", headers=admin).json()["orders"]
        product = httpx.get(f"{a.url}/catalog/products/kite").json()
    winners = {}
    for user, (first, second) in results.items():
        if "order" in first:
            winners[user] = first["order"]["id"]
            assert second == {"order": first["order"], "replayed": True}
        else:
            assert first["error"]["code"] == "out_of_stock", first
            assert second["error"]["code"] == "out_of_stock", second
    assert len(winners) == UNITS
    assert sorted(o["id"] for o in stored) == sorted(winners.values())
    assert sum(o["lines"][0]["qty"] for o in stored) == UNITS
    assert product["stock"] == 0
    assert all(int(v) >= 0 for v in sync_redis.hvals("nr:stock:kite"))


@pytest.mark.slow
def test_acknowledged_orders_survive_restarts(tmp_path: Path) -> None:
    """An order acknowledged with 201 and its stock change survive a SIGKILL of the web
    process and then of the embedded store itself."""
    store = EmbeddedValkey(tmp_path / "store")
    url = store.start()
    env = {"NEWRETAIL_JWT_KEYS": JWT_SPEC}
    try:
        [mid] = seed_sync(url, 1)
        h = _headers(mid)
        with run_server(url, tmp_path / "web", env) as server:
            httpx.post(f"{server.url}/carts/{mid}/items", headers=h,
                       json={"sku": "pot", "qty": 2})
            r = httpx.post(f"{server.url}/carts/{mid}/checkout", headers=h,
                           json={"idempotency_key": "durable"})
            assert r.status_code == 201, r.text
            order = r.json()["order"]
            server.kill()
        with run_server(url, tmp_path / "web", env) as server:
            assert httpx.get(f"{server.url}/orders/{order['id']}", headers=h).json() == order
            server.kill()
        store.kill()
        url = store.start()
        with run_server(url, tmp_path / "web", env) as server:
            assert httpx.get(f"{server.url}/orders/{order['id']}", headers=h).json() == order
            again = httpx.post(f"{server.url}/carts/{mid}/checkout", headers=h,
                               json={"idempotency_key": "durable"}).json()
            assert again == {"order": order, "replayed": True}
            stock = httpx.get(f"{server.url}/catalog/products/pot").json()
        assert stock["stock_by_location"] == {"warehouse": 1, "store-a": 1}
    finally:
        store.stop()
