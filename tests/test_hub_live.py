"""The live hub against two real server processes sharing one store, with real clients."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import redis as redis_sync
from websockets.exceptions import ConnectionClosed

from identity.members import Members
from live.hub.hub import Hub
from live.hub.keys import channel
from live.hub.rooms import HubConfig
from live.hub.sessions import Sessions
from live.protocol.messages import friendly_label
from tests.hub_support import (
    ENV,
    Client,
    create_session,
    seed_products,
    session_events,
    token,
)
from tests.utils import ServerProcess, run_server, wait_until

HISTORY = 40
SEND_BUFFER = 64 * 1024
SERVER_ENV = {
    **ENV, "NEWRETAIL_LIVE_HISTORY": str(HISTORY), "NEWRETAIL_WS_SEND_BUFFER": str(SEND_BUFFER),
    "NEWRETAIL_LIVE_COALESCE": "0.2", "NEWRETAIL_LIVE_VIEWERS_EVERY": "0.3",
}


@pytest.fixture(scope="module")
def servers(
    store_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    var = tmp_path_factory.mktemp("hub")
    with run_server(store_url, var / "a", env=SERVER_ENV) as a, \
            run_server(store_url, var / "b", env=SERVER_ENV) as b:
        yield a, b


@pytest.fixture
async def session(
    servers: tuple[ServerProcess, ServerProcess], redis: Any, sync_redis: redis_sync.Redis
) -> str:
    await seed_products(redis)
    return create_session(servers[0].url)


async def _host(server: ServerProcess, sid: str) -> Client:
    host = await Client.open(server.ws_url, f"/ws/live/{sid}")
    assert (await host.hello(token("host-1", "host")))["type"] == "welcome"
    return host


async def _viewer(server: ServerProcess, sid: str, i: int, mp: bool = False) -> Client:
    c = await Client.open(server.ws_url, f"/ws/live/{sid}", msgpack_format=mp)
    welcome = await c.hello(token(f"member-{i}", "member"))
    assert welcome["type"] == "welcome" and welcome["role"] == "member"
    return c


def test_sessions_over_http(servers: tuple[ServerProcess, ServerProcess], session: str) -> None:
    """Hosts open sessions, viewers may not, bad bodies are refused, live ones are listed."""
    url = servers[1].url
    listed = httpx.get(f"{url}/live/sessions").json()["sessions"]
    assert [s["session_id"] for s in listed] == [session]
    viewer = {"authorization": f"Bearer {token('anon-1', 'viewer')}"}
    resp = httpx.post(f"{url}/live/sessions", json={"title": "x"}, headers=viewer)
    assert resp.status_code == 403
    host = {"authorization": f"Bearer {token('host-1', 'host')}"}
    for body in ({"title": ""}, {"title": "x", "products": "SKU1"},
                 {"title": "x", "products": ["NOPE"]}, {"title": "x", "video_url": "ftp://x"}):
        resp = httpx.post(f"{url}/live/sessions", json=body, headers=host)
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "bad_request"
    assert httpx.get(f"{url}/live/sessions/nope").status_code == 404


async def test_two_processes_same_events_same_order(
    servers: tuple[ServerProcess, ServerProcess], session: str
) -> None:
    """Viewers on two processes (JSON and msgpack) get the same events in the same order."""
    a, b = servers
    host = await _host(a, session)
    viewers = [await _viewer(a if i % 2 else b, session, i, mp=i % 3 == 0) for i in range(12)]
    start = max(v.welcome["seq"] for v in viewers)
    for i, sku in enumerate(["SKU1", "SKU2", "SKU3"]):
        assert (await host.op("pin", f"p{i}", sku=sku))["type"] == "ack"
    assert (await host.op("pin", "p4", sku="SKU4"))["code"] == "too_many_pins"
    assert (await host.op("pin", "p5", sku="SKU1"))["code"] == "already_pinned"
    assert (await host.op("pin", "p6", sku="NOPE"))["code"] == "not_found"
    assert (await host.op("unpin", "u1", sku="SKU2"))["type"] == "ack"
    assert (await host.op("unpin", "u2", sku="SKU2"))["code"] == "not_found"
    assert (await host.op("chat", "c1", text="welcome all"))["type"] == "ack"
    last = await host.until(lambda m: m.get("type") == "chat")
    for v in viewers:
        await v.until(lambda m, s=last["seq"]: m.get("seq") == s)
    reference = session_events(viewers[0], start)
    assert [t for _, t in reference if t in ("pinned", "unpinned", "chat")] == [
        "pinned", "pinned", "pinned", "unpinned", "chat"]
    seqs = [s for s, _ in reference]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    for v in viewers[1:]:
        assert session_events(v, start) == reference
    assert viewers[3].events[-1]["text"] == "welcome all"
    for c in [host, *viewers]:
        await c.close()


async def test_resume_replays_exactly_what_was_missed(
    servers: tuple[ServerProcess, ServerProcess], session: str
) -> None:
    """A viewer that drops and comes back with since gets the missed events, in order."""
    a, b = servers
    host = await _host(a, session)
    viewer = await _viewer(b, session, 1)
    await host.op("pin", "p1", sku="SKU1")
    seen = await viewer.until(lambda m: m.get("type") == "pinned")
    epoch = viewer.welcome["epoch"]
    await viewer.close()
    await host.op("unpin", "u1")
    await host.op("pin", "p2", sku="SKU2")
    await host.op("chat", "c1", text="you missed this")
    back = await Client.open(b.ws_url, f"/ws/live/{session}")
    welcome = await back.hello(token("member-1", "member"), {"epoch": epoch, "seq": seen["seq"]})
    assert welcome["recovered"] is True
    missed = await back.until(lambda m: m.get("seq") == welcome["seq"])
    got = [(e["seq"], e["type"]) for e in back.events]
    assert got[0][0] == seen["seq"] + 1 and got[-1] == (welcome["seq"], missed["type"])
    assert [s for s, _ in got] == list(range(seen["seq"] + 1, welcome["seq"] + 1))
    assert [t for _, t in got if t != "viewers"] == ["unpinned", "pinned", "chat"]
    await host.op("chat", "c2", text="live again")
    live = await back.until(lambda m: m.get("type") == "chat")
    assert live["seq"] > welcome["seq"] and live["text"] == "live again"
    await host.close()
    await back.close()


async def test_stale_epoch_or_trimmed_history_is_not_recovered(
    servers: tuple[ServerProcess, ServerProcess], session: str, redis: Any
) -> None:
    """An unknown epoch or a since older than the kept history gets recovered false and
    no replay at all (never a partial one)."""
    a, _ = servers
    viewer = await _viewer(a, session, 1)
    epoch, seq = viewer.welcome["epoch"], viewer.welcome["seq"]
    await viewer.close()
    stale = await Client.open(a.ws_url, f"/ws/live/{session}")
    welcome = await stale.hello(token("member-1", "member"), {"epoch": "other", "seq": seq})
    assert welcome["recovered"] is False
    await stale.close()
    store = Sessions(redis, HISTORY)
    for i in range(HISTORY + 5):
        await store.publish(session, {"type": "note", "n": i})
    late = await Client.open(a.ws_url, f"/ws/live/{session}")
    welcome = await late.hello(token("member-1", "member"), {"epoch": epoch, "seq": seq})
    assert welcome["recovered"] is False and welcome["seq"] >= seq + HISTORY + 5
    await store.publish(session, {"type": "note", "n": "next"})
    nxt = await late.until(lambda m: m.get("type") == "note")
    assert nxt["n"] == "next" and [e["n"] for e in late.events if e["type"] == "note"] == ["next"]
    await late.close()


async def test_every_bad_frame_gets_an_error_and_the_connection_goes_on(
    servers: tuple[ServerProcess, ServerProcess], session: str
) -> None:
    """Malformed frames, unknown ops, bad payloads and wrong roles each get a clear error."""
    a, _ = servers
    c = await Client.open(a.ws_url, f"/ws/live/{session}")
    await c.ws.send("not json")
    assert (await c.recv())["code"] == "bad_frame"
    await c.send({"op": "chat", "text": "before hello"})
    assert (await c.recv())["code"] == "bad_frame"
    err = await c.hello("not-a-token")
    assert err["type"] == "error" and err["code"] == "unauthorized"
    await c.hello(token("member-7", "member"))
    await c.ws.send("[1, 2]")
    assert (await c.until(lambda m: m.get("type") == "error"))["code"] == "bad_frame"
    cases = [
        ({"op": "fly", "ref": "r1"}, "unknown_op"),
        ({"op": "chat", "ref": "r2"}, "bad_request"),
        ({"op": "chat", "ref": "r3", "text": "x" * 281}, "bad_request"),
        ({"op": "react", "ref": "r4", "kind": "meh"}, "bad_request"),
        ({"op": "pin", "ref": "r5", "sku": "SKU1"}, "forbidden"),
        ({"op": "end", "ref": "r6"}, "forbidden"),
        ({"op": "mute", "ref": "r7", "member_id": "member-8"}, "forbidden"),
        ({"op": "hello", "ref": "r8", "token": "x"}, "bad_frame"),
        ({"op": "chat", "ref": ["r"], "text": "hi"}, "bad_frame"),
    ]
    for frame, code in cases:
        await c.send(frame)
        err = await c.until(lambda m: m.get("type") == "error")
        assert err["code"] == code, frame
        assert err["ref"] == (frame["ref"] if isinstance(frame["ref"], str) else None)
    packed = await Client.open(a.ws_url, f"/ws/live/{session}", msgpack_format=True)
    await packed.ws.send(b"\xc1")
    assert (await packed.recv())["code"] == "bad_frame"
    assert (await packed.hello(token("member-8", "member")))["type"] == "welcome"
    await packed.ws.send(b"\x93\x01\x02\x03")
    assert (await packed.until(lambda m: m.get("type") == "error"))["code"] == "bad_frame"
    viewer = await Client.open(a.ws_url, f"/ws/live/{session}")
    await viewer.hello(token("anon-1", "viewer"))
    assert (await c.op("chat", "ok", text="still here"))["type"] == "ack"
    assert (await packed.until(lambda m: m.get("type") == "chat"))["text"] == "still here"
    await packed.close()
    said = await viewer.until(lambda m: m.get("type") == "chat")
    assert said["text"] == "still here" and said["seq"] > viewer.welcome["seq"]
    assert (await viewer.op("chat", "v1", text="hi"))["code"] == "sign_in_required"
    assert (await viewer.op("react", "v2", kind="heart"))["type"] == "ack"
    await c.close()
    await viewer.close()


async def test_only_hosts_run_host_ops_and_a_refusal_changes_nothing(
    servers: tuple[ServerProcess, ServerProcess], session: str
) -> None:
    """Viewers and members get forbidden for every host op; no event is published, no pin
    is made, the session stays live; a host's own op then goes through."""
    a, b = servers
    host = await _host(a, session)
    assert (await host.op("chat", "h0", text="hello all"))["type"] == "ack"
    chat = await host.until(lambda m: m.get("type") == "chat")
    member = await _viewer(b, session, 3)
    anon = await Client.open(a.ws_url, f"/ws/live/{session}", msgpack_format=True)
    assert (await anon.hello(token("anon-3", "viewer")))["role"] == "viewer"
    host_ops = [("pin", {"sku": "SKU1"}), ("unpin", {}), ("chat.remove", {"id": chat["id"]}),
                ("mute", {"member_id": "member-3"}), ("end", {}),
                ("flash.start", {"sku": "SKU1", "price": {"amount": 100, "currency": "GBP"},
                                 "qty": 5, "seconds": 30}),
                ("flash.stop", {})]
    for c in (member, anon):
        for i, (name, payload) in enumerate(host_ops):
            err = await c.op(name, f"x{i}", **payload)
            assert (err["type"], err["code"]) == ("error", "forbidden"), name
    assert (await member.op("chat", "m1", text="not muted"))["type"] == "ack"
    said = await anon.until(lambda m: m.get("type") == "chat" and m["text"] == "not muted")
    await member.until(lambda m: m.get("seq") == said["seq"])
    for c in (member, anon):
        assert [e["seq"] for e in c.events if e["type"] != "viewers"] == [said["seq"]]
    listed = httpx.get(f"{a.url}/live/sessions/{session}").json()
    assert listed["status"] == "live"
    again = await Client.open(b.ws_url, f"/ws/live/{session}")
    state = (await again.hello(token("member-4", "member")))["state"]
    assert state["pinned"] == [] and [m["id"] for m in state["chat"]] == [chat["id"],
                                                                           said["id"]]
    assert (await host.op("pin", "h1", sku="SKU1"))["type"] == "ack"
    assert (await anon.until(lambda m: m.get("type") == "pinned"))["sku"] == "SKU1"
    for c in (host, member, anon, again):
        await c.close()


async def test_a_host_runs_only_the_sessions_they_host(
    servers: tuple[ServerProcess, ServerProcess], session: str
) -> None:
    """Another host may watch and chat, but every host op, over the socket or HTTP, is
    forbidden and changes nothing; an admin may run any session; its own host goes on."""
    a, b = servers
    other = await Client.open(b.ws_url, f"/ws/live/{session}")
    assert (await other.hello(token("host-2", "host")))["role"] == "host"
    assert (await other.op("chat", "o0", text="hello from next door"))["type"] == "ack"
    for i, (name, payload) in enumerate([
            ("pin", {"sku": "SKU1"}), ("unpin", {}), ("mute", {"member_id": "member-3"}),
            ("chat.remove", {"id": "c000000000000"}), ("end", {}), ("flash.stop", {}),
            ("flash.start", {"sku": "SKU1", "price": {"amount": 100, "currency": "GBP"},
                             "qty": 5, "seconds": 30})]):
        err = await other.op(name, f"o{i + 1}", **payload)
        assert (err["type"], err["code"]) == ("error", "forbidden"), name
        assert "hosted by someone else" in err["message"]
    intruder = {"Authorization": f"Bearer {token('host-2', 'host')}"}
    sale = {"sku": "SKU1", "price": {"amount": 100, "currency": "GBP"}, "qty": 5, "seconds": 30}
    for method, path, body in [
            ("POST", "flash-sale", sale), ("DELETE", "flash-sale", None),
            ("GET", "figures", None), ("GET", "suggestions", None)]:
        r = httpx.request(method, f"{a.url}/live/sessions/{session}/{path}", json=body,
                          headers=intruder, timeout=10)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", (path, r.text)
    state = httpx.get(f"{a.url}/live/sessions/{session}").json()
    assert state["status"] == "live" and state["host"] == "host-1"
    assert httpx.get(f"{a.url}/live/sessions/{session}/flash-sale").json()["flash_sale"] is None
    admin = await Client.open(a.ws_url, f"/ws/live/{session}")
    await admin.hello(token("ops-1", "admin"))
    assert (await admin.op("pin", "a1", sku="SKU1"))["type"] == "ack"
    assert (await other.until(lambda m: m.get("type") == "pinned"))["sku"] == "SKU1"
    host = await _host(a, session)
    assert (await host.op("unpin", "h1", sku="SKU1"))["type"] == "ack"
    assert (await other.until(lambda m: m.get("type") == "unpinned"))["sku"] == "SKU1"
    r = httpx.get(f"{a.url}/live/sessions/{session}/figures", timeout=10,
                  headers={"Authorization": f"Bearer {token('host-1', 'host')}"})
    assert r.status_code == 200
    for c in (other, admin, host):
        await c.close()


async def test_frame_over_the_limit_closes_1009(
    servers: tuple[ServerProcess, ServerProcess], session: str
) -> None:
    """A frame over the size limit closes the connection with 1009."""
    c = await Client.open(servers[0].ws_url, f"/ws/live/{session}", max_size=None)
    await c.hello(token("member-1", "member"))
    await c.ws.send("x" * (64 * 1024 + 10))
    with pytest.raises(ConnectionClosed):
        await c.until(lambda m: False)
    assert c.ws.close_code == 1009


async def test_host_moderation_and_end(
    servers: tuple[ServerProcess, ServerProcess], session: str
) -> None:
    """Hosts remove chat messages and mute members; ending is final and unlisted."""
    a, b = servers
    host = await _host(a, session)
    member = await _viewer(b, session, 5)
    assert (await member.op("chat", "m1", text="spam spam"))["type"] == "ack"
    chat = await host.until(lambda m: m.get("type") == "chat")
    assert chat["from"]["id"] == "member-5"
    assert (await host.op("chat.remove", "h1", id=chat["id"]))["type"] == "ack"
    removed = await member.until(lambda m: m.get("type") == "chat_removed")
    assert removed["id"] == chat["id"]
    assert (await host.op("chat.remove", "h2", id=chat["id"]))["code"] == "not_found"
    assert (await host.op("mute", "h3", member_id="member-5"))["type"] == "ack"
    assert (await member.op("chat", "m2", text="again"))["code"] == "muted"
    fresh = await Client.open(b.ws_url, f"/ws/live/{session}")
    welcome = await fresh.hello(token("member-6", "member"))
    assert welcome["state"]["chat"] == []
    for i in range(5):
        assert (await fresh.op("chat", f"f{i}", text=f"msg {i}"))["type"] == "ack"
    assert (await fresh.op("chat", "f5", text="one too many"))["code"] == "rate_limited"
    assert (await host.op("end", "e1"))["type"] == "ack"
    await member.until(lambda m: m.get("type") == "ended")
    assert (await host.op("end", "e2"))["code"] == "session_ended"
    assert (await host.op("pin", "e3", sku="SKU1"))["code"] == "session_ended"
    assert httpx.get(f"{a.url}/live/sessions").json()["sessions"] == []
    for c in (host, member, fresh):
        await c.close()


async def test_reactions_and_viewer_counts_are_coalesced(
    servers: tuple[ServerProcess, ServerProcess], session: str, redis: Any
) -> None:
    """Many reactions become a few events with the summed counts; the viewer count and the
    list of viewers cover both processes."""
    a, b = servers
    viewers = [await _viewer(a if i % 2 else b, session, i) for i in range(6)]
    counted = await viewers[0].until(lambda m: m.get("type") == "viewers" and m["count"] == 6)
    assert counted["count"] == 6
    assert sorted(await Hub(redis).viewers(session)) == sorted(f"member-{i}" for i in range(6))
    for _ in range(10):
        for i, v in enumerate(viewers):
            await v.send({"op": "react", "kind": "heart" if i % 2 else "fire"})
    total: dict[str, int] = {}
    deadline = time.monotonic() + 15
    while total.get("heart", 0) + total.get("fire", 0) < 60 and time.monotonic() < deadline:
        msg = await viewers[0].until(lambda m: m.get("type") == "reactions")
        for k, n in msg["counts"].items():
            total[k] = total.get(k, 0) + n
    assert total == {"heart": 30, "fire": 30}
    reaction_events = [e for e in viewers[0].events if e["type"] == "reactions"]
    assert len(reaction_events) < 20
    for v in viewers[3:]:
        await v.close()
    await viewers[0].until(lambda m: m.get("type") == "viewers" and m["count"] == 3)

    async def three_left() -> bool:
        return len(await Hub(redis).viewers(session)) == 3

    await wait_until(three_left, "the store's viewer list down to three", 10, 0.1)
    assert sorted(await Hub(redis).viewers(session)) == ["member-0", "member-1", "member-2"]
    for v in viewers[:3]:
        await v.close()


async def test_personal_messages_reach_users_and_screens(
    servers: tuple[ServerProcess, ServerProcess], session: str, redis: Any
) -> None:
    """send_to_user reaches every connection of that user on any process, and so does
    each of a batch sent with send_to_users, in order; screens get theirs after hello
    with a screen token, and other tokens are refused."""
    a, b = servers
    phone = await _viewer(a, session, 9)
    laptop = await _viewer(b, session, 9)
    other = await _viewer(b, session, 8)
    screen = await Client.open(b.ws_url, "/ws/screen/screen-1")
    assert (await screen.hello(token("member-9", "member")))["code"] == "forbidden"
    assert (await screen.hello(token("screen-2", "screen")))["code"] == "forbidden"
    assert (await screen.hello(token("screen-1", "screen")))["type"] == "welcome"
    hub = Hub(redis)
    await hub.send_to_user("member-9", {"type": "cart", "items": []})
    await hub.send_to_screen("screen-1", {"type": "idle", "offers": []})
    for c in (phone, laptop):
        assert (await c.until(lambda m: m.get("type") == "cart"))["items"] == []
    assert (await screen.until(lambda m: m.get("type") == "idle"))["offers"] == []
    await hub.send_to_users([
        ("member-9", {"type": "order", "n": 1}), ("nobody", {"type": "order", "n": 2}),
        ("member-8", {"type": "order", "n": 3}), ("member-9", {"type": "cart", "n": 4}),
    ])
    for c in (phone, laptop):
        assert (await c.until(lambda m: m.get("type") == "order"))["n"] == 1
        assert (await c.until(lambda m: m.get("type") == "cart"))["n"] == 4
    assert (await other.until(lambda m: m.get("type") == "order"))["n"] == 3
    for c in (phone, laptop, other, screen):
        await c.close()


async def test_a_client_that_does_not_read_is_cut_off_and_others_go_on(
    servers: tuple[ServerProcess, ServerProcess], session: str, redis: Any
) -> None:
    """Past the outgoing bound a non-reading client is closed with 4001; a reading client
    on the same process gets every event."""
    a, _ = servers
    stuck = await Client.open(a.ws_url, f"/ws/live/{session}", max_queue=1)
    await stuck.hello(token("member-1", "member"))
    reader = await _viewer(a, session, 2)
    store = Sessions(redis, HISTORY)
    pad = "x" * 30_000
    last = 0
    received = 0

    async def read_all() -> None:
        nonlocal received
        while True:
            msg = await reader.recv()
            if msg.get("type") == "note":
                received += 1
                if msg["n"] == "end":
                    return

    reading = asyncio.create_task(read_all())
    deadline = time.monotonic() + 60
    while stuck.ws.state.name == "OPEN" and time.monotonic() < deadline:
        metrics = httpx.get(f"{a.url}/metrics").text
        if 'newretail_ws_disconnects_total{reason="slow_consumer"}' in metrics:
            break
        for i in range(20):
            last = await store.publish(session, {"type": "note", "n": i, "pad": pad})
    await store.publish(session, {"type": "note", "n": "end"})
    await asyncio.wait_for(reading, 30)
    assert received == len([e for e in reader.events if e["type"] == "note"])
    assert reader.events[-1]["n"] == "end" and reader.events[-1]["seq"] > last
    seqs = [e["seq"] for e in reader.events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    with pytest.raises(ConnectionClosed):
        while True:
            await stuck.recv(timeout=10)
    assert stuck.ws.close_code == 4001
    await reader.close()


async def test_chat_names_come_from_identity_never_a_phone(
    servers: tuple[ServerProcess, ServerProcess], session: str, redis: Any
) -> None:
    """A member chats under the display name set in identity (a rename shows on the next
    message), else a stable label of their id; a phone-like name is never shown."""
    a, b = servers
    members = Members(redis, b"p" * 32)
    await members.create("Alice Smith", member_id="m_alice")
    await members.create("+44 7700 900123", member_id="m_phone")
    host = await _host(a, session)
    said: dict[str, list[str]] = {}
    for mid in ("m_alice", "m_phone", "m_unknown"):
        c = await Client.open(b.ws_url, f"/ws/live/{session}")
        await c.hello(token(mid, "member"))
        for i in range(2):
            assert (await c.op("chat", f"{mid}{i}", text=f"hi {i}"))["type"] == "ack"
            msg = await host.until(lambda m, mid=mid: m.get("type") == "chat"
                                   and m["from"]["id"] == mid)
            said.setdefault(mid, []).append(msg["from"]["name"])
            if mid == "m_alice":
                await members.update("m_alice", name="Ali")
        await c.close()
    assert said["m_alice"] == ["Alice Smith", "Ali"]
    assert said["m_phone"] == [friendly_label("m_phone")] * 2
    assert said["m_unknown"] == [friendly_label("m_unknown")] * 2
    assert (await host.op("chat", "h1", text="thanks"))["type"] == "ack"
    own = await host.until(lambda m: m.get("type") == "chat" and m["text"] == "thanks")
    assert own["from"] == {"id": "host-1", "name": "Host"}
    await host.close()


async def test_viewer_counts_carry_no_presence_list(
    servers: tuple[ServerProcess, ServerProcess], session: str
) -> None:
    """Clients get a number of viewers, in the welcome and in viewers events, never who."""
    a, b = servers
    first = await _viewer(a, session, 1)
    second = await _viewer(b, session, 2)
    counted = await first.until(lambda m: m.get("type") == "viewers" and m["count"] == 2)
    assert set(counted) == {"type", "seq", "ts", "count"}
    third = await _viewer(a, session, 3)
    assert isinstance(third.welcome["state"]["viewers"], int)
    assert "member-1" not in str(third.welcome["state"])
    for c in (first, second, third):
        await c.close()


async def test_session_channels_use_sharded_pubsub_when_offered(
    servers: tuple[ServerProcess, ServerProcess], session: str, redis: Any
) -> None:
    """Both stores here (Valkey, Redis 7) offer sharded pub/sub: each process with viewers
    SSUBSCRIBEs to the session's hash-tagged channel and nobody SUBSCRIBEs to it."""
    a, b = servers
    assert await Sessions(redis).sharded() is True
    viewers = [await _viewer(a, session, 1), await _viewer(b, session, 2)]
    name = channel(session)
    assert name.endswith("{" + session + "}")
    shard: Any = await redis.execute_command("PUBSUB", "SHARDNUMSUB", name)
    plain: Any = await redis.execute_command("PUBSUB", "NUMSUB", name)
    assert (int(shard[1]), int(plain[1])) == (2, 0)
    for v in viewers:
        await v.close()


async def test_plain_pubsub_fallback_keeps_one_order(
    store_url: str, redis: Any, tmp_path: Any
) -> None:
    """With plain pub/sub (servers without SPUBLISH, or NEWRETAIL_LIVE_PUBSUB=plain) two
    processes still deliver the same events in the same order."""
    env = {**SERVER_ENV, "NEWRETAIL_LIVE_PUBSUB": "plain"}
    await seed_products(redis)
    with run_server(store_url, tmp_path / "a", env=env) as a, \
            run_server(store_url, tmp_path / "b", env=env) as b:
        sid = create_session(a.url)
        host = await _host(a, sid)
        viewers = [await _viewer(a if i % 2 else b, sid, i) for i in range(4)]
        plain: Any = await redis.execute_command("PUBSUB", "NUMSUB", channel(sid))
        shard: Any = await redis.execute_command("PUBSUB", "SHARDNUMSUB", channel(sid))
        assert (int(plain[1]), int(shard[1])) == (2, 0)
        store = Sessions(redis, HISTORY, pubsub="plain")
        for i in range(5):
            await store.publish(sid, {"type": "note", "n": i})
        assert (await host.op("pin", "p1", sku="SKU1"))["type"] == "ack"
        start = max(v.welcome["seq"] for v in viewers)
        for v in viewers:
            await v.until(lambda m: m.get("type") == "pinned")
        reference = session_events(viewers[0], start)
        assert [t for _, t in reference if t != "viewers"] == ["note"] * 5 + ["pinned"]
        for v in viewers[1:]:
            assert session_events(v, start) == reference
        for c in (host, *viewers):
            await c.close()


class Stock:
    """The stock as it is, read by the hubs' flushes (``stock`` refresher), counted."""

    def __init__(self, **truth: int) -> None:
        self.truth = truth
        self.reads = 0

    async def read(self, sid: str, values: dict[str, Any]) -> dict[str, Any]:
        self.reads += 1
        return {sku: self.truth[sku] for sku in values}


def two_hubs(redis: Any, stock: Stock) -> tuple[Hub, Hub]:
    """Two processes' hubs on one store, flushing often."""
    config = HubConfig(coalesce_interval=0.05)
    hubs = Hub(redis, config), Hub(redis, config)
    for hub in hubs:
        hub.add_refresher("stock", stock.read)
    return hubs


async def stock_events(hub: Hub, sid: str, count: int) -> list[tuple[str, int]]:
    """The session's ``stock`` events, once there are ``count`` (or after 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        rows = await hub.sessions.history_range(sid, 1, await hub.sessions.current_seq(sid))
        found = [(e["sku"], e["left"]) for _, raw in rows
                 if (e := orjson.loads(raw))["type"] == "stock"]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.02)


async def test_a_coalesced_flush_carries_the_figure_as_it_is_not_the_last_staged(
    redis: Any,
) -> None:
    """Two processes stage stock figures that land out of order (the later checkout's
    figure first): the flush re-reads the figure, so viewers end on the true one; and a
    flush holds its pair until published, so two processes' flushes never interleave."""
    stock = Stock(kite=0)
    a, b = two_hubs(redis, stock)
    sid = (await a.sessions.create("race", ["kite"], None, "host-1")).id
    await b.publish_coalesced(sid, "stock", "kite", 0)  # the last unit, staged first
    await a.publish_coalesced(sid, "stock", "kite", 1)  # the one before, staged late
    await a.start()
    await b.start()
    try:
        shown = await stock_events(a, sid, 1)
    finally:
        await a.stop()
        await b.stop()
    assert shown == [("kite", 0)]
    assert stock.reads == 1


async def test_a_figure_already_shown_is_not_sent_again(redis: Any) -> None:
    """A flush whose figure is the one viewers were last shown, by this process or
    another, publishes nothing: after a sale sells out on two processes, one ``stock``
    event says so, not one per process."""
    stock = Stock(kite=0)
    a, b = two_hubs(redis, stock)
    sid = (await a.sessions.create("shown", ["kite"], None, "host-1")).id
    await a.start()
    await b.start()
    try:
        await a.publish_coalesced(sid, "stock", "kite", 0)
        assert await stock_events(a, sid, 1) == [("kite", 0)]
        await b.publish_coalesced(sid, "stock", "kite", 0)  # the other process's last sale
        await wait_until(lambda: stock.reads >= 2, "the second process's stock read")
        stock.truth["kite"] = 5  # units back in the pool: a change, shown once
        await b.publish_coalesced(sid, "stock", "kite", 5)
        assert await stock_events(a, sid, 2) == [("kite", 0), ("kite", 5)]
    finally:
        await a.stop()
        await b.stop()
    assert stock.reads == 3


async def test_unshown_figures_per_session_and_kind(redis: Any) -> None:
    store = Sessions(redis, HISTORY)
    assert await store.unshown("s1", "stock", {"a": 1, "b": 2}) == {"a": 1, "b": 2}
    assert await store.unshown("s1", "stock", {"a": 1, "b": 2}) == {}
    assert await store.unshown("s1", "stock", {"a": 1, "b": 3}) == {"b": 3}
    assert await store.unshown("s2", "stock", {"a": 1}) == {"a": 1}
    assert await store.unshown("s1", "other", {"a": {"y": 1, "x": 2}}) == {"a": {"y": 1, "x": 2}}
    assert await store.unshown("s1", "other", {"a": {"x": 2, "y": 1}}) == {}
    assert await store.unshown("s1", "stock", {}) == {}
    assert 0 < await redis.ttl("nr:live:shown:{s1}:stock") <= 86400


async def test_events_published_together_have_consecutive_seqs(redis: Any) -> None:
    store = Sessions(redis, HISTORY)
    sid = (await store.create("together", ["kite"], None, "host-1")).id
    first = await store.publish(sid, {"type": "note", "n": 0})
    last = await store.publish_many(sid, [{"type": "note", "n": 1}, {"type": "note", "n": 2}])
    assert last == first + 2
    rows = await store.history_range(sid, first, last)
    assert [(s, orjson.loads(raw)["n"]) for s, raw in rows] == [
        (first, 0), (first + 1, 1), (first + 2, 2)]
    for bad in ([], [{"type": "note"}, {"n": 3}]):
        with pytest.raises(ValueError):
            await store.publish_many(sid, bad)
    assert await store.current_seq(sid) == last


async def test_an_event_with_its_figures_goes_out_as_consecutive_events(redis: Any) -> None:
    """A sale's end carries the stock it leaves right behind it, unless that figure is the
    one already shown; the flush that follows sends nothing more."""
    stock = Stock(kite=0, yoyo=4)
    hub, _ = two_hubs(redis, stock)
    sid = (await hub.sessions.create("end", ["kite", "yoyo"], None, "host-1")).id
    ended = {"type": "flash_sale_ended", "sku": "kite", "reason": "sold_out"}
    seq = await hub.publish_with_figures(sid, ended, "stock", ["kite"])
    assert await stock_events(hub, sid, 1) == [("kite", 0)]
    assert await hub.sessions.current_seq(sid) == seq + 1
    assert await hub.publish_with_figures(sid, ended, "stock", ["kite"]) == seq + 2
    assert await hub.sessions.current_seq(sid) == seq + 2  # the figure was shown: the event alone
    await hub.publish_coalesced(sid, "stock", "kite", 0)
    await hub.publish_coalesced(sid, "stock", "yoyo", 4)
    await hub.start()
    try:
        assert await stock_events(hub, sid, 2) == [("kite", 0), ("yoyo", 4)]
    finally:
        await hub.stop()


async def test_a_flush_whose_values_another_process_took_publishes_nothing(redis: Any) -> None:
    """Another process's flush took the values staged here: this process's flush of the
    pair finds none and publishes no empty event (a ``viewers`` count of 0, say)."""
    hub = Hub(redis, HubConfig(coalesce_interval=0.05))
    sid = (await hub.sessions.create("taken", ["kite"], None, "host-1")).id
    lock = f"nr:live:flushlock:{{{sid}}}:reactions"
    await hub.publish_coalesced(sid, "reactions", "heart", 1)
    assert await hub.sessions.drain(sid, "reactions", 5000) == {"heart": 1}  # the other process
    await redis.delete(lock)  # ... which published them and whose interval is over
    await hub.start()
    try:
        deadline = time.monotonic() + 10

        async def flushed() -> bool:  # this process's flush has taken the pair
            return bool(await redis.exists(lock))

        await wait_until(flushed, "this process's flush", 10, 0.005)
        await hub.publish_coalesced(sid, "reactions", "fire", 2)
        while True:
            rows = await hub.sessions.history_range(sid, 1, await hub.sessions.current_seq(sid))
            found = [e for _, raw in rows if (e := orjson.loads(raw))["type"] == "reactions"]
            if found or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
    finally:
        await hub.stop()
    assert [e["counts"] for e in found] == [{"fire": 2}]
