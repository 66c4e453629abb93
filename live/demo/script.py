"""The demo's scripted host and viewers: real WebSocket clients of the running server,
so a newcomer who opens the viewer page sees a live session at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

from identity.codes import member_code
from identity.tokens import KeyRing
from identity.types import DeviceIndex

log = logging.getLogger("newretail.live")

HOST_LINES = (
    "Welcome everyone! Ask me anything about what you see.",
    "This one is a customer favourite, it sells out every time.",
    "Flash sale coming up in a moment, keep your fingers ready!",
    "Thanks for the hearts, you're amazing.",
    "Yes, it ships from the store nearest to you when it has it.",
)
VIEWER_LINES = (
    "love this!", "how big is it?", "does it come in blue?", "just bought one 🙌",
    "first time here, hi all", "the price is great", "is shipping free?", "wow",
)
REACTIONS = ("heart", "fire", "clap", "wow")
# Demo members who walk up to the store screen now and then (their phones are in Ofcom's
# drama range, see live.demo.seed); a check-in shows for a minute, then the screen idles.
SHOPPER_PHONES = ("+447700900001", "+447700900002", "+447700900004")
CHECKIN_EVERY = 90.0


@dataclass(frozen=True)
class DemoUrls:
    session_id: str
    viewer: str
    host: str
    screen: str
    me: str
    admin_token: str = ""


class Client:
    """One scripted WebSocket participant."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ref = 0

    async def op(self, op: str, **fields: Any) -> None:
        self.ref += 1
        await self.ws.send(orjson.dumps({"op": op, "ref": str(self.ref), **fields}).decode())

    async def drain(self) -> None:
        """Read and drop what the server sends (a client that does not read is cut off)."""
        async for _ in self.ws:
            pass


async def _join(base_ws: str, session_id: str, token: str) -> Client:
    ws = await connect(f"{base_ws}/ws/live/{session_id}", subprotocols=["newretail.json"])  # type: ignore[list-item]
    await ws.send(orjson.dumps({"op": "hello", "token": token}).decode())
    await ws.recv()
    return Client(ws)


async def _schedule_and_replay(http: httpx.AsyncClient, host_token: str,
                               lineup: list[str]) -> None:
    """The home page's other rows: a live scheduled for later, and an ended one (a replay)."""
    auth = {"authorization": f"Bearer {host_token}"}
    res = await http.post("/live/sessions", headers=auth, json={
        "title": "Sunday brunch table, live", "products": lineup[:3],
        "starts_at": time.time() + 2 * 3600,
        "teaser": "Linen, mugs and a teapot you will want to keep: set the table with us.",
    })
    res.raise_for_status()
    res = await http.post("/live/sessions", headers=auth, json={
        "title": "Last week: winter warmers", "products": lineup[3:] or lineup})
    res.raise_for_status()
    ended = res.json()["session_id"]
    base_ws = str(http.base_url).rstrip("/").replace("http", "ws", 1)
    host = await _join(base_ws, ended, host_token)
    await host.op("end")
    async for raw in host.ws:  # until the session's end comes back
        if orjson.loads(raw).get("type") in ("ended", "error"):
            break
    await host.ws.close()


async def run_script(
    base: str, ring: KeyRing, member_ids: list[str], lineup: list[str],
    ready: threading.Event | None = None, urls: list[DemoUrls] | None = None,
    stop: asyncio.Event | None = None, rng: random.Random | None = None,
) -> None:
    """Create a session and run the host and viewers until ``stop`` is set."""
    rng = rng or random.Random(11)
    stop = stop or asyncio.Event()
    host_token = ring.issue("demo-host", "host", ttl=12 * 3600)
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        res = await http.post(
            "/live/sessions", headers={"authorization": f"Bearer {host_token}"},
            json={"title": "Cosy home, live: this week's favourites", "products": lineup},
        )
        res.raise_for_status()
        session_id = res.json()["session_id"]
        await _schedule_and_replay(http, host_token, lineup)
    screen_token = ring.issue("screen-soho-1", "screen", ttl=12 * 3600, store="store-soho")
    made = DemoUrls(
        session_id=session_id,
        viewer=f"{base}/live/{session_id}",
        host=f"{base}/host/{session_id}?token={host_token}",
        screen=f"{base}/screen/screen-soho-1?token={screen_token}",
        me=f"{base}/me",
        admin_token=ring.issue("demo-admin", "admin", ttl=12 * 3600),
    )
    if urls is not None:
        urls.append(made)
    if ready is not None:
        ready.set()
    base_ws = base.replace("http", "ws", 1)
    host = await _join(base_ws, session_id, host_token)
    viewers = [
        await _join(base_ws, session_id, ring.issue(m, "member", ttl=12 * 3600))
        for m in member_ids
    ]
    readers = [asyncio.create_task(c.drain()) for c in (host, *viewers)]
    shoppers = asyncio.create_task(_screen_loop(base, ring, screen_token, stop))
    try:
        await _script_loop(host, viewers, lineup, rng, stop)
    finally:
        for task in (*readers, shoppers):
            task.cancel()
        for c in (host, *viewers):
            await c.ws.close()


async def _script_loop(
    host: Client, viewers: list[Client], lineup: list[str], rng: random.Random,
    stop: asyncio.Event,
) -> None:
    tick = 0
    flash_until = 0.0
    while not stop.is_set():
        if tick % 20 == 0:
            await host.op("pin", sku=lineup[(tick // 20) % len(lineup)])
        if tick % 15 == 5:
            await host.op("chat", text=rng.choice(HOST_LINES))
        if tick % 90 == 30 and time.time() > flash_until:
            sku = rng.choice(lineup)
            # money on the wire; a pound is below every demo product's list price
            await host.op("flash.start", sku=sku, price={"amount": 100, "currency": "GBP"},
                          qty=40, seconds=60)
            flash_until = time.time() + 60
            for v in rng.sample(viewers, k=max(1, len(viewers) // 2)):
                await v.op("cart.add", sku=sku, qty=1)
                await v.op("checkout", idempotency_key=uuid.uuid4().hex)
        viewer = rng.choice(viewers)
        if rng.random() < 0.25:
            await viewer.op("chat", text=rng.choice(VIEWER_LINES))
        for v in rng.sample(viewers, k=min(3, len(viewers))):
            await v.op("react", kind=rng.choice(REACTIONS))
        tick += 1
        try:
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        except TimeoutError:
            pass


async def _screen_loop(base: str, ring: KeyRing, screen_token: str, stop: asyncio.Event) -> None:
    """Scripted shoppers sign in once (code from the dev outbox, as a phone would get it
    by text) and then check in at the store screen in turn with their member code."""
    admin = {"authorization": f"Bearer {ring.issue('demo-admin', 'admin', ttl=12 * 3600)}"}
    devices: list[tuple[DeviceIndex, bytes]] = []
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            for phone in SHOPPER_PHONES:
                (await http.post("/identity/otp/request", json={"phone": phone})).raise_for_status()
                outbox = (await http.get("/identity/dev/outbox", headers=admin)).json()
                code = next(m["code"] for m in outbox["messages"] if m["phone"] == phone)
                signed = (await http.post("/identity/otp/verify", json={
                    "phone": phone, "code": code, "device_id": "demo-shopper"})).json()
                devices.append((DeviceIndex(signed["device_index"]),
                                bytes.fromhex(signed["device_secret"])))
            turn = 0
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=CHECKIN_EVERY / 3 if turn == 0
                                           else CHECKIN_EVERY)
                if stop.is_set():
                    return
                index, secret = devices[turn % len(devices)]
                await http.post("/identity/checkin", json={
                    "code": member_code(index, secret, time.time())},
                    headers={"authorization": f"Bearer {screen_token}"})
                turn += 1
    except (httpx.HTTPError, KeyError, StopIteration, ValueError):
        log.exception("the demo's shoppers stopped checking in")


def start_in_thread(
    base: str, ring: KeyRing, member_ids: list[str], lineup: list[str],
    on_ready: Callable[[DemoUrls], None] | None = None,
) -> tuple[threading.Thread, list[DemoUrls], threading.Event]:
    """Run the script in a thread of its own once the server answers /healthz."""
    urls: list[DemoUrls] = []
    ready = threading.Event()

    def main() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        def announce() -> None:
            ready.wait()
            if urls and on_ready is not None:
                on_ready(urls[0])

        threading.Thread(target=announce, daemon=True).start()
        try:
            asyncio.run(run_script(base, ring, member_ids, lineup, ready=ready, urls=urls))
        except Exception:
            log.exception("the demo script stopped")
            ready.set()

    thread = threading.Thread(target=main, name="demo-script", daemon=True)
    thread.start()
    return thread, urls, ready
