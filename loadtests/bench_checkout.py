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
is this process, on the same machine. It is kept light so that it measures the server, not
itself: each buyer is the project's ``loadtests.wsclient.LightClient``, an
``asyncio.Protocol`` (no task and no stream per socket), the answer is timed in the
callback that receives it, and the checkouts are written in one tight loop (or from timer
callbacks when spread).

``--server-root`` runs the server from another checkout of the project (its own ``.venv``
when it has one), alternating with this one rep by rep, to compare two versions side by
side on the same machine in the same minutes.

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
from urllib.parse import urlsplit

import httpx
import orjson

from loadtests.bench_fanout import bench_store, free_port
from loadtests.wsclient import JSON, LightClient, client_frame, open_client

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
KEYS = "bench:" + "checkout-benchmark-signing-key-0123456789"
SKU = "FLASH1"


def python_of(root: Path) -> str:
    """The interpreter of a checkout: its own virtualenv when it has one."""
    venv = root / ".venv" / "bin" / "python"
    return str(venv) if root != ROOT and venv.exists() else sys.executable


@contextlib.contextmanager
def serve(store_url: str, var: Path, procs: int,
          root: Path = ROOT) -> Iterator[tuple[list[str], list[int]]]:
    """``procs`` web processes (of the checkout at ``root``) on one store; yields their
    base URLs and process ids."""
    env = {**os.environ, "NEWRETAIL_REDIS_URL": store_url, "NEWRETAIL_VAR_DIR": str(var),
           "NEWRETAIL_JWT_KEYS": KEYS, "NEWRETAIL_LOG_LEVEL": "WARNING", "PYTHONPATH": str(root)}
    running: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for _ in range(procs):
            port = free_port()
            running.append(subprocess.Popen(
                [python_of(root), "-m", "live.web.cli", "serve", "--port", str(port)],
                env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
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
        yield urls, [proc.pid for proc in running]
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
    from live.commerce.catalog import Catalog
    from live.db.client import connect as store_connect
    from live.money import Money
    from live.types import Product, Sku

    redis = store_connect(store_url)
    try:
        catalog = Catalog(redis)
        await catalog.put_products([Product(Sku(SKU), "Bench flash kite", "toys",
                                            Money(1999, "GBP"),
                                            f"/catalog/images/{SKU}.svg")])
        await redis.delete(f"nr:stock:{SKU}")
        await catalog.set_stock(SKU, "warehouse", units)
    finally:
        await redis.aclose()


class Buyer(LightClient):
    """One buyer: the shared client (an ``asyncio.Protocol``: no task, no stream), its
    answers timed in the callback that receives them and nothing kept but what the
    benchmark reads. ``request`` sends an op (or a frame built in advance) and returns a
    future of its ``ack`` or ``error`` (with the ``order`` message seen before it, if any).
    """

    def __init__(self, path: str) -> None:
        super().__init__(path, JSON)
        loop = asyncio.get_running_loop()
        self.welcomed_at: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.waiting: dict[str, tuple[asyncio.Future[dict[str, Any]], float]] = {}
        self.order: dict[str, Any] | None = None
        self.timing: dict[str, tuple[float, float]] = {}  # ref -> (sent, answered)
        self.received = 0

    def on_frame(self, opcode: int, payload: bytes, now: float) -> bool:
        self.received += 1
        msg = orjson.loads(payload)
        kind = msg.get("type")
        if kind == "order":
            self.order = msg["order"]
        elif kind in ("ack", "error"):
            waiting = self.waiting.pop(msg.get("ref") or "", None)
            if waiting is not None:
                future, sent = waiting
                self.timing[msg["ref"]] = (sent, time.perf_counter())
                msg["order_seen"], self.order = self.order, None
                if not future.done():
                    future.set_result(msg)
        elif kind == "welcome" and not self.welcomed_at.done():
            self.welcomed_at.set_result(msg)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        error = ConnectionError(f"socket closed: {exc}")
        for future in [self.welcomed_at, *(f for f, _ in self.waiting.values())]:
            if not future.done():
                future.set_exception(error)

    def request(self, op: dict[str, Any], future: asyncio.Future[dict[str, Any]] | None = None,
                frame: bytes | None = None) -> asyncio.Future[dict[str, Any]]:
        """Send ``op`` (as ``frame`` when it was built in advance); the future of its answer."""
        if future is None:
            future = asyncio.get_running_loop().create_future()
        self.waiting[op["ref"]] = (future, time.perf_counter())
        self._write(frame if frame is not None else client_frame(orjson.dumps(op)))
        return future


async def open_buyer(url: str, token_: str) -> Buyer:
    parts = urlsplit(url)
    path = parts.path
    buyer = await open_client(parts.port or 80, path, timeout=60,
                              host=parts.hostname or "127.0.0.1", factory=lambda: Buyer(path))
    if buyer.status != 101:
        raise ConnectionError(f"handshake refused: HTTP {buyer.status}")
    async with asyncio.timeout(60):
        buyer.hello(token_)
        await buyer.welcomed_at
    return buyer


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_once(urls: list[str], pids: list[int], store_url: str, buyers: int, units: int,
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

    async def join(i: int, sub: str, role: str) -> Buyer:
        async with gate:
            return await open_buyer(ws_urls[i % len(ws_urls)], token(sub, role))

    host = await join(0, "bench-host", "host")
    sockets = await asyncio.gather(*(join(i, f"m_b{tag}_{i}", "member") for i in range(buyers)))
    try:
        async with asyncio.timeout(60):
            go = await host.request({"op": "flash.start", "ref": "go", "sku": SKU,
                                     "price": {"amount": 999, "currency": "GBP"},
"qty": units, "seconds": 600})
            if go["type"] != "ack":
                raise RuntimeError(f"the flash sale did not start: {go}")

            async def add(ws: Buyer) -> None:
                async with gate:
                    reply = await ws.request({"op": "cart.add", "ref": "a", "sku": SKU, "qty": 1})
                if reply["type"] != "ack":
                    raise RuntimeError(f"cart.add failed: {reply}")

            await asyncio.gather(*(add(ws) for ws in sockets))
        rng = random.Random(rep)
        offsets = [rng.uniform(0, spread) if spread else 0.0 for _ in sockets]
        op = {"op": "checkout", "ref": "c", "idempotency_key": "bench"}
        # Each buyer's frame is built (and masked) before the moment, as on a real device.
        frames = [client_frame(orjson.dumps(op)) for _ in sockets]
        loop = asyncio.get_running_loop()
        replies: list[asyncio.Future[dict[str, Any]]] = [loop.create_future() for _ in sockets]
        received = sum(ws.received for ws in sockets)
        cpu = time.process_time(), [server_cpu(pid) for pid in pids]

        def click(i: int) -> None:
            sockets[i].request(op, replies[i], frames[i])

        if spread:
            start = loop.time()
            for i, offset in enumerate(offsets):
                loop.call_at(start + offset, click, i)
        else:
            for i in range(len(sockets)):
                click(i)
        async with asyncio.timeout(120):
            answers = await asyncio.gather(*replies)
        client_ms = (time.process_time() - cpu[0]) * 1000
        server_ms = sum(server_cpu(pid) - t for pid, t in zip(pids, cpu[1], strict=True)) * 1000
        received = sum(ws.received for ws in sockets) - received
    finally:
        for ws in (*sockets, host):
            ws.close()
    results = []
    for ws, reply in zip(sockets, answers, strict=True):
        sent, done = ws.timing["c"]
        outcome = "order" if reply["type"] == "ack" and reply["order_seen"] else reply.get(
            "code", "ack without order")
        results.append((sent, done, outcome))
    latencies = sorted((done - sent) * 1000 for sent, done, _ in results)
    won = sorted((done - sent) * 1000 for sent, done, o in results if o == "order")
    first = min(sent for sent, _, _ in results)
    last = max(done for _, done, _ in results)
    outcomes = Counter(o for _, _, o in results)
    return {
        "procs": len(urls), "spread": spread, "buyers": buyers, "units": units,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "max_ms": latencies[-1], "orders_p50_ms": statistics.median(won) if won else 0.0,
        "checkouts_per_s": len(results) / (last - first),
        "orders": outcomes.get("order", 0), "out_of_stock": outcomes.get("out_of_stock", 0),
        "other": sum(v for k, v in outcomes.items() if k not in ("order", "out_of_stock")),
        "client_cpu_ms": client_ms, "server_cpu_ms": server_ms,
        "frames_per_buyer": received / buyers, "latencies": latencies,
    }


def _key(r: dict[str, Any]) -> tuple[str, int, float]:
    return (r["server"], r["procs"], r["spread"])


def median_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    order = list(dict.fromkeys(r["server"] for r in rows))
    for key in sorted({_key(r) for r in rows}, key=lambda k: (k[1], k[2], order.index(k[0]))):
        group = [r for r in rows if _key(r) == key]
        merged: dict[str, Any] = {"server": key[0], "procs": key[1], "spread": key[2],
                                  "reps": len(group)}
        for field in ("p50_ms", "p99_ms", "max_ms", "orders_p50_ms", "checkouts_per_s", "orders",
                      "out_of_stock", "other", "buyers", "units", "client_cpu_ms",
                      "server_cpu_ms", "frames_per_buyer"):
            merged[field] = statistics.median(float(r[field]) for r in group)
        merged["latencies"] = sorted(x for r in group for x in r["latencies"])
        out.append(merged)
    return out


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| server | web processes | checkout clicks within | p50 ms | p99 ms | max ms | "
             "p50 ms of orders | checkouts/s | orders | out_of_stock | other | server CPU ms | "
             "load generator CPU ms | frames in per buyer |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        window = "the same instant" if not r["spread"] else f"{r['spread']:g} s"
        lines.append(
            f"| {r['server']} | {r['procs']} | {window} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['max_ms']:.0f} | {r['orders_p50_ms']:.1f} | "
            f"{r['checkouts_per_s']:,.0f} | "
            f"{r['orders']:.0f} | {r['out_of_stock']:.0f} | {r['other']:.0f} | "
            f"{r['server_cpu_ms']:.0f} | {r['client_cpu_ms']:.0f} | "
            f"{r['frames_per_buyer']:.1f} |")
    return "\n".join(lines)


def label(root: Path) -> str:
    """A checkout's name in the table: its branch and commit."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                              text=True, check=False).stdout.strip()
    branch = git("rev-parse", "--abbrev-ref", "HEAD") or root.name
    return f"{branch}@{git('rev-parse', '--short', 'HEAD')}"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for r in rows:
        lat = r["latencies"]
        name = (f"{r['server']}, {r['procs']} proc, "
                + ("herd" if not r["spread"] else f"{r['spread']:g} s"))
        left.plot(lat, [i / len(lat) for i in range(len(lat))], label=name)
    left.axvline(100, color="grey", linestyle="--", linewidth=1)
    left.set(title="Checkout ack latency (CDF, all reps)", xlabel="ms", ylabel="fraction",
             xscale="log")
    names = [f"{r['server'][:12]}\n{r['procs']}p/"
             + ("herd" if not r["spread"] else f"{r['spread']:g}s") for r in rows]
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
    p.add_argument("--server-root", type=Path, action="append", default=[],
                   help="also run the server of this checkout, alternating rep by rep")
    args, _ = p.parse_known_args(argv)  # ``make bench`` passes every bench the same args
    rows: list[dict[str, Any]] = []
    roots = [*(r.resolve() for r in args.server_root), ROOT]
    with tempfile.TemporaryDirectory() as tmp, bench_store(args.redis_url, Path(tmp)) as url:
        for procs in (int(x) for x in args.procs.split(",")):
            with contextlib.ExitStack() as stack:
                servers = [(label(root), stack.enter_context(
                    serve(url, Path(tmp) / f"var{procs}_{i}", procs, root)))
                    for i, root in enumerate(roots)]
                for rep in range(args.reps):
                    for spread in (float(x) for x in args.spreads.split(",")):
                        for name, (urls, pids) in servers:
                            print(f"{name}: {procs} process(es), spread {spread:g} s, "
                                  f"rep {rep + 1} ...", file=sys.stderr, flush=True)
                            row = asyncio.run(run_once(
                                urls, pids, url, args.buyers, args.units, spread, rep))
                            rows.append({"server": name, **row})
    merged = median_rows(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    text = table(merged)
    print(f"\nFlash-sale checkout: {args.buyers:,} buyers on {args.units} units, median of "
          f"{args.reps} run(s); goal p99 < 100 ms; {os.cpu_count()} cores, load generator "
          f"on the same machine\n")
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
