"""The room's outbox (pure), the hub's chunked writer that pumps it, what the hub sends
its connections again after its subscription to personal messages broke, how an op's
answer is written, and a stop that a lost cancellation cannot hang."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import msgpack
import orjson
import pytest
import redis.asyncio as aredis

from live.errors import LiveError
from live.hub.hub import Hub
from live.hub.outbox import Outbox
from live.hub.rooms import HubConfig, Room, cancel_and_wait, msgpack_frame
from live.protocol.frames import Format, frame, frame_payloads
from live.protocol.messages import ClientOp, ConnId
from live.writers.base import Conn

# Connections between pauses, where the tests ask for pauses.
FANOUT_CHUNK = 128


def payload(seq: int) -> bytes:
    return orjson.dumps({"type": "pinned", "seq": seq, "sku": f"S{seq}"})


def outbox_with(*seqs: int) -> Outbox:
    box = Outbox(msgpack_frame)
    for seq in seqs:
        box.add(seq, payload(seq), frame(payload(seq), Format.JSON))
    return box


def split(data: bytes) -> list[bytes]:
    """The payloads of the short unmasked frames joined in ``data``."""
    out = []
    while data:
        n = data[1]
        assert n < 126
        out.append(data[2:2 + n])
        data = data[2 + n:]
    return out


def test_a_connection_gets_everything_after_its_seq_in_one_write() -> None:
    """The frames after a connection's last seq come joined, in seq order."""
    box = outbox_with(5, 6, 7)
    data, n = box.after(5, Format.JSON)
    assert n == 2 and split(data) == [payload(6), payload(7)]
    assert box.after(4, Format.JSON)[1] == 3
    assert box.after(7, Format.JSON) == (b"", 0)


def test_joined_bytes_are_made_once_per_point_until_a_newer_event() -> None:
    """Every connection at the same point gets the same bytes object; a new event
    makes new ones."""
    box = outbox_with(1, 2)
    first, _ = box.after(0, Format.JSON)
    assert box.after(0, Format.JSON)[0] is first
    box.add(3, payload(3), frame(payload(3), Format.JSON))
    data, n = box.after(0, Format.JSON)
    assert n == 3 and data is not first and data.startswith(first)


def test_msgpack_frames_are_made_once_per_event_and_only_when_needed() -> None:
    """A msgpack connection gets binary frames of the same events; each is packed once."""
    packed: list[bytes] = []

    def pack(data: bytes) -> bytes:
        packed.append(data)
        return msgpack_frame(data)

    box = Outbox(pack)
    for seq in (1, 2):
        box.add(seq, payload(seq), frame(payload(seq), Format.JSON))
    box.after(0, Format.JSON)
    assert packed == []
    data, n = box.after(0, Format.MSGPACK)
    assert n == 2 and data[0] == 0x82  # binary frame, FIN
    first_len = data[1]
    assert msgpack.unpackb(data[2:2 + first_len]) == orjson.loads(payload(1))
    box.after(1, Format.MSGPACK)
    assert packed == [payload(1), payload(2)]


def test_events_must_follow_each_other_and_trimmed_ones_are_gone() -> None:
    """A gap is refused; after a trim, asking for trimmed events is an error, not a
    partial answer."""
    box = outbox_with(3, 4, 5)
    with pytest.raises(ValueError, match="does not follow"):
        box.add(7, payload(7), frame(payload(7), Format.JSON))
    box.trim(4)
    assert len(box) == 1 and box.top == 5
    assert split(box.after(4, Format.JSON)[0]) == [payload(5)]
    with pytest.raises(ValueError, match="no longer held"):
        box.after(2, Format.JSON)
    box.trim(5)
    assert len(box) == 0 and box.top == -1


class Recorder(Conn):
    """A connection that keeps what the hub writes to it, write by write."""

    __slots__ = ("writes", "closed_with")

    def __init__(self, i: int, fmt: Format = Format.JSON) -> None:
        super().__init__(ConnId(f"c{i}"), fmt, 1 << 20)
        self.writes: list[bytes] = []
        self.closed_with: tuple[int, str] | None = None

    def push(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self, code: int, reason: str) -> None:
        self.closed = True
        self.closed_with = (code, reason)


def live_room(n: int, chunk: int = 0) -> tuple[Room, list[Recorder]]:
    room = Room("s1", chunk)
    conns = [Recorder(i) for i in range(n)]
    for conn in conns:
        conn.sent = 0
        room.live[conn.id] = conn
    return room, conns


async def test_events_arriving_during_a_fanout_join_the_writes_not_yet_made() -> None:
    """Two events in one turn go out as one write per connection; an event arriving
    while the writer is between chunks goes with the current one to the connections not
    reached yet, and alone to the others; every connection gets every event, in order."""
    hub = Hub(aredis.Redis(), HubConfig(fanout_chunk=FANOUT_CHUNK))
    room, conns = live_room(FANOUT_CHUNK * 2 + 5, hub.config.fanout_chunk)
    room.deliver(1, payload(1))
    room.deliver(2, payload(2))
    await asyncio.sleep(0)  # the writer writes its first chunk, then lets others run
    assert all(len(c.writes) == 1 for c in conns[:FANOUT_CHUNK])
    assert all(not c.writes for c in conns[FANOUT_CHUNK:])
    room.deliver(3, payload(3))
    assert room.writer is not None
    await room.writer
    for conn in conns[:FANOUT_CHUNK]:
        assert [split(w) for w in conn.writes] == [[payload(1), payload(2)], [payload(3)]]
    for conn in conns[FANOUT_CHUNK:]:
        assert [split(w) for w in conn.writes] == [[payload(1), payload(2), payload(3)]]
    assert all(c.sent == 3 for c in conns) and len(room.outbox) == 0


async def test_by_default_the_whole_room_is_written_in_one_turn() -> None:
    """By default (``fanout_chunk=0``) every connection is written before anything else
    runs; a negative chunk is refused."""
    room, conns = live_room(FANOUT_CHUNK * 2 + 5, HubConfig().fanout_chunk)
    room.deliver(1, payload(1))
    await asyncio.sleep(0)
    assert all([split(w) for w in c.writes] == [[payload(1)]] for c in conns)
    with pytest.raises(ValueError, match="0 or more"):
        HubConfig(fanout_chunk=-1)


async def test_a_closed_connection_is_skipped_and_a_new_one_starts_where_it_joined() -> None:
    """The writer skips closed connections and writes a connection promoted mid-stream
    only the events after the seq it went live at."""
    room, conns = live_room(3)
    conns[1].closed = True
    room.deliver(1, payload(1))
    late = Recorder(99)
    late.sent = 1
    room.live[late.id] = late
    room.deliver(2, payload(2))
    assert room.writer is not None
    await room.writer
    assert [split(w) for w in conns[0].writes] == [[payload(1), payload(2)]]
    assert conns[1].writes == []
    assert [split(w) for w in late.writes] == [[payload(2)]]


async def test_after_a_resubscription_users_get_their_state_and_the_erased_are_closed() -> None:
    """Every connected user is sent each personal state part again (on every connection,
    ``None`` sends nothing); a user erased meanwhile is closed instead (1008)."""
    hub = Hub(aredis.Redis())
    conns = {user: [Recorder(i), Recorder(i + 10)] for i, user in enumerate(("m1", "m2", "gone"))}
    for user, pair in conns.items():
        hub.by_user[user] = set(pair)
    async def erased(users: Sequence[str]) -> set[str]:
        return {u for u in users if u == "gone"}

    async def cart(user: str) -> dict[str, object] | None:
        return None if user == "m2" else {"type": "cart", "cart": {"owner": user}}

    hub.erased_among = erased
    hub.add_personal_state(cart)
    await hub._resync_personal()
    for conn in conns["m1"]:
        assert [orjson.loads(w[2:]) for w in conn.writes] == [
            {"type": "cart", "cart": {"owner": "m1"}}]
    assert all(not c.writes for c in (*conns["m2"], *conns["gone"]))
    assert [c.closed_with for c in conns["gone"]] == [(1008, "erased")] * 2
    assert all(c.closed_with is None for c in (*conns["m1"], *conns["m2"]))


async def test_an_ops_reply_and_its_ack_go_out_in_one_write() -> None:
    """The reply, then the ack, in one write; an op without a reply writes its ack alone,
    and one without a ref its reply alone; a refused op writes nothing of its own."""
    hub = Hub(aredis.Redis(), HubConfig())

    async def answer(ctx: object, payload: dict[str, object]) -> dict[str, object] | None:
        if payload.get("refuse"):
            raise LiveError("out_of_stock", "none left", 409)
        return {"type": "order", "n": payload["n"]} if payload.get("n") else None

    hub.register_op("buy", answer, frozenset({"member"}))
    for fmt, decode in ((Format.JSON, orjson.loads), (Format.MSGPACK, msgpack.unpackb)):
        conn = Recorder(0, fmt)
        conn.role, conn.user = "member", "m1"
        await hub.run_op(conn, ClientOp("buy", {"n": 7}, "r1"))
        await hub.run_op(conn, ClientOp("buy", {}, "r2"))
        await hub.run_op(conn, ClientOp("buy", {"n": 8}, None))
        with pytest.raises(LiveError):
            await hub.run_op(conn, ClientOp("buy", {"refuse": True}, "r3"))
        assert [[decode(p) for p in frame_payloads(w)] for w in conn.writes] == [
            [{"type": "order", "n": 7}, {"type": "ack", "ref": "r1"}],
            [{"type": "ack", "ref": "r2"}],
            [{"type": "order", "n": 8}],
        ]


async def test_a_stop_outlasts_a_lost_cancellation() -> None:
    """A task whose first cancellation is lost (as one landing when a timeout expires
    can be, on Python 3.11) is cancelled again until it ends."""
    lost = 0

    async def stubborn() -> None:
        nonlocal lost
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if lost:
                    raise
                lost += 1

    tasks = [asyncio.create_task(stubborn()), asyncio.create_task(asyncio.sleep(3600))]
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(tasks), 10)
    assert all(t.cancelled() for t in tasks) and lost == 1
