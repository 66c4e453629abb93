"""A short real Locust run of the live-sale user classes against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import redis as redis_sync

from live.web.settings import Settings
from loadtests.check_budget import read_stats
from loadtests.sale.seed import make_plan, seed, write_plan
from tests.utils import run_server

ROOT = Path(__file__).resolve().parent.parent


def test_locust_reports_websocket_latencies(
    store_url: str, sync_redis: redis_sync.Redis, tmp_path: Path,
) -> None:
    """Viewers, host, shoppers, screens and the two floor probes run under Locust with
    two worker processes; pin-to-viewer, checkout-to-order and the floors reach Locust's
    statistics next to the HTTP types, and nothing fails. The worker holding the viewers
    runs ``--fanout-nice`` behind the one holding the HTTP users."""
    var = tmp_path / "var"  # the signing keys and pepper: made here, read by the server
    settings = Settings(redis_url=store_url, var_dir=var, log_level="WARNING")
    seeded = asyncio.run(seed(settings, members=40, devices=40, train=False))
    with run_server(store_url, var) as server:
        plan = write_plan(tmp_path / "plan.json",
                          make_plan(server.url, seeded, screens=2, anonymous_viewers=10))
        prefix = tmp_path / "lt"
        cmd = [
            sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"),
            "--headless", "--processes", "2", "-u", "9", "-r", "9", "-t", "5s",
            "--stop-timeout", "3", "--csv", str(prefix), "--only-summary",
            "--plan", str(plan), "--viewers", "10", "--viewer-group", "5",
            "--shoppers", "2", "--offers-rate", "20", "--screens", "2", "--checkin-rate", "6",
            "--pin-every", "0.25", "--flash-every", "8", "--buy-chance", "1",
            "--buy-within", "0.3", "--fanout-nice", "3", "--probe-rate", "5",
        ]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    rows = read_stats(Path(f"{prefix}_stats.csv"))
    assert rows, done.stderr[-3000:]
    for key in [("WS", "pin to viewer"), ("WS", "checkout to order"), ("WS", "join"),
                ("GET", "/offers"), ("POST", "/identity/checkin"),
                ("handler", "/offers"), ("handler", "/identity/checkin"),
                ("GET", "/healthz"), ("WS", "probe to error")]:
        assert key in rows and rows[key].count > 0, (key, sorted(rows), done.stderr[-3000:])
        assert rows[key].failures == 0, (key, done.stderr[-3000:])
    # Every viewer connection measures every pin: ten viewers, several pins each.
    assert rows[("WS", "pin to viewer")].count >= 10 * 3
    assert rows[("WS", "join")].count == 10 + 1 + 1  # the viewers, the host, the WS probe
    # Each worker wrote what it read and its niceness: the viewers' worker read every
    # pin and took the extra niceness, the shoppers' and screens' worker read nothing.
    base = os.getpriority(os.PRIO_PROCESS, 0)
    reads = [json.loads(p.read_text()) for p in (tmp_path / "plan.claims").glob("read-*.json")]
    assert sorted((r["frames"] > 0, r["nice"]) for r in reads) == [
        (False, base), (True, min(base + 3, 19))], reads
