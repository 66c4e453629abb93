"""Offers and training benchmark: ``python -m loadtests.bench_offers``.

Measures, in one run, with 50,000 synthetic products (HNSW index) in a real store:

- offers server-side: the full ``OfferService.offers`` path against the store (wall p50/p99
  and the web process's own CPU per offer, which does not depend on what else runs on the
  machine), and the recommender's in-process part alone (fold-in, ANN search, blend);
- offers through HTTP: ``GET /offers`` of a ``newretail serve`` process under open-loop
  load (a request every 1/rate s whatever the answers, from a bare keep-alive client that
  spends little CPU), client round trip and the handler's ``server-timing``;
- erasure: ``erase_user`` of one member in a log of many events, beside one full scan of
  that log (what erasure would cost without the per-member index);
- the FAISS index memory (exact and HNSW) and training time on the Online Retail
  development file (when present) and on 1,000,000 synthetic events.

Prints a table and writes ``loadtests/results/offers.{md,json,png}``.

    python -m loadtests.bench_offers [--data PATH] [--rates 250,500] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import psutil

from identity.members import Members
from identity.tokens import KeyRing
from live.commerce.catalog import Catalog
from live.db.client import connect
from live.db.server import EmbeddedValkey
from live.db.tracked import Tracked
from live.offers.service import COPY_MAX_KEYS, COPY_PREFIXES, OfferService
from live.web.app import tune_gc
from recommender.discovery import Purchases, fit_discovery
from recommender.evaluate import make_split, parse_time, read_retail
from recommender.events import EventLog, history_key
from recommender.index import ItemIndex
from recommender.keys import LOG
from recommender.model import current_version, read_version, write_version
from recommender.service import Recommender
from recommender.train import AlsParams, confidence_matrix, event_weight, train_als
from recommender.types import Event

DIM = 64
RESULTS = Path(__file__).resolve().parent / "results"
GOAL_SERVER_P99_MS = 2.0
GOAL_HTTP_P99_MS = 5.0


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples), q)) if samples else float("nan")


@dataclass
class Figures:
    rows: list[tuple[str, str]] = field(default_factory=list)
    curves: dict[str, list[float]] = field(default_factory=dict)  # latency samples, ms
    seconds: dict[str, float] = field(default_factory=dict)  # training times

    def add(self, name: str, value: str) -> None:
        self.rows.append((name, value))
        print(f"  {name}: {value}", file=sys.stderr, flush=True)


async def no_one_erased(users: object) -> set[str]:
    return set()


async def no_products(session_id: str) -> list[str]:
    return []


async def seed(url: str, model_dir: Path, products: int) -> list[str]:
    """50,000 products in 40 categories with 0-3 units each, a model over them, and 200
    members with consent and 20 recent events each; returns the member ids."""
    rng = np.random.default_rng(0)
    redis = connect(url)
    await redis.flushdb()
    pipe = redis.pipeline(transaction=False)
    for i in range(products):
        sku = f"{100000 + i}"
        pipe.hset(f"nr:product:{sku}", mapping={
            "sku": sku, "title": f"Product {i}", "category": f"c{i % 40}",
            "price": 999, "currency": "GBP", "image": ""})
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
    members = Members(redis, b"bench-pepper-0123456789abcdef")
    mids = []
    now = time.time()
    for _ in range(200):
        m = await members.create("Bench", consent={"personalization": True}, spend=800)
        for j in range(20):
            await redis.lpush(history_key(m.id), f"{skus[int(rng.integers(products))]}\t"
                              f"{'purchase' if j % 4 == 0 else 'view'}\t{now - j * 3600}\t1")
        mids.append(m.id)
    await redis.aclose()
    return mids


async def bench_server_side(url: str, model_dir: Path, mids: list[str], requests: int,
                            fig: Figures) -> None:
    redis = connect(url)
    rec = Recommender(redis, model_dir, no_one_erased)
    await rec.refresh()
    members = Members(redis, b"bench-pepper-0123456789abcdef")
    plain = OfferService(rec, Catalog(redis), members, no_products)
    await plain.products_warmed()
    for mid in mids[:50]:
        await plain.offers(mid, 10, None, None)
    tune_gc()  # the collector as a web process runs it, once started
    kind = rec.model.index.kind if rec.model else "?"
    n = len(rec.model.item_ids) if rec.model else 0
    copy = Tracked(url, COPY_PREFIXES, max_keys=COPY_MAX_KEYS)
    await copy.start(wait=5.0)
    with_copy = OfferService(rec, Catalog(redis), members, no_products, copy)
    await with_copy.products_warmed()
    # computed: every offer folds in, searches and blends (a member's first offer after an
    # event of theirs); kept: the member asked within a minute with the same history;
    # kept, copy: the same with the process's copy of what offers read (no store trip).
    for label, keep, svc in (("computed", 0.0, plain), ("kept", 60.0, plain),
                             ("kept, copy", 60.0, with_copy)):
        rec.taste_seconds = keep
        if keep:  # every member asked once already, as in a shop that has run a while
            for mid in mids:
                await svc.offers(mid, 10, None, None)
        full, cpu, core = [], [], []
        for k in range(requests):
            mid = mids[k % len(mids)]
            c0, t0 = time.process_time(), time.perf_counter()
            body = await svc.offers(mid, 10, None, None)
            full.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
            if len(body["offers"]) != 10:
                raise RuntimeError(f"short slate: {body}")
            if label == "computed":
                t0 = time.perf_counter()
                await rec.personal(mid, 40)
                core.append((time.perf_counter() - t0) * 1000)
        fig.add(f"offers, full path, {n:,} products ({kind}), taste {label}, p50 / p99 wall",
                f"{pct(full, 50):.2f} / {pct(full, 99):.2f} ms "
                f"(goal p99 < {GOAL_SERVER_P99_MS} ms)")
        fig.add(f"offers, full path, taste {label}, web process CPU per offer, p50 / p99",
                f"{pct(cpu, 50):.2f} / {pct(cpu, 99):.2f} ms")
        fig.curves[f"in process, full path, taste {label}"] = full
        if core:
            fig.add("recommender part (fold-in + ANN + blend), p50 / p99",
                    f"{pct(core, 50):.2f} / {pct(core, 99):.2f} ms")
            fig.curves["in process, recommender part"] = core
    await copy.stop()
    await redis.aclose()


def two_stage_version(model_dir: Path, out_dir: Path, users: int = 5000, per_user: int = 30
                      ) -> tuple[str, float]:
    """The seeded version again, with rankers trained on synthetic purchases (Zipf over
    the products, 30 per user over 120 days) over its products and users, in
    ``out_dir``; returns the version and the rankers' training seconds."""
    model = read_version(model_dir, current_version(model_dir) or "")
    rng = np.random.default_rng(2)
    n = users * per_user
    now = time.time()
    p = Purchases(rng.integers(0, users, n).astype(np.int64),
                  (np.minimum(rng.zipf(1.3, n) - 1, len(model.item_ids) - 1)
                   + rng.integers(0, 7, n)) % len(model.item_ids),
                  now - rng.uniform(0, 120, n) * 86_400.0, np.ones(n, np.int64), users,
                  len(model.item_ids))
    t0 = time.perf_counter()
    disc = fit_discovery(p, now, als=AlsParams(factors=DIM, iterations=5))
    seconds = time.perf_counter() - t0
    version = write_version(out_dir, model.item_ids, model.user_ids, model.item_factors,
                            model.user_factors, model.popularity, model.params, 20_000, disc)
    return version, seconds


async def bench_two_stage(url: str, plain_dir: Path, two_dir: Path, mids: list[str],
                          requests: int, fig: Figures) -> None:
    """Offers computed afresh (no kept taste) side by side, one request of each in turn:
    the current engine (ALS blend), the two-stage full slate and the discovery slate."""
    redis = connect(url)
    members = Members(redis, b"bench-pepper-0123456789abcdef")
    variants: list[tuple[str, Recommender, OfferService, str, list[float], list[float],
                         list[float]]] = []
    for label, folder, slate in (("ALS blend (current engine), slate=all", plain_dir, "all"),
                                 ("two-stage, slate=all", two_dir, "all"),
                                 ("two-stage, slate=discover", two_dir, "discover")):
        rec = Recommender(redis, folder, no_one_erased)
        await rec.refresh()
        rec.taste_seconds = 0.0
        svc = OfferService(rec, Catalog(redis), members, no_products)
        await svc.products_warmed()
        for mid in mids[:50]:
            await svc.offers(mid, 10, None, None, slate)
        variants.append((label, rec, svc, slate, [], [], []))
    tune_gc()
    for k in range(requests):
        mid = mids[k % len(mids)]
        for _label, rec, svc, slate, full, cpu, core in variants:
            c0, t0 = time.process_time(), time.perf_counter()
            body = await svc.offers(mid, 10, None, None, slate)
            full.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
            if len(body["offers"]) != 10:
                raise RuntimeError(f"short slate: {body}")
            hist = await rec.history(mid)
            t0 = time.perf_counter()
            vec = rec.vector(mid, hist)
            (rec.discover_personal if slate == "discover" else rec.blend_personal)(
                mid, hist, vec, 40, set())
            core.append((time.perf_counter() - t0) * 1000)
    model = variants[0][1].model
    n = len(model.item_ids) if model is not None else 0
    for label, _rec, _svc, _slate, full, cpu, core in variants:
        fig.add(f"offers computed afresh, {n:,} products, {label}, p50 / p99 wall",
                f"{pct(full, 50):.2f} / {pct(full, 99):.2f} ms "
                f"(goal p99 < {GOAL_SERVER_P99_MS} ms)")
        fig.add(f"  {label}: web process CPU per offer, p50 / p99",
                f"{pct(cpu, 50):.2f} / {pct(cpu, 99):.2f} ms")
        fig.add(f"  {label}: recommender part (fold-in + candidates + ranking), p50 / p99",
                f"{pct(core, 50):.2f} / {pct(core, 99):.2f} ms")
        fig.curves[f"computed afresh, {label}"] = full
    await redis.aclose()


class Connection:
    """A bare HTTP/1.1 keep-alive connection: the client spends little CPU, so the
    server (on the same machine) is what gets measured."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 host: str, token: str) -> None:
        self.reader, self.writer = reader, writer
        self.head = f"host: {host}\r\nauthorization: Bearer {token}\r\n\r\n".encode()

    @classmethod
    async def open(cls, port: int, token: str) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, f"127.0.0.1:{port}", token)

    async def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        self.writer.write(f"GET {path} HTTP/1.1\r\n".encode() + self.head)
        status_line = await self.reader.readline()
        headers: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def open_loop(port: int, token: str, mids: list[str], rate: int, seconds: float
                    ) -> tuple[list[float], list[float], int, float]:
    """``rate`` requests per second for ``seconds``: client and server ms, failures, the
    rate achieved."""
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(64):
        pool.put_nowait(await Connection.open(port, token))
    # warm up: connections, product cache, model pages, and every member asked once (their
    # tastes are then kept, as in a shop that has run a while)
    for k in range(max(100, len(mids))):
        conn = await pool.get()
        await conn.get(f"/offers?member_id={mids[k % len(mids)]}&n=10")
        pool.put_nowait(conn)
    client: list[float] = []
    server: list[float] = []
    failed = 0

    async def one(mid: str) -> None:
        nonlocal failed
        conn = await pool.get()
        t0 = time.perf_counter()
        try:
            status, headers, _ = await asyncio.wait_for(
                conn.get(f"/offers?member_id={mid}&n=10"), 30)
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            failed += 1
            return
        client.append((time.perf_counter() - t0) * 1000)
        pool.put_nowait(conn)
        if status != 200:
            failed += 1
        else:
            server.append(float(headers["server-timing"].split("dur=")[1]))

    loop = asyncio.get_running_loop()
    total = int(rate * seconds)
    tasks = []
    t0 = loop.time()
    for k in range(total):
        delay = t0 + k / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the arrivals, not waiting for answers
        tasks.append(asyncio.create_task(one(mids[k % len(mids)])))
    await asyncio.gather(*tasks)
    achieved = total / (loop.time() - t0)
    while not pool.empty():
        await pool.get_nowait().close()
    return client, server, failed, achieved


def wait_products_cached(base: str, token: str, mid: str, products: int) -> None:
    """One request starts the server's product cache warm-up; wait (bounded) until it
    holds the catalog, as a server that has run a while does."""
    import httpx

    httpx.get(f"{base}/offers", params={"member_id": mid},
              headers={"authorization": f"Bearer {token}"}, timeout=30)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for line in httpx.get(f"{base}/metrics", timeout=30).text.splitlines():
            if line.startswith("newretail_offers_products_cached ") and float(
                    line.split()[1]) >= products:
                return
        time.sleep(0.5)
    print("  product cache not warm after 120 s; measuring anyway", file=sys.stderr)


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a server and its worker processes."""
    root = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])


def bench_http(url: str, var_dir: Path, mids: list[str], products: int, rates: list[int],
               seconds: float, workers: list[int], fig: Figures) -> None:
    from loadtests.server import run_server

    ring = KeyRing.load_or_create(var_dir / "secrets" / "jwt-keys.json")
    token = ring.issue("bench", "admin", ttl=3600)
    for n in workers:
        procs = f"{n} web process{'es' if n > 1 else ''}"
        with run_server(url, var_dir, workers=n, timeout=120) as server:
            # each worker warms its own product cache; a few requests reach them all
            for _ in range(n):
                wait_products_cached(server.url, token, mids[0], products)
            for rate in rates:
                cpu0 = server_cpu(server.process.pid)
                client, srv, failed, achieved = asyncio.run(
                    open_loop(server.port, token, mids, rate, seconds))
                cpu_ms = (server_cpu(server.process.pid) - cpu0) * 1000 / (len(client) + 100
                                                                             or 1)
                name = f"HTTP /offers at {rate}/s, {procs}"
                fig.add(f"{name} ({achieved:.0f}/s sent, {failed} failed), client p50 / p99",
                        f"{pct(client, 50):.2f} / {pct(client, 99):.2f} ms")
                fig.add(f"{name}, server-timing p50 / p99",
                        f"{pct(srv, 50):.2f} / {pct(srv, 99):.2f} ms "
                        f"(goal client p99 < {GOAL_HTTP_P99_MS} ms at 500/s)")
                fig.add(f"{name}, server CPU per request", f"{cpu_ms:.2f} ms")
                fig.curves[f"HTTP client, {rate}/s, {procs}"] = client


async def bench_erasure(url: str, events: int, fig: Figures) -> None:
    """Erase one member (100 events) from a log of ``events``; one full read of the log
    beside it is what erasure cost when it scanned."""
    redis = connect(url)
    await redis.delete(LOG)
    log = EventLog(redis)
    now = time.time()
    users = events // 100
    batch: list[Event] = []
    for k in range(events):
        batch.append(Event(f"erase-u{k % users}", f"{100000 + k % 5000}", "view", now))
        if len(batch) == 5000:
            await log.append(batch)
            batch = []
    await log.append(batch)
    rec = Recommender(redis, Path("unused"), no_one_erased)
    t0 = time.perf_counter()
    await rec.erase_user(["erase-u7"])
    erase_ms = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    seen = 0
    async for _ in log.read():
        seen += 1
    scan_ms = (time.perf_counter() - t0) * 1000
    await redis.aclose()
    fig.add(f"erase_user, one member with 100 events in a log of {seen:,}",
            f"{erase_ms:.1f} ms (one full scan of that log: {scan_ms:,.0f} ms)")


def bench_memory(products: int, fig: Figures) -> None:
    items = np.random.default_rng(2).standard_normal((products, DIM)).astype(np.float32)
    flat = ItemIndex.build(items, hnsw_threshold=products + 1)
    hnsw = ItemIndex.build(items, hnsw_threshold=0)
    fig.add(f"index memory, flat IP, {products:,} x {DIM}",
            f"{flat.memory_bytes() / 2**20:.1f} MiB")
    fig.add(f"index memory, HNSW32, {products:,} x {DIM}",
            f"{hnsw.memory_bytes() / 2**20:.1f} MiB")


def bench_training(data: Path, fig: Figures) -> None:
    if data.exists():
        t0 = time.perf_counter()
        retail = list(read_retail(data))
        split = make_split(retail, parse_time("2100-01-01"))
        read_s = time.perf_counter() - t0
        now = float(split.train_t.max())
        w = np.array([event_weight("purchase", t, now, q) for t, q in
                      zip(split.train_t.tolist(), split.train_q.tolist(), strict=True)])
        m = confidence_matrix(split.train_u, split.train_i, w, len(split.users),
                              len(split.items))
        t0 = time.perf_counter()
        train_als(m, AlsParams())
        fit_s = time.perf_counter() - t0
        fig.add(f"train, dev dataset ({len(retail):,} purchases, {len(split.users):,} x "
                f"{len(split.items):,}), read / ALS fit", f"{read_s:.1f} / {fit_s:.1f} s")
        fig.seconds["dev dataset, ALS fit"] = fit_s
    else:
        fig.add("train, dev dataset", f"skipped: {data} not found")
    rng = np.random.default_rng(1)
    n = 1_000_000
    uu = rng.integers(0, 100_000, n)
    ii = np.minimum(rng.zipf(1.3, n) - 1, 49_999)
    t0 = time.perf_counter()
    m = confidence_matrix(uu, ii, np.full(n, 2.0), 100_000, 50_000)
    train_als(m, AlsParams())
    fit_s = time.perf_counter() - t0
    fig.add("train, 1,000,000 synthetic events (100k users x 50k items), ALS fit",
            f"{fit_s:.1f} s")
    fig.seconds["1M synthetic events, ALS fit"] = fit_s


def plot(fig: Figures, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, samples in fig.curves.items():
        lat = sorted(samples)
        left.plot(lat, [i / len(lat) for i in range(len(lat))], label=name)
    left.axvline(GOAL_SERVER_P99_MS, color="grey", linestyle="--", linewidth=1)
    left.axvline(GOAL_HTTP_P99_MS, color="grey", linestyle=":", linewidth=1)
    left.set(title="Offers latency (CDF), 50,000 products", xlabel="ms", ylabel="fraction",
             xscale="log")
    left.legend(fontsize=8)
    right.bar(list(fig.seconds), list(fig.seconds.values()), color="#17bebb")
    right.set(title="ALS training time (one thread)", ylabel="seconds")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench_offers",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/online_retail_dev.csv.gz")
    parser.add_argument("--products", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rates", default="250,500",
                        help="HTTP requests per second, comma separated (empty: skip)")
    parser.add_argument("--seconds", type=float, default=10.0, help="HTTP load per rate")
    parser.add_argument("--workers", default="1,2",
                        help="web processes of the HTTP runs, comma separated")
    parser.add_argument("--erase-log", type=int, default=200_000,
                        help="events in the log for the erasure figure")
    parser.add_argument("--redis-url", default=None,
                        help="a database of its own (it is flushed); default: an embedded store")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--two-stage", action="store_true",
                        help="also the two-stage rankers beside the current engine, offers "
                             "computed afresh, side by side in one run")
    parser.add_argument("--only-two-stage", action="store_true",
                        help="the side-by-side two-stage figures alone (implies --two-stage)")
    args, _ = parser.parse_known_args(argv)  # ``make bench`` passes every bench its args
    fig = Figures()
    with tempfile.TemporaryDirectory(prefix="bench-offers-") as tmp:
        store = None
        url = args.redis_url
        if url is None:
            store = EmbeddedValkey(Path(tmp) / "store")
            url = store.start()
        try:
            var = Path(tmp) / "var"
            mids = asyncio.run(seed(url, var / "models", args.products))
            if args.two_stage or args.only_two_stage:
                version, fit_s = two_stage_version(var / "models", var / "models-two-stage")
                fig.add(f"two-stage rankers, training on 150,000 synthetic purchases "
                        f"({args.products:,} products), version {version}", f"{fit_s:.1f} s")
                asyncio.run(bench_two_stage(url, var / "models", var / "models-two-stage",
                                            mids, args.requests, fig))
            if not args.only_two_stage:
                asyncio.run(bench_server_side(url, var / "models", mids, args.requests, fig))
                rates = [int(r) for r in args.rates.split(",") if r]
                if rates:
                    bench_http(url, var, mids, args.products, rates, args.seconds,
                               [int(w) for w in args.workers.split(",") if w], fig)
                asyncio.run(bench_erasure(url, args.erase_log, fig))
        finally:
            if store is not None:
                store.stop()
    if not args.only_two_stage:
        bench_memory(args.products, fig)
        bench_training(Path(args.data), fig)
    fig.add("bench process peak RSS",
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    width = max(len(k) for k, _ in fig.rows)
    lines = [f"| {'measure':<{width}} | value |", f"|{'-' * (width + 2)}|---|"]
    lines += [f"| {k:<{width}} | {v} |" for k, v in fig.rows]
    text = "\n".join(lines)
    print("\nOffers, recommender and training (one run; the machine may be shared)\n")
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "offers.md").write_text(text + "\n")
    (args.out / "offers.json").write_bytes(orjson.dumps(
        {"rows": fig.rows, "training_seconds": fig.seconds,
         "latency_ms": {k: {"p50": pct(v, 50), "p99": pct(v, 99)}
                        for k, v in fig.curves.items()}}, option=orjson.OPT_INDENT_2))
    plot(fig, args.out / "offers.png")
    print(f"\nplot: {args.out / 'offers.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

