"""A short real capacity run: Locust's master and workers as separate processes, each
worker with its own copy of the plan (as on other machines: nothing shared but the
master's address), climbing two steps of a small steps file against a real server."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import redis as redis_sync

from live.web.settings import Settings
from loadtests.check_budget import read_stats
from loadtests.sale.plan import Plan
from loadtests.sale.seed import make_plan, seed, write_plan
from loadtests.sale.video import SyntheticStream
from tests.utils import free_port, run_server

ROOT = Path(__file__).resolve().parent.parent

STEPS = """
[default]
viewers = 5
offers_rate = 4
checkin_rate = 2
hls_viewers = 2

[capacity]
settle_seconds = 2
measure_seconds = 4
join_wait_seconds = 20

[[step]]
viewers = 5
offers_rate = 4
checkin_rate = 2
buy_chance = 1
hls_viewers = 2

[[step]]
viewers = 10
offers_rate = 8
checkin_rate = 4
buy_chance = 1
hls_viewers = 4
"""


def test_capacity_steps_on_distributed_locust(
    store_url: str, sync_redis: redis_sync.Redis, tmp_path: Path,
) -> None:
    """The load shape runs each step of the file and writes its own statistics: the
    second step's viewers, offers and players are the file's, the floors (GET /healthz,
    the WebSocket probe) and the video types are in every step, nothing fails. Workers
    with separate plan folders get distinct viewer groups and screens from the master."""
    var = tmp_path / "var"
    settings = Settings(redis_url=store_url, var_dir=var, log_level="WARNING")
    seeded = asyncio.run(seed(settings, members=40, devices=60, train=False))
    steps = tmp_path / "steps.toml"
    steps.write_text(STEPS)
    with run_server(store_url, var) as server:
        master_dir = tmp_path / "master"
        plan = write_plan(master_dir / "plan.json",
                          make_plan(server.url, seeded, screens=2, anonymous_viewers=10))
        stream = SyntheticStream(var / "media" / Plan.load(plan).session_id, kbit_per_s=50)
        stream.start()
        port = free_port()
        prefix = tmp_path / "cap"
        locust = [sys.executable, "-m", "locust", "-f",
                  str(ROOT / "loadtests" / "locust_capacity.py"), "--loglevel", "WARNING"]
        ours = ["--steps", str(steps), "--viewers", "10", "--viewer-group", "5",
                "--shoppers", "2", "--offers-rate", "8", "--screens", "2",
                "--checkin-rate", "4", "--hls-viewers", "4", "--probe-rate", "5",
                "--pin-every", "0.25", "--flash-every", "3", "--buy-within", "0.3"]
        master = subprocess.Popen(
            [*locust, "--master", "--master-bind-host", "127.0.0.1",
             "--master-bind-port", str(port), "--expect-workers", "3", "--headless",
             "--csv", str(prefix), "--only-summary", "--plan", str(plan), *ours],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        workers = []
        for n in range(3):
            # Another machine: its own copy of the plan, its own claims folder.
            own = tmp_path / f"worker{n}"
            own.mkdir()
            shutil.copy(plan, own / "plan.json")
            workers.append(subprocess.Popen(
                [*locust, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port),
                 "--plan", str(own / "plan.json"), *ours],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        try:
            out, _ = master.communicate(timeout=150)
        finally:
            stream.stop()
            for proc in [master, *workers]:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=10)
    records = [json.loads(p.read_text())
               for p in sorted((master_dir / "plan.claims" / "steps").glob("step-*.json"))]
    assert [r["step"] for r in records] == [1, 2], out[-3000:]
    assert [r["groups_in"] for r in records] == [1, 2]  # a group joined at step 2
    for n, record in enumerate(records, 1):
        rows = read_stats(Path(f"{prefix}_step{n:02d}_stats.csv"))
        for key in [("GET", "/healthz"), ("WS", "probe to error"), ("GET", "/offers"),
                    ("GET", "/media playlist"), ("GET", "/media segment"),
                    ("WS", "pin to viewer"), ("POST", "/identity/checkin")]:
            assert key in rows and rows[key].count > 0, (n, key, sorted(rows), out[-3000:])
            assert rows[key].failures == 0, (n, key, out[-3000:])
        assert record["end"] - record["start"] >= 4
    # The second step's pins reach ten viewers, four a second: about twice the first's.
    first = read_stats(Path(f"{prefix}_step01_stats.csv"))[("WS", "pin to viewer")]
    second = read_stats(Path(f"{prefix}_step02_stats.csv"))[("WS", "pin to viewer")]
    assert second.rate > 1.5 * first.rate
    # Pools came from the master: no worker claimed a viewer group or a screen by file.
    for n in range(3):
        claims = tmp_path / f"worker{n}" / "plan.claims"
        taken = sorted(p.name for p in claims.glob("*-*")) if claims.exists() else []
        assert not [t for t in taken if t.startswith(("viewers-", "screens-", "players-"))]
