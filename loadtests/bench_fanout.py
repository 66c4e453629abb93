"""Fan-out benchmark: the live hub against python-socketio and bare ``websockets``.

In one run, side by side, on loopback: for each N viewers on one server process (and on
two hub processes sharing the store, the viewers split between them),
- latency: ``--rate-count`` pin events at ``--rate`` per second, receive time - event ts,
  p50/p99/max over every delivery;
- throughput: events back to back, deliveries/s from the first send to the last receive,
  and the server's CPU time per delivery;
- memory: the server's RSS growth per idle connection.

The hub is the real service (``newretail serve``, store included): a host client on the
first process sends ``pin``/``unpin`` ops and the viewers get the ``pinned``/``unpinned``
events. ``hub2`` runs two such processes on one store with the viewers spread over both.
The peers: ``ws`` is bare ``websockets`` with ``broadcast()``, ``raw`` the same server
writing one pre-built frame to each transport (the floor for asyncio here), ``sio``
python-socketio. The load generator is one separate process
(``loadtests.fanout_loadgen``) for every configuration.

Run: ``python -m loadtests.bench_fanout`` (hub, hub2, ws, sio at 1,000 / 5,000 / 10,000
viewers, about 8-9 minutes on an idle machine); ``--servers hub,hub2,ws,raw,sio`` adds the
floor; ``--servers hub,hub2,ws,raw --ns 10000 --reps 3`` for medians.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
KEYS = "bench:" + "fanout-benchmark-signing-key-0123456789"
SERVERS = ("hub", "hub2", "ws", "raw", "sio")
LABELS = {"hub": "newretail hub", "hub2": "newretail hub, 2 processes",
          "ws": "websockets broadcast()", "raw": "raw frame, transport.write",
          "sio": "python-socketio"}
# Web processes per hub configuration; the viewers are spread evenly over them.
PROCESSES = {"hub": 1, "hub2": 2}
# What ``make bench`` runs (about 8-9 minutes on an idle machine); add ``raw`` for the floor.
DEFAULT_SERVERS = ("hub", "hub2", "ws", "sio")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Lines:
    """A child process spoken to in JSON lines over stdin/stdout."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=env, cwd=ROOT)

    def ask(self, cmd: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if cmd is not None:
            self.proc.stdin.write(orjson.dumps(cmd) + b"\n")
            self.proc.stdin.flush()
        return _read_line(self.proc.stdout, timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _read_line(stream: IO[bytes], timeout: float) -> dict[str, Any]:
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    if not sel.select(timeout):
        raise TimeoutError(f"no answer within {timeout} s")
    line = stream.readline()
    if not line:
        raise RuntimeError("the child process exited")
    reply: dict[str, Any] = orjson.loads(line)
    return reply


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the processes, summed."""
    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


def rss(pids: list[int]) -> int:
    return sum(int(psutil.Process(pid).memory_info().rss) for pid in pids)


class HubTarget:
    """``newretail serve`` (``processes`` of them on one store) with a session, and a host
    client on the first process driving pins."""

    def __init__(self, store_url: str, var: Path, processes: int = 1) -> None:
        self.ports = [free_port() for _ in range(processes)]
        env = {**os.environ, "NEWRETAIL_REDIS_URL": store_url, "NEWRETAIL_VAR_DIR": str(var),
               "NEWRETAIL_JWT_KEYS": KEYS, "NEWRETAIL_LOG_LEVEL": "WARNING"}
        self.logs = [open(var / f"hub-{port}.log", "wb") for port in self.ports]  # noqa: SIM115
        self.procs = [
            subprocess.Popen([sys.executable, "-m", "live.web.cli", "serve", "--port", str(port)],
                             env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            for port, log in zip(self.ports, self.logs, strict=True)
        ]
        deadline = time.monotonic() + 30
        for port, proc in zip(self.ports, self.procs, strict=True):
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                        break
                if time.monotonic() > deadline or proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("the hub did not start")
                time.sleep(0.1)
        self.port = self.ports[0]
        from identity.tokens import KeyRing

        self.ring = KeyRing.from_spec(KEYS)
        host = {"authorization": f"Bearer {self.ring.issue('bench-host', 'host', ttl=3600)}"}
        resp = httpx.post(f"http://127.0.0.1:{self.port}/live/sessions", headers=host,
                          json={"title": "bench", "products": ["B1"]})
        resp.raise_for_status()
        self.sid = resp.json()["session_id"]
        self.path = f"/ws/live/{self.sid}"
        self.pids = [proc.pid for proc in self.procs]
        self.seq = 0

    def broadcast(self, count: int, rate: float) -> None:
        asyncio.run(self._pins(count, rate))

    async def _pins(self, count: int, rate: float) -> None:
        from loadtests.wsclient import open_client

        host = await open_client(self.port, self.path, timeout=30)
        try:
            welcome = await host.welcomed(self.ring.issue("bench-host", "host", ttl=3600))
            if welcome["type"] != "welcome":
                raise RuntimeError(f"the host was not welcomed: {welcome}")
            start = time.monotonic()
            refs = []
            for i in range(count):
                if rate:
                    await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
                self.seq += 1
                op = {"op": "pin", "sku": "B1"} if self.seq % 2 else {"op": "unpin", "sku": "B1"}
                host.send({**op, "ref": self.seq})
                refs.append(self.seq)
                # One op per turn of the loop, as a host's client sends them: a burst of
                # ops in one read would be fanned out in fewer, larger writes.
                await asyncio.sleep(0)
            answered = set(refs)
            await host.until(lambda c: answered <= {m.get("ref") for m in c.messages
                                                     if m.get("type") == "ack"}, 120, "every ack")
        finally:
            host.close()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for log in self.logs:
            log.close()


class PeerTarget:
    """A comparison server from ``loadtests.fanout_servers``."""

    def __init__(self, kind: str) -> None:
        self.port = free_port()
        self.lines = Lines([sys.executable, "-m", "loadtests.fanout_servers", kind,
                            "--port", str(self.port)])
        self.lines.ask(None, 30)
        self.ports = [self.port]
        self.pids = [self.lines.proc.pid]
        self.path = "/socket.io/?EIO=4&transport=websocket" if kind == "sio" else "/"

    def broadcast(self, count: int, rate: float) -> None:
        self.lines.ask({"cmd": "broadcast", "count": count, "rate": rate}, 300)

    def stop(self) -> None:
        self.lines.stop()


def measure(kind: str, n: int, args: argparse.Namespace, store_url: str,
            var: Path) -> dict[str, Any]:
    target: HubTarget | PeerTarget
    if kind in PROCESSES:
        target = HubTarget(store_url, var, PROCESSES[kind])
    else:
        target = PeerTarget(kind)
    gen: Lines | None = None
    try:
        time.sleep(1.0)
        rss0 = rss(target.pids)
        gen = Lines([sys.executable, "-m", "loadtests.fanout_loadgen",
                     "--kind", "hub" if kind in PROCESSES else kind,
                     "--port", ",".join(map(str, target.ports)), "--path", target.path,
                     "--n", str(n), "--keys", KEYS])
        ready = gen.ask(None, 180)
        time.sleep(2.0)
        rss1 = rss(target.pids)
        row: dict[str, Any] = {"server": kind, "n": n, "failed": ready["failed"],
                               "rss_per_conn_kb": (rss1 - rss0) / n / 1024}

        def phase(count: int, rate: float, timeout: float) -> tuple[dict[str, Any], float, float]:
            assert gen is not None
            gen.ask({"cmd": "reset"}, 10)
            cpu0, t0 = cpu_seconds(target.pids), time.time()
            target.broadcast(count, rate)
            sent = time.time()
            deadline = time.monotonic() + timeout
            while True:
                rep = gen.ask({"cmd": "report"}, 10)
                if rep["count"] >= n * count or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            return rep, t0, cpu_seconds(target.pids) - cpu0 if sent else 0.0

        rep, t0, paced_cpu = phase(args.rate_count, args.rate, 30)
        row.update(p50_ms=rep["p50"], p99_ms=rep["p99"], max_ms=rep["max"],
                   latency_delivered=rep["count"] / (n * args.rate_count),
                   us_cpu_per_paced_delivery=paced_cpu / max(1, rep["count"]) * 1e6)
        k = max(10, min(300, args.fast_deliveries // n)) // 2 * 2
        rep, t0, cpu = phase(k, 0, 60)
        span = max(1e-6, rep["last"] - t0)
        row.update(deliveries_per_s=rep["count"] / span, fast_delivered=rep["count"] / (n * k),
                   us_cpu_per_delivery=cpu / max(1, rep["count"]) * 1e6,
                   server_cpu_pct=100 * cpu / span,
                   gen_us_per_delivery=rep["cpu"] / max(1, rep["count"]) * 1e6,
                   load=os.getloadavg()[0])
        return row
    finally:
        if gen is not None:
            gen.stop()
        target.stop()


def seed(store_url: str) -> None:
    from live.commerce.catalog import Catalog
    from live.db.client import connect
    from live.money import Money
    from live.types import Product, Sku

    async def put() -> None:
        redis = connect(store_url)
        await Catalog(redis).put_products([Product(Sku("B1"), "Bench thing B1", "home",
                                                   Money(950, "GBP"),
                                                   "/catalog/images/B1.svg")])
        await redis.aclose()

    asyncio.run(put())


@contextlib.contextmanager
def bench_store(url: str | None, tmp: Path) -> Iterator[str]:
    if url:
        yield url
        return
    from live.db.server import EmbeddedValkey

    store = EmbeddedValkey(tmp / "store")
    try:
        yield store.start()
    finally:
        store.stop()


def median_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    keys = sorted({(r["server"], r["n"]) for r in rows}, key=lambda k: (k[1], SERVERS.index(k[0])))
    for server, n in keys:
        group = [r for r in rows if r["server"] == server and r["n"] == n]
        merged: dict[str, Any] = {"server": server, "n": n, "reps": len(group)}
        for field in group[0]:
            if field not in ("server", "n"):
                merged[field] = statistics.median(float(r[field]) for r in group)
        out.append(merged)
    return out


def table(rows: list[dict[str, Any]]) -> str:
    ceiling = {r["n"]: r["deliveries_per_s"] for r in rows if r["server"] == "ws"}
    lines = ["| server | N | deliveries/s | vs broadcast() | µs CPU/delivery | server CPU | "
             "p50 / p99 / max ms at 5/s | µs CPU/delivery at 5/s | RSS/conn KB | delivered "
             "| load gen µs/delivery | load avg |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = r["deliveries_per_s"] / ceiling[r["n"]] if r["n"] in ceiling else float("nan")
        lines.append(
            f"| {LABELS[r['server']]} | {r['n']:,} | {r['deliveries_per_s']:,.0f} | "
            f"{ratio:.0%} | {r['us_cpu_per_delivery']:.1f} | "
            f"{r.get('server_cpu_pct', float('nan')):.0f} % | "
            f"{r['p50_ms']:.0f} / {r['p99_ms']:.0f} / {r['max_ms']:.0f} | "
            f"{r.get('us_cpu_per_paced_delivery', float('nan')):.1f} | "
            f"{r['rss_per_conn_kb']:.1f} | "
            f"{min(r['latency_delivered'], r['fast_delivered']):.0%} | "
            f"{r.get('gen_us_per_delivery', float('nan')):.1f} | "
            f"{r.get('load', float('nan')):.1f} |")
    return "\n".join(lines)


def two_vs_one(rows: list[dict[str, Any]]) -> str:
    """Two hub processes against one, per N, from the same run."""
    one = {r["n"]: r for r in rows if r["server"] == "hub"}
    out = []
    for r in rows:
        if r["server"] == "hub2" and r["n"] in one:
            out.append(f"- {r['n']:,} viewers: two processes deliver "
                       f"{r['deliveries_per_s'] / one[r['n']]['deliveries_per_s']:.2f}× "
                       f"one ({r['deliveries_per_s']:,.0f} vs "
                       f"{one[r['n']]['deliveries_per_s']:,.0f}/s), p99 "
                       f"{r['p99_ms']:.0f} vs {one[r['n']]['p99_ms']:.0f} ms")
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for server in SERVERS:
        mine = [r for r in rows if r["server"] == server]
        if not mine:
            continue
        ns = [r["n"] for r in mine]
        left.plot(ns, [r["deliveries_per_s"] for r in mine], marker="o", label=LABELS[server])
        right.plot(ns, [r["p99_ms"] for r in mine], marker="o", label=LABELS[server])
    left.set(title="Deliveries per second", xlabel="viewers", ylabel="deliveries/s")
    right.set(title="p99 latency at 5 events/s", xlabel="viewers", ylabel="ms", yscale="log")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_fanout", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ns", default="1000,5000,10000", help="viewer counts, comma separated")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--servers", default=",".join(DEFAULT_SERVERS),
                   help=f"comma separated, of {', '.join(SERVERS)}")
    p.add_argument("--rate", type=float, default=5.0)
    p.add_argument("--rate-count", type=int, default=30)
    p.add_argument("--fast-deliveries", type=int, default=150_000)
    p.add_argument("--max-seconds", type=float, default=600, help="stop starting new runs after")
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL"))
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    ns = [int(x) for x in args.ns.split(",")]
    servers = [s for s in args.servers.split(",") if s]
    progress: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    began = time.monotonic()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, bench_store(args.redis_url, Path(tmp)) as url:
        seed(url)
        for rep in range(args.reps):
            order = servers[rep % len(servers):] + servers[:rep % len(servers)]
            for n in (ns if rep % 2 == 0 else ns[::-1]):
                for kind in order:
                    if time.monotonic() - began > args.max_seconds:
                        progress(f"time budget spent; skipping {kind} N={n}")
                        continue
                    progress(f"rep {rep + 1}: {LABELS[kind]} with {n:,} viewers ...")
                    try:
                        rows.append(measure(kind, n, args, url, Path(tmp)))
                    except (RuntimeError, TimeoutError) as exc:
                        progress(f"  failed: {exc}")
    merged = median_rows(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    text = table(merged)
    print(f"\nFan-out, one server process (hub2: two), median of {args.reps} run(s); "
          f"{args.rate:g} events/s for latency; server CPU sums the server's processes\n")
    print(text)
    two = two_vs_one(merged)
    if two:
        print("\n" + two)
        text += "\n\n" + two
    (args.out / "fanout.md").write_text(text + "\n")
    (args.out / "fanout.json").write_bytes(orjson.dumps({"rows": rows, "median": merged},
                                                        option=orjson.OPT_INDENT_2))
    if merged:
        plot(merged, args.out / "fanout.png")
        print(f"\nplot: {args.out / 'fanout.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
