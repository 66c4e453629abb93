"""Offers and training benchmark: ``python -m loadtests.bench_offers``.

Measures, in one run: server-side offers latency (p50/p99) with 50,000 synthetic products
(the full ``OfferService.offers`` path against the store, and the recommender's in-process
part alone), training time on the Online Retail development file (when present) and on
1,000,000 synthetic events, and the FAISS index memory, exact and HNSW.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import numpy as np

from identity.members import Members
from live.catalog import Catalog
from live.offers import OfferService
from live.store import EmbeddedStore, connect
from recommender.evaluate import make_split, parse_time, read_retail
from recommender.index import ItemIndex
from recommender.model import write_version
from recommender.service import Recommender, history_key
from recommender.train import AlsParams, confidence_matrix, event_weight, train_als

DIM = 64


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples) * 1000, q))


async def no_one_erased(user: str) -> bool:
    return False


async def bench_offers(url: str, model_dir: Path, products: int, requests: int,
                       members_out: list[str]) -> list[tuple[str, str]]:
    rng = np.random.default_rng(0)
    redis = connect(url)
    await redis.flushdb()
    pipe = redis.pipeline(transaction=False)
    for i in range(products):
        sku = f"{100000 + i}"
        pipe.hset(f"nr:product:{sku}", mapping={
            "sku": sku, "title": f"Product {i}", "category": f"c{i % 40}",
            "price": "9.99", "image": ""})
        pipe.zadd("nr:catalog", {sku: i})
        pipe.hset(f"nr:stock:{sku}", mapping={"warehouse": int(rng.integers(0, 4))})
        if i % 5000 == 4999:
            await pipe.execute()
    await pipe.execute()
    skus = [f"{100000 + i}" for i in range(products)]
    users = [f"bench-u{i}" for i in range(5000)]
    item_f = rng.standard_normal((products, DIM)).astype(np.float32)
    user_f = rng.standard_normal((len(users), DIM)).astype(np.float32)
    pop = rng.random(products).astype(np.float32)
    write_version(model_dir, skus, users, item_f, user_f, pop, AlsParams(factors=DIM), 20_000)
    rec = Recommender(redis, model_dir, no_one_erased)
    await rec.refresh()
    members = Members(redis, b"bench-pepper-0123456789abcdef")
    svc = OfferService(rec, Catalog(redis), members, lambda sid: _no_products())
    mids = []
    now = time.time()
    for _ in range(200):
        m = await members.create("Bench", consent={"personalization": True}, spend=800)
        for j in range(20):
            await redis.lpush(history_key(m.id), f"{skus[int(rng.integers(products))]}\t"
                              f"{'purchase' if j % 4 == 0 else 'view'}\t{now - j * 3600}\t1")
        mids.append(m.id)
    for mid in mids[:20]:  # warm up
        await svc.offers(mid, 10, None, None)
    full, inproc = [], []
    for k in range(requests):
        mid = mids[k % len(mids)]
        t0 = time.perf_counter()
        await svc.offers(mid, 10, None, None)
        full.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await rec.personal(mid, 40)
        inproc.append(time.perf_counter() - t0)
    members_out.extend(mids)
    await redis.aclose()
    kind = rec.model.index.kind if rec.model else "?"
    return [
        (f"offers, full path, {products:,} products ({kind}) p50", f"{pct(full, 50):.3f} ms"),
        (f"offers, full path, {products:,} products ({kind}) p99", f"{pct(full, 99):.3f} ms"),
        ("recommender part (fold-in + ANN + blend) p50", f"{pct(inproc, 50):.3f} ms"),
        ("recommender part (fold-in + ANN + blend) p99", f"{pct(inproc, 99):.3f} ms"),
    ]


async def _no_products() -> list[str]:
    return []


async def bench_http(url: str, var_dir: Path, mids: list[str], rate: int, seconds: float
                     ) -> list[tuple[str, str]]:
    """Open-loop load on ``GET /offers`` of a ``newretail serve`` process: one request
    every 1/rate s whatever the answers, latency seen by the client and the server."""
    import httpx

    from identity.tokens import KeyRing
    from tests.utils import run_server

    ring = KeyRing.load_or_create(var_dir / "secrets" / "jwt-keys.json")
    headers = {"authorization": f"Bearer {ring.issue('bench', 'admin', ttl=3600)}"}
    client_ms: list[float] = []
    server_ms: list[float] = []
    failed = 0
    with run_server(url, var_dir) as server:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=server.url, headers=headers, limits=limits,
                                     timeout=30) as http:
            for mid in mids[:50]:
                await http.get("/offers", params={"member_id": mid})

            async def one(mid: str) -> None:
                nonlocal failed
                t0 = time.perf_counter()
                try:
                    r = await http.get("/offers", params={"member_id": mid, "n": 10})
                except httpx.HTTPError:
                    failed += 1
                    return
                client_ms.append((time.perf_counter() - t0) * 1000)
                if r.status_code != 200:
                    failed += 1
                else:
                    server_ms.append(r.json()["took_ms"])

            tasks = []
            start = time.perf_counter()
            total = int(rate * seconds)
            for k in range(total):
                delay = start + k / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(mids[k % len(mids)])))
            await asyncio.gather(*tasks)
            achieved = total / (time.perf_counter() - start)
    c, s_ = np.array(client_ms), np.array(server_ms)
    return [
        (f"HTTP /offers at {rate}/s offered ({achieved:.0f}/s sent), failed", str(failed)),
        ("HTTP /offers client-side p50 / p99",
         f"{np.percentile(c, 50):.2f} / {np.percentile(c, 99):.2f} ms"),
        ("HTTP /offers server-side (took_ms) p50 / p99",
         f"{np.percentile(s_, 50):.2f} / {np.percentile(s_, 99):.2f} ms"),
    ]


def bench_training(data: Path) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    if data.exists():
        t0 = time.perf_counter()
        retail = list(read_retail(data))
        split = make_split(retail, parse_time("2100-01-01"))
        now = float(split.train_t.max())
        w = np.array([event_weight("purchase", t, now, q) for t, q in
                      zip(split.train_t.tolist(), split.train_q.tolist(), strict=True)])
        m = confidence_matrix(split.train_u, split.train_i, w, len(split.users),
                              len(split.items))
        train_als(m, AlsParams())
        rows.append((f"train, dev dataset ({len(retail):,} purchases, read + fit)",
                     f"{time.perf_counter() - t0:.1f} s"))
    else:
        rows.append(("train, dev dataset", f"skipped: {data} not found"))
    rng = np.random.default_rng(1)
    n = 1_000_000
    t0 = time.perf_counter()
    uu = rng.integers(0, 100_000, n)
    ii = np.minimum(rng.zipf(1.3, n) - 1, 49_999)
    m = confidence_matrix(uu, ii, np.full(n, 2.0), 100_000, 50_000)
    train_als(m, AlsParams())
    rows.append(("train, 1,000,000 synthetic events (100k users, 50k items)",
                 f"{time.perf_counter() - t0:.1f} s"))
    return rows


def bench_memory(products: int) -> list[tuple[str, str]]:
    items = np.random.default_rng(2).standard_normal((products, DIM)).astype(np.float32)
    flat = ItemIndex.build(items, hnsw_threshold=products + 1)
    hnsw = ItemIndex.build(items, hnsw_threshold=0)
    return [
        (f"index memory, flat IP, {products:,} x {DIM}", f"{flat.memory_bytes() / 2**20:.1f} MiB"),
        (f"index memory, HNSW32, {products:,} x {DIM}", f"{hnsw.memory_bytes() / 2**20:.1f} MiB"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="../shared/data/online_retail_dev.csv.gz")
    parser.add_argument("--products", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rate", type=int, default=0,
                        help="HTTP requests per second on a served process (0: skip)")
    parser.add_argument("--seconds", type=float, default=10.0, help="HTTP load duration")
    parser.add_argument("--redis-url", default=None,
                        help="a database of its own (it is flushed); default: an embedded store")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = None
        url = args.redis_url
        if url is None:
            store = EmbeddedStore(Path(tmp) / "store")
            url = store.start()
        try:
            mids: list[str] = []
            rows = asyncio.run(bench_offers(url, Path(tmp) / "models", args.products,
                                            args.requests, mids))
            if args.rate > 0:
                rows += asyncio.run(bench_http(url, Path(tmp), mids, args.rate, args.seconds))
        finally:
            if store is not None:
                store.stop()
    rows += bench_memory(args.products)
    rows += bench_training(Path(args.data))
    width = max(len(k) for k, _ in rows)
    print(f"{'measure':<{width}}  value")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
