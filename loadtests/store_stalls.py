"""What the store itself waited on during a step: Valkey's latency monitor.

With ``appendfsync always`` (the service's default: every acknowledged write on disk)
the store writes and fsyncs its append-only file in its one event loop before it
answers; while a slow fsync is under way no command of any client is served, reads
included. The latency monitor records every such event over a threshold
(``aof-fsync-always``, ``aof-write``, ``command``, ...): reset at a step's start and read at
its end, it says how long the store stood still and how often.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

STATE_FILE = "server.json"  # live/db/server.py: the embedded store's pid and port


def store_url(var: Path) -> str | None:
    """The embedded store's URL, from the state file it writes under ``var/store``."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        info = json.loads((var / "store" / STATE_FILE).read_text())
        return f"redis://127.0.0.1:{int(info['port'])}/0"
    return None


class StoreStalls:
    """Resets and reads the store's latency monitor (events of ``threshold_ms`` or more)."""

    def __init__(self, url: str, threshold_ms: int = 1) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=5)
        self.client.config_set("latency-monitor-threshold", threshold_ms)

    def reset(self) -> None:
        with contextlib.suppress(Exception):
            self.client.execute_command("LATENCY", "RESET")

    def read(self) -> dict[str, dict[str, float]]:
        """Per event: the seconds it happened in (the monitor keeps the worst of each
        second) and the worst, in ms."""
        out: dict[str, dict[str, float]] = {}
        try:
            latest: Any = self.client.execute_command("LATENCY", "LATEST")
            for entry in latest or []:
                event = entry[0].decode() if isinstance(entry[0], bytes) else str(entry[0])
                history: Any = self.client.execute_command("LATENCY", "HISTORY", event)
                worst = [int(h[1]) for h in history or []]
                out[event] = {"seconds": float(len(worst)),
                              "max_ms": float(max(worst, default=0)),
                              "p50_of_seconds_ms": float(sorted(worst)[len(worst) // 2])
                              if worst else 0.0}
        except Exception:  # the figure is extra: never fail the run for it
            return {}
        return out


def render(stalls: dict[str, dict[str, float]]) -> str:
    """``aof-fsync-always 38 s, worst 21 ms`` and so on, the worst first."""
    parts = [f"{event} in {int(v['seconds'])} s, worst {v['max_ms']:.0f} ms"
             for event, v in sorted(stalls.items(), key=lambda kv: -kv[1].get("max_ms", 0))
             if event != "error"]
    return "; ".join(parts) or "none over the threshold"
