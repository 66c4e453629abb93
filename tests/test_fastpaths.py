"""The fast paths under uvicorn and websockets are the ones in use in ``newretail serve``.

They rely on those libraries' internals (``live/uvicorn``, ``live/websockets``): an upgrade
that renames an attribute or wraps ``send`` would quietly put every connection back on the
slow path with everything still working. These tests fail loudly instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import orjson
import uvicorn
import websockets
from websockets.asyncio.client import connect

from tests.utils import run_server

_TAKEN = re.compile(r'^newretail_fastpath_taken_total\{path="(\w+)"\} ([0-9.e+]+)$', re.M)


def fast_paths_taken(base: str) -> dict[str, float]:
    """The server's count of each fast path taken, from its Prometheus endpoint."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return {path: float(count) for path, count in _TAKEN.findall(text)}


async def test_serve_takes_every_fast_path(store_url: str, tmp_path: Path) -> None:
    """A request and a WebSocket exchange against ``newretail serve`` go through the
    one-write response, the raw socket writer and the frame fast path."""
    with run_server(store_url, tmp_path) as server:
        base = f"http://127.0.0.1:{server.port}"
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
        async with connect(f"ws://127.0.0.1:{server.port}/ws/live/no-such-session",
                           subprotocols=["newretail.json"]) as ws:  # type: ignore[list-item]
            await ws.send(orjson.dumps({"op": "hello", "token": "not-a-token"}).decode())
            reply = orjson.loads(await ws.recv())
        assert reply["type"] == "error", reply
        taken = fast_paths_taken(base)
    versions = f"uvicorn {uvicorn.__version__}, websockets {websockets.__version__}"
    assert set(taken) == {"raw_send", "frames", "one_write"}, taken
    assert taken["one_write"] >= 1, (
        f"responses no longer go out head and body in one write ({versions}): "
        "live/uvicorn/http.py no longer matches uvicorn's httptools protocol")
    assert taken["raw_send"] >= 1, (
        f"WebSocket frames no longer go straight to the socket ({versions}): "
        "live/uvicorn/rawconn.py no longer recognises uvicorn's sans-I/O protocol")
    assert taken["frames"] >= 1, (
        f"client frames no longer skip the websockets parser ({versions}): "
        "live/websockets/parser.py no longer finds where that parser stands")
