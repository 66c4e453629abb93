"""Flash-sale checkout benchmark: 2,000 buyers on 100 units against a real server.

For each configuration, in one run, side by side:
- 2,000 buyers connect over the live WebSocket (``/ws/live/{session}``, member tokens),
  the host starts a flash sale of 100 units, every buyer puts one unit in the cart;
- then every buyer sends ``checkout`` at once (``spread`` 0: the thundering herd) or at a
  uniformly random moment within ``spread`` seconds (a crowd reacting to the countdown);
- measured: the checkout acknowledgement latency (send -> ``ack`` or ``error``) p50/p99/max,
  checkouts answered per second (first send to last answer), and the outcome: exactly 100
  orders, the rest ``out_of_stock`` (anything else fails the run).

The server is ``newretail serve`` (1 or 2 web processes on one store); the load generator
is this process, on the same machine.

Run: ``python -m loadtests.bench_checkout [--buyers 2000 --units 100 --reps 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
KEYS = "bench:" + "checkout-benchmark-signing-key-0123456789"
SKU = "FLASH1"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def bench_store(url: str | None, tmp: Path) -> Iterator[str]:
    if url:
        yield url
        return
    from live.store import EmbeddedStore

    store = EmbeddedStore(tmp / "store")
    try:
        yield store.start()
    finally:
        store.stop()


@contextlib.contextmanager
def serve(store_url: str, var: Path, procs: int) -> Iterator[list[str]]:
    """``procs`` web processes on one store; yields their base URLs."""
    env = {**os.environ, "NEWRETAIL_REDIS_URL": store_url, "NEWRETAIL_VAR_DIR": str(var),
           "NEWRETAIL_JWT_KEYS": KEYS, "NEWRETAIL_LOG_LEVEL": "WARNING"}
    running: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for _ in range(procs):
            port = free_port()
            running.append(subprocess.Popen(
                [sys.executable, "-m", "live.cli", "serve", "--port", str(port)],
                env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        for url in urls:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url} did not start")
                time.sleep(0.1)
        yield urls
    finally:
        for proc in running:
            proc.terminate()
        for proc in running:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def token(sub: str, role: str) -> str:
    from identity.tokens import KeyRing

    return KeyRing.from_spec(KEYS).issue(sub, role, ttl=3600)  # type: ignore[arg-type]


async def reset(store_url: str, units: int) -> None:
    """The product with ``units`` in the warehouse and nothing else sold yet."""
    from live.catalog import Catalog
    from live.store import connect as store_connect
    from live.types import Product, Sku

    redis = store_connect(store_url)
    try:
        catalog = Catalog(redis)
        await catalog.put_products([Product(Sku(SKU), "Bench flash kite", "toys", 19.99,
                                            f"/catalog/images/{SKU}.svg")])
        await redis.delete(f"nr:stock:{SKU}")
        await catalog.set_stock(SKU, "warehouse", units)
    finally:
        await redis.aclose()


async def until(ws: ClientConnection, ref: str, timeout: float = 60) -> dict[str, Any]:
    """Read until the ack or error of ``ref``; returns it with ``order`` seen on the way."""
    order = None
    async with asyncio.timeout(timeout):
        while True:
            msg = orjson.loads(await ws.recv())
            if msg.get("type") == "order":
                order = msg["order"]
            if msg.get("type") in ("ack", "error") and msg.get("ref") == ref:
                msg["order_seen"] = order
                return dict(msg)


async def run_once(urls: list[str], store_url: str, buyers: int, units: int,
                   spread: float, rep: int) -> dict[str, Any]:
    await reset(store_url, units)
    host_h = {"authorization": f"Bearer {token('bench-host', 'host')}"}
    r = httpx.post(f"{urls[0]}/live/sessions", headers=host_h,
                   json={"title": "Bench drop", "products": [SKU]})
    r.raise_for_status()
    sid = r.json()["session_id"]
    ws_urls = [u.replace("http://", "ws://") + f"/ws/live/{sid}" for u in urls]
    gate = asyncio.Semaphore(200)
    tag = f"{rep}_{int(time.time())}"

    async def join(i: int, sub: str, role: str) -> ClientConnection:
        async with gate:
            ws = await connect(ws_urls[i % len(ws_urls)], subprotocols=["newretail.json"],  # type: ignore[list-item]
                               open_timeout=60, max_queue=None)
            await ws.send(orjson.dumps({"op": "hello", "token": token(sub, role)}).decode())
            async with asyncio.timeout(60):
                while orjson.loads(await ws.recv()).get("type") != "welcome":
                    pass
            return ws

    host = await join(0, "bench-host", "host")
    sockets = await asyncio.gather(*(join(i, f"m_b{tag}_{i}", "member") for i in range(buyers)))
    await host.send(orjson.dumps({"op": "flash.start", "ref": "go", "sku": SKU, "price": 9.99,
                                  "qty": units, "seconds": 600}).decode())
    if (await until(host, "go"))["type"] != "ack":
        raise RuntimeError("the flash sale did not start")

    async def add(ws: ClientConnection) -> None:
        async with gate:
            await ws.send(orjson.dumps({"op": "cart.add", "ref": "a", "sku": SKU,
                                        "qty": 1}).decode())
            reply = await until(ws, "a")
            if reply["type"] != "ack":
                raise RuntimeError(f"cart.add failed: {reply}")

    await asyncio.gather(*(add(ws) for ws in sockets))
    rng = random.Random(rep)
    offsets = [rng.uniform(0, spread) if spread else 0.0 for _ in sockets]
    start = time.perf_counter()

    async def checkout(ws: ClientConnection, offset: float) -> tuple[float, float, str]:
        await asyncio.sleep(max(0.0, start + offset - time.perf_counter()))
        sent = time.perf_counter()
        await ws.send(orjson.dumps({"op": "checkout", "ref": "c",
                                    "idempotency_key": "bench"}).decode())
        reply = await until(ws, "c")
        done = time.perf_counter()
        outcome = "order" if reply["type"] == "ack" and reply["order_seen"] else reply.get(
            "code", "ack without order")
        return sent, done, outcome

    results = await asyncio.gather(*(checkout(ws, o) for ws, o in zip(sockets, offsets,
                                                                        strict=True)))
    for ws in (*sockets, host):
        await ws.close()
    latencies = sorted((done - sent) * 1000 for sent, done, _ in results)
    first = min(sent for sent, _, _ in results)
    last = max(done for _, done, _ in results)
    outcomes = Counter(o for _, _, o in results)
    return {
        "procs": len(urls), "spread": spread, "buyers": buyers, "units": units,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "max_ms": latencies[-1], "checkouts_per_s": len(results) / (last - first),
        "orders": outcomes.get("order", 0), "out_of_stock": outcomes.get("out_of_stock", 0),
        "other": sum(v for k, v in outcomes.items() if k not in ("order", "out_of_stock")),
        "latencies": latencies,
    }


def median_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for key in sorted({(r["procs"], r["spread"]) for r in rows}):
        group = [r for r in rows if (r["procs"], r["spread"]) == key]
        merged: dict[str, Any] = {"procs": key[0], "spread": key[1], "reps": len(group)}
        for field in ("p50_ms", "p99_ms", "max_ms", "checkouts_per_s", "orders",
                      "out_of_stock", "other", "buyers", "units"):
            merged[field] = statistics.median(float(r[field]) for r in group)
        merged["latencies"] = sorted(x for r in group for x in r["latencies"])
        out.append(merged)
    return out


def table(rows: list[dict[str, Any]]) -> str:
    base = {r["spread"]: r["checkouts_per_s"] for r in rows if r["procs"] == 1}
    lines = ["| web processes | checkout clicks within | p50 ms | p99 ms | max ms | "
             "checkouts/s | vs 1 process | orders | out_of_stock | other |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = r["checkouts_per_s"] / base[r["spread"]] if r["spread"] in base else float("nan")
        window = "the same instant" if not r["spread"] else f"{r['spread']:g} s"
        lines.append(
            f"| {r['procs']} | {window} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['max_ms']:.0f} | {r['checkouts_per_s']:,.0f} | {ratio:.2f}x | "
            f"{r['orders']:.0f} | {r['out_of_stock']:.0f} | {r['other']:.0f} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for r in rows:
        lat = r["latencies"]
        label = (f"{r['procs']} proc, " + ("herd" if not r["spread"] else f"{r['spread']:g} s"))
        left.plot(lat, [i / len(lat) for i in range(len(lat))], label=label)
    left.axvline(100, color="grey", linestyle="--", linewidth=1)
    left.set(title="Checkout ack latency (CDF, all reps)", xlabel="ms", ylabel="fraction",
             xscale="log")
    names = [f"{r['procs']}p/" + ("herd" if not r["spread"] else f"{r['spread']:g}s")
             for r in rows]
    right.bar(names, [r["checkouts_per_s"] for r in rows], color="#17bebb")
    right.set(title="Checkouts answered per second (median)", ylabel="checkouts/s")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    left.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_checkout", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--buyers", type=int, default=2000)
    p.add_argument("--units", type=int, default=100)
    p.add_argument("--procs", default="1,2", help="web process counts, comma separated")
    p.add_argument("--spreads", default="0,2", help="seconds over which buyers click")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL"))
    p.add_argument("--out", type=Path, default=RESULTS)
    args, _ = p.parse_known_args(argv)  # ``make bench`` passes every bench the same args
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, bench_store(args.redis_url, Path(tmp)) as url:
        for procs in (int(x) for x in args.procs.split(",")):
            with serve(url, Path(tmp) / f"var{procs}", procs) as urls:
                for rep in range(args.reps):
                    for spread in (float(x) for x in args.spreads.split(",")):
                        print(f"{procs} process(es), spread {spread:g} s, rep {rep + 1} ...",
                              file=sys.stderr, flush=True)
                        rows.append(asyncio.run(run_once(
                            urls, url, args.buyers, args.units, spread, rep)))
    merged = median_rows(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    text = table(merged)
    print(f"\nFlash-sale checkout: {args.buyers:,} buyers on {args.units} units, median of "
          f"{args.reps} run(s); goal p99 < 100 ms\n")
    print(text)
    (args.out / "checkout.md").write_text(text + "\n")
    (args.out / "checkout.json").write_bytes(orjson.dumps(
        {"rows": [{k: v for k, v in r.items() if k != "latencies"} for r in rows]},
        option=orjson.OPT_INDENT_2))
    plot(merged, args.out / "checkout.png")
    print(f"\nplot: {args.out / 'checkout.png'}")
    wrong = [r for r in rows if r["orders"] != r["units"] or r["other"]]
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
