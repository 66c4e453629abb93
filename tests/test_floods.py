"""Floods against the real service: a reconnect storm, a viewer who never reads, chat
spam and a client opening connections in a loop. The others keep being served."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis as redis_sync

from live.db.client import connect
from live.hub.sessions import Sessions
from live.web.limits import ConnectionLimits
from live.web.settings import Settings
from loadtests.wsclient import LightClient, open_client, wait_all
from tests.commerce_helpers import JWT_SPEC, PEPPER, keyring, make_members, seed
from tests.hub_support import Client
from tests.utils import ServerProcess, run_server, wait_until

ENV = {"NEWRETAIL_JWT_KEYS": JWT_SPEC, "NEWRETAIL_IDENTITY_PEPPER": PEPPER.decode()}
LINEUP = ["mug", "pot", "kite", "lamp"]


def _token(sub: str, role: str) -> str:
    return keyring().issue(sub, role, ttl=900)  # type: ignore[arg-type]


async def _seed(store_url: str) -> None:
    redis = connect(store_url)
    try:
        await seed(redis)
        await make_members(redis, 1)
    finally:
        await redis.aclose()


def _open_session(base: str) -> str:
    resp = httpx.post(f"{base}/live/sessions", json={"title": "Floods", "products": LINEUP},
                      headers={"authorization": f"Bearer {_token('host-1', 'host')}"},
                      timeout=10)
    resp.raise_for_status()
    return str(resp.json()["session_id"])


async def _host(server: ServerProcess, sid: str) -> Client:
    host = await Client.open(server.ws_url, f"/ws/live/{sid}")
    assert (await host.hello(_token("host-1", "host")))["type"] == "welcome"
    return host


async def _join(server: ServerProcess, sid: str, names: list[str], batch: int = 500,
                source: str | None = None) -> list[LightClient]:
    """Viewers that have said hello and been welcomed, opened ``batch`` at a time."""
    clients: list[LightClient] = []
    for lo in range(0, len(names), batch):
        part = await asyncio.gather(*(open_client(server.port, f"/ws/live/{sid}", source=source)
                                      for _ in names[lo:lo + batch]))
        for c, name in zip(part, names[lo:lo + batch], strict=True):
            assert c.status == 101
            c.hello(_token(name, "viewer"))
        assert await wait_all(list(part), lambda c: c.welcome is not None, 60) == []
        clients.extend(part)
    return clients


def _last_seq(c: LightClient) -> int:
    assert c.welcome is not None
    return int(max([c.welcome["seq"], *(e["seq"] for e in c.events())]))


def _metric(server: ServerProcess, line: str) -> float:
    for row in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        if row.startswith(line + " "):
            return float(row.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture
def seeded(store_url: str, sync_redis: redis_sync.Redis) -> str:
    asyncio.run(_seed(store_url))
    return store_url


# A reconnect storm ------------------------------------------------------------------------

STORM = 2000
HISTORY = 50


@pytest.fixture
def storm_server(seeded: str, tmp_path: Path) -> Iterator[ServerProcess]:
    # Default limits: loopback is trusted, so the storm's 2,000 sockets from 127.0.0.1 pass.
    env = {**ENV, "NEWRETAIL_LIVE_HISTORY": str(HISTORY)}
    with run_server(seeded, tmp_path / "web", env=env) as server:
        yield server


async def test_reconnect_storm_all_resume_and_the_server_stays_responsive(
    storm_server: ServerProcess,
) -> None:
    """2,000 viewers reconnect at the same instant with ``since`` (as after a web process
    or a network drop: the fault tests kill a process under 30 viewers): eight in ten
    with a since still in history get ``recovered: true`` and exactly the events after
    it, one in ten with an epoch that is gone and one in ten with a since older than the
    kept history get ``recovered: false`` and no replay. Every one is welcomed and then
    gets every live event, including those published during the storm; /healthz
    answers during the storm. (How long it all takes: ``loadtests/bench_floods.py``.)"""
    server = storm_server
    sid = _open_session(server.url)
    host = await _host(server, sid)
    (probe,) = await _join(server, sid, ["probe"])
    assert probe.welcome is not None
    epoch, joined_at = probe.welcome["epoch"], probe.welcome["seq"]
    for i in range(HISTORY + 20):
        await host.op("pin" if i % 2 == 0 else "unpin", f"a{i}", sku="mug")
    await probe.until(lambda c: _last_seq(c) >= joined_at + HISTORY + 20)
    before = _last_seq(probe)

    def since(i: int) -> dict[str, Any]:
        if i % 10 == 0:
            return {"epoch": "gone", "seq": before}
        if i % 10 == 1:
            return {"epoch": epoch, "seq": joined_at}  # trimmed from history since
        return {"epoch": epoch, "seq": before - i % 20}

    retried: list[int] = []
    opened: list[int] = []

    async def reconnect(i: int) -> LightClient:
        """A viewer page's reconnect: hello with since; when the handshake fails or the
        socket closes before the welcome (an overloaded server drops a hello it could
        not read within 15 s), try again after a short back-off."""
        for attempt in range(6):
            if attempt:
                retried.append(i)
                await asyncio.sleep(0.2 * attempt)  # a page's back-off: part of the scenario
            try:
                c = await open_client(server.port, f"/ws/live/{sid}", timeout=30)
                opened.append(i)
            except (OSError, TimeoutError):
                continue
            if c.status != 101:
                c.close()
                continue
            c.hello(_token(f"v{i}", "viewer"), since(i))
            await c.until(lambda c: c.welcome is not None or c.lost, 60)
            if c.welcome is not None:
                return c
        raise AssertionError(f"viewer {i} could not reconnect")

    during_storm: list[bool] = []  # for each /healthz answer: was the storm still on?

    async def health_during() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            for _ in range(5):
                assert (await http.get(f"{server.url}/healthz")).status_code == 200
                during_storm.append(not storm.done())
                await asyncio.sleep(0.1)  # probes spread over the storm: the scenario

    async def publish_during() -> None:
        for i in range(3):
            await host.op("pin" if i % 2 == 0 else "unpin", f"b{i}", sku="pot")

    storm = asyncio.gather(*(reconnect(i) for i in range(STORM)))
    health = asyncio.create_task(health_during())
    await wait_until(lambda: len(opened) >= 100, "the storm's first 100 handshakes", 60)
    await publish_during()
    back = await storm
    late = await wait_all(back, lambda c: c.welcome is not None, 60)
    await health
    assert late == [], (f"{len(late)} viewers not welcomed; one has lost={late[0].lost} "
                        f"close={late[0].close_code} messages={late[0].messages[:3]}")
    assert during_storm[0], "the health check waited for the whole storm"
    assert (await host.op("chat", "end", text="after the storm"))["type"] == "ack"
    final = (await host.until(lambda m: m.get("type") == "chat"))["seq"]
    assert await wait_all(back, lambda c: _last_seq(c) >= final, 60) == []
    recovered = 0
    for i, c in enumerate(back):
        welcome = c.welcome
        assert welcome is not None
        seqs = [e["seq"] for e in c.events() if e["seq"] <= final]
        if i % 10 in (0, 1):
            assert welcome["recovered"] is False, (i, welcome)
            assert seqs == list(range(welcome["seq"] + 1, final + 1)), f"viewer {i}"
            continue
        assert welcome["recovered"] is True, (i, welcome)
        recovered += 1
        assert seqs == list(range(since(i)["seq"] + 1, final + 1)), f"viewer {i}"
    assert recovered == STORM * 8 // 10
    await host.close()
    for c in [probe, *back]:
        c.close()


# A viewer who never reads -------------------------------------------------------------------

SEND_BUFFER = 64 * 1024
READERS = 20
PINS = 100
# Large events between the pins: loopback lets the kernel hold about 4 MB per socket
# before the server's own bound (64 KB here) starts to fill, so each run sends ~5 MB.
PAD = "x" * 48_000


@pytest.fixture
def one_server(seeded: str, tmp_path: Path) -> Iterator[ServerProcess]:
    env = {**ENV, "NEWRETAIL_WS_SEND_BUFFER": str(SEND_BUFFER)}
    with run_server(seeded, tmp_path / "web", env=env) as server:
        yield server


async def _pin_run(server: ServerProcess, store_url: str, sid: str, host: Client,
                   readers: list[LightClient], tag: str) -> int:
    """The host pins and unpins ``PINS`` times, 20 ms apart, with a 48 KB event between
    each; every reader gets every pin and every event, in order, with no gap. (The pins'
    latency is measured in ``loadtests/bench_floods.py``.)"""
    redis = connect(store_url)
    store = Sessions(redis, 1000)
    start = [len(c.messages) for c in readers]
    try:
        for i in range(PINS):
            reply = await host.op("pin" if i % 2 == 0 else "unpin", f"{tag}{i}", sku="kite")
            assert reply["type"] == "ack", reply
            await store.publish(sid, {"type": "note", "pad": PAD})
            await asyncio.sleep(0.02)  # the stream's pace, part of the scenario
        final = await store.publish(sid, {"type": "note", "n": "end"})
    finally:
        await redis.aclose()
    assert await wait_all(readers, lambda c: _last_seq(c) >= final, 60) == []
    for c, n in zip(readers, start, strict=True):
        run = [m for m in c.messages[n:] if m.get("type") in ("pinned", "unpinned")]
        assert len(run) == PINS
        assert [m["type"] for m in run] == ["pinned", "unpinned"] * (PINS // 2)
        seqs = [e["seq"] for e in c.events()]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a reader missed an event"
    return final


async def test_a_viewer_who_never_reads_is_cut_off_and_the_others_get_every_event(
    one_server: ServerProcess, seeded: str,
) -> None:
    """The same pin stream is sent twice to 20 reading viewers: once alone, once with a
    viewer that stops reading. That one's buffer grows until the server closes it with
    4001; the readers get every event, in order, both times. (Their latency with and
    without it: ``loadtests/bench_floods.py``.)"""
    server = one_server
    sid = _open_session(server.url)
    host = await _host(server, sid)
    readers = await _join(server, sid, [f"r{i}" for i in range(READERS)])
    await _pin_run(server, seeded, sid, host, readers, "a")
    before = _metric(server, 'newretail_ws_disconnects_total{reason="slow_consumer"}')
    stuck = await open_client(server.port, f"/ws/live/{sid}", rcvbuf=4096)
    stuck.hello(_token("stuck", "viewer"))
    await stuck.until(lambda c: c.welcome is not None)
    stuck.pause()

    async def cut_off() -> bool:
        metric = await asyncio.to_thread(
            _metric, server, 'newretail_ws_disconnects_total{reason="slow_consumer"}')
        return metric > before

    watcher = asyncio.create_task(wait_until(cut_off, "the stuck viewer's cut-off", 120, 0.1))
    await _pin_run(server, seeded, sid, host, readers, "b")
    redis = connect(seeded)
    try:  # should the kernel have taken more than the run sent: more until it is cut off
        for _ in range(200):
            if watcher.done():
                break
            await Sessions(redis, 1000).publish(sid, {"type": "note", "pad": PAD})
            await asyncio.sleep(0.02)  # the stream's pace, as above
    finally:
        await redis.aclose()
    await asyncio.wait_for(watcher, 30)
    stuck.resume()
    await stuck.until(lambda c: c.close_code is not None, 10)
    assert stuck.close_code == 4001
    await host.close()
    for c in readers:
        c.close()
    stuck.close()


# Chat spam ----------------------------------------------------------------------------------

SPAM = 150


async def test_chat_spam_is_rate_limited_and_others_chat_on(one_server: ServerProcess) -> None:
    """A member sends 150 chat messages as fast as the socket takes them: beyond the
    per-member limit each gets a ``rate_limited`` error, nothing else; four other members
    chatting meanwhile are all acknowledged and every viewer sees their messages."""
    server = one_server
    sid = _open_session(server.url)
    readers = await _join(server, sid, [f"r{i}" for i in range(10)])
    members = []
    for name in ("spammer", "m1", "m2", "m3", "m4"):
        c = await open_client(server.port, f"/ws/live/{sid}")
        c.hello(_token(name, "member"))
        await c.until(lambda c: c.welcome is not None)
        members.append(c)
    spammer, others = members[0], members[1:]

    def replies(c: LightClient, prefix: str) -> list[dict[str, Any]]:
        return [m for m in c.messages if m.get("type") in ("ack", "error")
                and str(m.get("ref", "")).startswith(prefix)]

    def answered(ref: str) -> Callable[[LightClient], bool]:
        return lambda c: len(replies(c, ref)) == 1

    for i in range(SPAM):
        spammer.send({"op": "chat", "ref": f"s{i}", "text": f"buy my stuff {i}"})
    for round_ in range(3):
        for j, c in enumerate(others):
            c.send({"op": "chat", "ref": f"o{round_}", "text": f"hello from m{j + 1}"})
            await c.until(answered(f"o{round_}"))
            assert replies(c, f"o{round_}")[0]["type"] == "ack"
    await spammer.until(lambda c: len(replies(c, "s")) == SPAM, 60)
    answers = replies(spammer, "s")
    accepted = [m for m in answers if m["type"] == "ack"]
    refused = [m for m in answers if m["type"] == "error"]
    # 5 per 10 s window; a burst straddling a window edge may get two windows' worth.
    assert 5 <= len(accepted) <= 10
    assert {m["code"] for m in refused} == {"rate_limited"}
    assert len(refused) == SPAM - len(accepted)

    def chats(c: LightClient) -> list[str]:
        return [m["from"]["id"] for m in c.events() if m["type"] == "chat"]

    assert await wait_all(readers, lambda c: chats(c).count("m4") == 3, 30) == []
    for c in readers:
        seen = chats(c)
        assert all(seen.count(f"m{j}") == 3 for j in range(1, 5))
        assert seen.count("spammer") == len(accepted)
    for c in readers + members:
        c.close()


# A client opening connections in a loop -------------------------------------------------------

LIMITS_ENV = {**ENV, "NEWRETAIL_WS_TRUSTED": "", "NEWRETAIL_WS_CONN_PER_ADDRESS": "20",
              "NEWRETAIL_WS_CONN_RATE": "2", "NEWRETAIL_WS_CONN_BURST": "30"}


@pytest.fixture
def limited_server(seeded: str, tmp_path: Path) -> Iterator[ServerProcess]:
    with run_server(seeded, tmp_path / "web", env=LIMITS_ENV) as server:
        yield server


def _refusal(c: LightClient) -> dict[str, Any]:
    body = c.refusal.split(b"\r\n\r\n")[-1]
    parsed: dict[str, Any] = orjson.loads(body)
    return parsed


async def test_a_client_opening_connections_in_a_loop_is_refused_others_are_not(
    limited_server: ServerProcess,
) -> None:
    """Over 20 open connections, or past a burst of 30 new ones at 2 per second, one
    address's handshakes get HTTP 429 ``too_many_connections`` (with Retry-After) and no
    WebSocket; another address is served as usual, and so is HTTP."""
    server = limited_server
    sid = _open_session(server.url)
    path = f"/ws/live/{sid}"
    held: list[LightClient] = []
    refused: list[LightClient] = []
    for _ in range(40):
        c = await open_client(server.port, path)
        (held if c.status == 101 else refused).append(c)
    assert len(held) == 20 and len(refused) == 20
    for c in refused:
        assert c.status == 429
        await c.until(lambda c: c.lost, 10)
        body = _refusal(c)
        assert body["error"]["code"] == "too_many_connections"
        assert "open connections" in body["error"]["message"]
        assert b"\r\nretry-after: 1" in c.head.lower()
    # Another address, and plain HTTP, are not held up by it.
    other = await open_client(server.port, path, source="127.0.0.2")
    assert other.status == 101
    other.hello(_token("other", "viewer"))
    await other.until(lambda c: c.welcome is not None)
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    # The held ones still work: a refused neighbour does not disturb them.
    held[0].hello(_token("held-0", "viewer"))
    await held[0].until(lambda c: c.welcome is not None)
    for c in held:
        c.close()
    await wait_all(held, lambda c: c.lost, 10)
    # Now the rate, from a fresh address: a burst of 30, then 2 per second.
    fresh = "127.0.0.3"
    opened = refused_rate = 0
    t0 = time.monotonic()
    for _ in range(60):
        c = await open_client(server.port, path, source=fresh)
        if c.status == 101:
            opened += 1
        else:
            refused_rate += 1
            await c.until(lambda c: c.lost, 10)
            assert "per second" in _refusal(c)["error"]["message"]
        c.close()
    rate_loop_s = time.monotonic() - t0  # the bucket's refill bounds what may open
    assert 30 <= opened <= 30 + 2 * rate_loop_s + 1 and refused_rate == 60 - opened >= 1
    # And after a pause a new connection is admitted again.

    async def admitted() -> bool:
        c = await open_client(server.port, path, source=fresh)
        c.close()
        return c.status == 101

    await wait_until(admitted, "a new connection admitted once the bucket refilled", 10, 0.25)
    assert _metric(server, 'newretail_ws_disconnects_total{reason="address_limit"}') >= 40
    other.close()


def test_connection_limits_count_per_address_with_a_token_bucket() -> None:
    """The limiter on its own, on a clock the test moves: the burst, the refill, the
    per-address cap, trusted networks, and forgetting idle addresses."""
    now = [1000.0]
    limits = ConnectionLimits(per_address=3, rate=2.0, burst=4,
                              trusted=ConnectionLimits.from_settings(
                                  Settings(ws_trusted=("10.0.0.0/8", "::1"))).trusted,
                              clock=lambda: now[0])
    assert [limits.admit("192.0.2.1")[0] for _ in range(4)] == [True, True, True, False]
    assert "open connections" in limits.admit("192.0.2.1")[1]
    limits.release("192.0.2.1")
    assert limits.admit("192.0.2.1") == (True, "")  # the 4th token of the burst
    limits.release("192.0.2.1")
    ok, why = limits.admit("192.0.2.1")
    assert not ok and "per second" in why
    now[0] += 0.5  # one token back at 2 per second
    assert limits.admit("192.0.2.1")[0] and limits.admit("192.0.2.2")[0]
    assert all(limits.admit("10.1.2.3")[0] for _ in range(100))
    assert all(limits.admit("::1")[0] for _ in range(100))
    assert limits.admit("not-an-address")[0]  # a unix socket: nothing to count
    for _ in range(3):
        limits.release("192.0.2.1")
    limits.release("192.0.2.2")
    now[0] += 120
    limits.admit("192.0.2.9")
    assert limits.open_count("192.0.2.1") == 0 and "192.0.2.1" not in limits._buckets


def test_limit_settings_come_from_the_environment() -> None:
    s = Settings.from_env({"NEWRETAIL_WS_TRUSTED": "", "NEWRETAIL_WS_CONN_PER_ADDRESS": "7",
                           "NEWRETAIL_WS_CONN_RATE": "2.5", "NEWRETAIL_STORE_TIMEOUT": "0.5"})
    assert s.ws_trusted == () and s.ws_conn_per_address == 7 and s.ws_conn_rate == 2.5
    assert s.db_timeout == 0.5
    assert Settings.from_env({}).ws_trusted == ("127.0.0.1", "::1")
    for bad in ({"NEWRETAIL_WS_TRUSTED": "localhost"}, {"NEWRETAIL_WS_CONN_RATE": "0"},
                {"NEWRETAIL_STORE_TIMEOUT": "soon"}):
        with pytest.raises(ValueError):
            Settings.from_env(bad)
