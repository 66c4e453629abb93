"""Check-in benchmark: check-ins per second and latency against a real server.

Starts ``newretail serve`` on an ephemeral port (its store: ``REDIS_URL`` when set, else
an embedded one in a temporary directory), gives every check-in a device of its own
(a code works once per device and step; with ``REDIS_URL`` use a scratch database, the
devices stay there), then posts member codes from a screen at a few
concurrency levels (closed loop: the most it does) and at fixed arrival rates (open
loop: the latency a given load sees). Server-side latency is the handler's own
``server-timing``; the client round trip is shown beside it. Goal: server-side p99 under 5 ms.

    python -m loadtests.bench_checkin [--levels 1,4,16] [--rates 250,500,1000]
        [--count 600] [--repeat 3] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from identity.codes import member_code
from identity.devices import Device
from identity.service import IdentityService
from identity.tokens import KeyRing
from live.db.client import connect
from live.db.server import EmbeddedValkey
from loadtests.server import run_server

GOAL_P99_MS = 5.0
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Level:
    load: str
    count: int
    seconds: float
    server_ms: list[float]
    client_ms: list[float]
    errors: int


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def make_devices(url: str, ring: KeyRing, pepper: bytes, n: int) -> list[Device]:
    """``n`` signed-in devices on ten devices per member, written straight to the store."""
    redis = connect(url)
    try:
        svc = IdentityService(redis, ring, pepper)
        devices: list[Device] = []
        for i in range(0, n, 10):
            member = await svc.members.create(f"Bench Member{i}")
            for j in range(min(10, n - i)):
                devices.append(await svc.devices.register(member.id, f"bench-{i + j}"))
        return devices
    finally:
        await redis.aclose()


class Connection:
    """A bare HTTP/1.1 keep-alive connection: the client spends little CPU, so the
    server (on the same machine) is what gets measured."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 host: str, screen: str) -> None:
        self.reader, self.writer = reader, writer
        self.head = (f"POST /identity/checkin HTTP/1.1\r\nhost: {host}\r\n"
                     f"authorization: Bearer {screen}\r\ncontent-type: application/json\r\n")

    @classmethod
    async def open(cls, host: str, port: int, screen: str) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}", screen)

    async def check_in(self, code: str) -> tuple[int, dict[str, str], bytes]:
        body = orjson.dumps({"code": code})
        self.writer.write(f"{self.head}content-length: {len(body)}\r\n\r\n".encode() + body)
        status_line = await self.reader.readline()
        headers: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        payload = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, payload

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def run_level(port: int, screen: str, devices: list[Device], concurrency: int) -> Level:
    queue: asyncio.Queue[Device] = asyncio.Queue()
    for d in devices:
        queue.put_nowait(d)
    server_ms: list[float] = []
    client_ms: list[float] = []
    errors = 0

    async def worker(conn: Connection) -> None:
        nonlocal errors
        while True:
            try:
                device = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            code = member_code(device.index, device.secret, time.time())
            started = time.perf_counter()
            status, headers, _ = await conn.check_in(code)
            client_ms.append((time.perf_counter() - started) * 1000)
            if status != 200:
                errors += 1
                continue
            server_ms.append(float(headers["server-timing"].split("dur=")[1]))

    conns = [await Connection.open("127.0.0.1", port, screen) for _ in range(concurrency)]
    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    seconds = time.perf_counter() - started
    for c in conns:
        await c.close()
    return Level(f"{concurrency} in flight", len(devices), seconds, server_ms, client_ms,
                 errors)


async def run_rate(port: int, screen: str, devices: list[Device], rate: float) -> Level:
    """Open loop: check-ins arrive at ``rate`` per second whatever the server does."""
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(32):
        pool.put_nowait(await Connection.open("127.0.0.1", port, screen))
    server_ms: list[float] = []
    client_ms: list[float] = []
    errors = 0

    async def one(device: Device) -> None:
        nonlocal errors
        conn = await pool.get()
        started = time.perf_counter()
        status, headers, _ = await conn.check_in(
            member_code(device.index, device.secret, time.time()))
        client_ms.append((time.perf_counter() - started) * 1000)
        pool.put_nowait(conn)
        if status != 200:
            errors += 1
            return
        server_ms.append(float(headers["server-timing"].split("dur=")[1]))

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tasks = []
    for i, device in enumerate(devices):
        delay = t0 + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the arrivals, not waiting for a result
        tasks.append(asyncio.create_task(one(device)))
    await asyncio.gather(*tasks)
    seconds = loop.time() - t0
    while not pool.empty():
        await pool.get_nowait().close()
    return Level(f"{rate:.0f}/s offered", len(devices), seconds, server_ms, client_ms, errors)


def summary(runs: list[Level]) -> dict[str, float]:
    """Per-run figures, then the median over the runs of a level."""
    def med(f: Callable[[Level], float]) -> float:
        return statistics.median(f(lv) for lv in runs)

    return {
        "per_s": med(lambda lv: lv.count / lv.seconds),
        "server_p50": med(lambda lv: statistics.median(lv.server_ms)),
        "server_p99": med(lambda lv: pct(lv.server_ms, 0.99)),
        "client_p50": med(lambda lv: statistics.median(lv.client_ms)),
        "client_p99": med(lambda lv: pct(lv.client_ms, 0.99)),
        "errors": sum(lv.errors for lv in runs),
    }


def print_table(results: dict[str, list[Level]]) -> None:
    head = (f"{'load':>14} {'check-ins':>9} {'per s':>8} {'server p50':>10} "
            f"{'server p99':>10} {'client p50':>10} {'client p99':>10} {'errors':>6}")
    print(head)
    print("-" * len(head))
    for load, runs in results.items():
        f = summary(runs)
        print(f"{load:>14} {sum(lv.count for lv in runs):>9} {f['per_s']:>8.0f} "
              f"{f['server_p50']:>8.2f}ms {f['server_p99']:>8.2f}ms "
              f"{f['client_p50']:>8.2f}ms {f['client_p99']:>8.2f}ms {f['errors']:>6.0f}")


def plot(results: dict[str, list[Level]], path: Path) -> None:
    """Latency (server and client, p50 and p99) and throughput per load level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loads = list(results)
    figures = [summary(runs) for runs in results.values()]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    width = 0.2
    series = [("server_p50", "server p50"), ("server_p99", "server p99"),
              ("client_p50", "client p50"), ("client_p99", "client p99")]
    for k, (key, label) in enumerate(series):
        left.bar([i + (k - 1.5) * width for i in range(len(loads))],
                 [f[key] for f in figures], width, label=label)
    left.axhline(GOAL_P99_MS, color="grey", linestyle="--", linewidth=1,
                 label=f"goal: server p99 {GOAL_P99_MS:g} ms")
    left.set(title="Check-in latency (medians over rounds)", ylabel="ms", yscale="log")
    left.set_xticks(range(len(loads)), loads, rotation=20)
    left.legend(fontsize=8)
    right.bar(loads, [f["per_s"] for f in figures], color="#17bebb")
    right.set(title="Check-ins per second", ylabel="check-ins/s")
    right.tick_params(axis="x", rotation=20)
    for ax in (left, right):
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(results: dict[str, list[Level]]) -> str:
    lines = ["| load | check-ins/s | server p50 ms | server p99 ms | client p50 ms | "
             "client p99 ms | errors |", "|---|---:|---:|---:|---:|---:|---:|"]
    for load, runs in results.items():
        f = summary(runs)
        lines.append(f"| {load} | {f['per_s']:,.0f} | {f['server_p50']:.2f} | "
                     f"{f['server_p99']:.2f} | {f['client_p50']:.2f} | {f['client_p99']:.2f} | "
                     f"{f['errors']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,4,16", help="concurrency levels")
    parser.add_argument("--rates", default="250,500,1000",
                        help="open-loop arrival rates per second")
    parser.add_argument("--count", type=int, default=600, help="check-ins per level")
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds over all levels; the table quotes medians over rounds")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",") if x]
    rates = [float(x) for x in args.rates.split(",") if x]
    ring_spec = "bench:" + secrets.token_hex(32)
    pepper = secrets.token_hex(32)
    ring = KeyRing.from_spec(ring_spec)
    with tempfile.TemporaryDirectory(prefix="bench-checkin-") as tmp:
        var = Path(tmp)
        embedded: EmbeddedValkey | None = None
        url = os.environ.get("REDIS_URL")
        if not url:
            embedded = EmbeddedValkey(var / "store")
            url = embedded.start()
        try:
            devices = asyncio.run(make_devices(
                url, ring, pepper.encode(),
                args.count * (len(levels) + len(rates)) * args.repeat))
            env = {"NEWRETAIL_JWT_KEYS": ring_spec, "NEWRETAIL_IDENTITY_PEPPER": pepper}
            screen = ring.issue("screen-bench", "screen", 3600, store="store-soho")
            results: dict[str, list[Level]] = {}
            with run_server(url, var / "server", env=env, workers=args.workers) as server:
                batches = [devices[i:i + args.count] for i in range(0, len(devices), args.count)]
                for _ in range(args.repeat):
                    runs = [asyncio.run(run_level(server.port, screen, batches.pop(), c))
                            for c in levels]
                    runs += [asyncio.run(run_rate(server.port, screen, batches.pop(), rate))
                             for rate in rates]
                    for lv in runs:
                        results.setdefault(lv.load, []).append(lv)
        finally:
            if embedded is not None:
                embedded.stop()
    store = "REDIS_URL" if embedded is None else "embedded"
    print(f"check-in benchmark: {args.count} check-ins per level and round, {args.repeat} "
          f"rounds (medians over rounds), {args.workers} server process(es), store {store}")
    print_table(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "checkin.md").write_text(markdown(results) + "\n")
    plot(results, RESULTS / "checkin.png")
    print(f"table and plot: {RESULTS / 'checkin.md'}, {RESULTS / 'checkin.png'}")
    for load, runs in results.items():
        p99 = summary(runs)["server_p99"]
        verdict = "meets" if p99 < GOAL_P99_MS else "misses"
        print(f"{load}: server-side p99 {p99:.2f} ms {verdict} the {GOAL_P99_MS} ms goal")
    return 0 if all(lv.errors == 0 for runs in results.values() for lv in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
