"""The live protocol's sans-I/O core: no socket, no store, no event loop."""

from __future__ import annotations

import msgpack
import orjson
import pytest
from websockets.frames import Frame
from websockets.streams import StreamReader

from live.errors import LiveError
from live.protocol.frames import Format, choose_format, decode_frame, frame, frame_payloads
from live.protocol.messages import (
    AUDIENCE_ROLES,
    CHAT_ROLES,
    HOST_ROLES,
    MAX_CHAT_CHARS,
    Since,
    chat_name,
    chat_text,
    check_role,
    friendly_label,
    parse_hello,
    parse_op,
)
from live.protocol.states import (
    Arrival,
    Coalescer,
    ConnState,
    GcPlan,
    ReplayKind,
    SessionState,
    classify_arrival,
    coalesced_event,
    coalesced_events,
    conn_transition,
    plan_replay,
    replay_complete,
    session_transition,
)


def _parse_frame(data: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        while True:
            next(parser)
    except StopIteration as done:
        result: Frame = done.value
        return result


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_frames_are_valid_websocket_frames(size: int) -> None:
    """Pre-built frames parse back (websockets' own parser) to the same payload and type,
    at every length encoding boundary."""
    payload = b"x" * size
    text = _parse_frame(frame(payload, Format.JSON))
    assert text.opcode.name == "TEXT" and text.fin and text.data == payload
    binary = _parse_frame(frame(payload, Format.MSGPACK))
    assert binary.opcode.name == "BINARY" and binary.data == payload


def test_format_follows_the_offered_subprotocol() -> None:
    """msgpack when offered, else JSON; the accepted subprotocol echoes the offer."""
    assert choose_format(["newretail.msgpack"]) == (Format.MSGPACK, "newretail.msgpack")
    assert choose_format(["newretail.json", "x"]) == (Format.JSON, "newretail.json")
    assert choose_format([]) == (Format.JSON, None)


@pytest.mark.parametrize("data", [b"nope", "[1]", '"op"', b"\xc1", "{"])
def test_undecodable_frames_are_bad_frames(data: str | bytes) -> None:
    """Anything that is not one encoded object is a bad_frame."""
    fmt = Format.MSGPACK if isinstance(data, bytes) and data.startswith(b"\xc1") else Format.JSON
    with pytest.raises(LiveError) as err:
        decode_frame(data, fmt)
    assert err.value.code == "bad_frame"


def test_both_formats_decode_to_the_same_object() -> None:
    """The same op as JSON text and as msgpack bytes."""
    obj = {"op": "chat", "text": "hé", "ref": 3}
    assert decode_frame(orjson.dumps(obj).decode(), Format.JSON) == obj
    assert decode_frame(msgpack.packb(obj), Format.MSGPACK) == obj


def test_ops_and_refs() -> None:
    """An op keeps its payload apart from op and ref; bad ops and refs are refused."""
    op = parse_op({"op": "pin", "ref": "r1", "sku": "A"})
    assert (op.op, op.ref, op.payload) == ("pin", "r1", {"sku": "A"})
    for bad in ({}, {"op": ""}, {"op": 3}, {"op": "pin", "ref": True},
                {"op": "pin", "ref": "r" * 65}, {"op": "pin", "ref": [1]}):
        with pytest.raises(LiveError, match="op|ref"):
            parse_op(bad)


def test_hello_and_since() -> None:
    """hello needs a token; since needs a string epoch and a non-negative integer seq."""
    hello = parse_hello({"op": "hello", "token": "t", "since": {"epoch": "e", "seq": 4}})
    assert hello.since == Since("e", 4)
    assert parse_hello({"op": "hello", "token": "t"}).since is None
    for bad in ({"op": "chat"}, {"op": "hello"}, {"op": "hello", "token": ""},
                {"op": "hello", "token": "t", "since": 3},
                {"op": "hello", "token": "t", "since": {"epoch": "e", "seq": -1}},
                {"op": "hello", "token": "t", "since": {"epoch": "e", "seq": True}},
                {"op": "hello", "token": "t", "since": {"epoch": 1, "seq": 1}}):
        with pytest.raises(LiveError) as err:
            parse_hello(bad)
        assert err.value.code == "bad_frame"


def test_chat_text_is_plain_and_bounded() -> None:
    """Control characters go, spaces are trimmed, empty and overlong text are refused."""
    assert chat_text({"text": "  hi\x00 there\n "}) == "hi there"
    assert len(chat_text({"text": "é" * MAX_CHAT_CHARS})) == MAX_CHAT_CHARS
    for bad in ({}, {"text": 5}, {"text": " \n "}, {"text": "x" * (MAX_CHAT_CHARS + 1)}):
        with pytest.raises(LiveError):
            chat_text(bad)


def test_roles() -> None:
    """Viewers react but neither chat nor run host ops; members chat; hosts do all. An
    anonymous viewer is asked to sign in for what members may do."""
    check_role("react", AUDIENCE_ROLES, "viewer")
    check_role("chat", CHAT_ROLES, "member")
    check_role("pin", HOST_ROLES, "host")
    for op, roles, role in (("pin", HOST_ROLES, "member"), ("end", HOST_ROLES, "viewer"),
                            ("react", AUDIENCE_ROLES, "screen")):
        with pytest.raises(LiveError) as err:
            check_role(op, roles, role)
        assert err.value.code == "forbidden" and role in err.value.message
    with pytest.raises(LiveError) as err:
        check_role("chat", CHAT_ROLES, "viewer")
    assert (err.value.code, err.value.status) == ("sign_in_required", 403)


def test_chat_names() -> None:
    """Hosts chat as Host; members under their display name when set, else a stable
    label of their id; a phone number never shows, nor control characters."""
    assert chat_name("host", "h1", "Dana") == "Host"
    assert chat_name("admin", "ad1", None) == "Host"
    assert chat_name("member", "m_1", "  Alice \n Smith ") == "Alice Smith"
    assert chat_name("member", "m_1", "Bo\x00b") == "Bob"
    assert chat_name("member", "m_1", "x" * 80) == "x" * 40
    label = friendly_label("m_1")
    assert label == friendly_label("m_1") != friendly_label("m_2")
    assert "m_1" not in label and len(label.split()) == 3
    for name in (None, "", "   ", "+44 7700 900123", "07700900123", "call 0770-090-0123"):
        assert chat_name("member", "m_1", name) == label
    assert chat_name("member", "m_1", "Room 101") == "Room 101"


def test_state_machines_refuse_wrong_transitions() -> None:
    """A session ends once; a connection joins once; errors name both states."""
    assert session_transition(SessionState.LIVE, SessionState.ENDED) is SessionState.ENDED
    with pytest.raises(LiveError, match="ended") as err:
        session_transition(SessionState.ENDED, SessionState.ENDED)
    assert err.value.code == "session_ended"
    state = conn_transition(ConnState.AWAITING_HELLO, ConnState.JOINED)
    with pytest.raises(LiveError, match="joined.*joined"):
        conn_transition(state, ConnState.JOINED)
    assert conn_transition(state, ConnState.CLOSED) is ConnState.CLOSED


@pytest.mark.parametrize(
    ("since", "current", "oldest", "kind", "first", "last"),
    [
        (None, 10, 1, ReplayKind.FRESH, 0, 0),
        (Since("e1", 4), 10, 1, ReplayKind.REPLAY, 5, 10),
        (Since("e1", 4), 10, 5, ReplayKind.REPLAY, 5, 10),
        (Since("e1", 4), 10, 6, ReplayKind.LOST, 0, 0),  # 5 was trimmed
        (Since("e1", 10), 10, 1, ReplayKind.REPLAY, 11, 10),  # nothing missed
        (Since("e1", 11), 10, 1, ReplayKind.LOST, 0, 0),  # ahead of the server
        (Since("e0", 4), 10, 1, ReplayKind.LOST, 0, 0),  # other epoch
        (Since("e1", 4), 10, None, ReplayKind.LOST, 0, 0),  # history gone
    ],
)
def test_replay_plans(
    since: Since | None, current: int, oldest: int | None, kind: ReplayKind, first: int,
    last: int,
) -> None:
    """Replay exactly (since, current] when all of it is kept, otherwise not at all."""
    plan = plan_replay(since, "e1", current, oldest)
    assert (plan.kind, plan.first, plan.last) == (kind, first, last)


def test_replay_must_be_complete() -> None:
    """Events read back must be exactly the planned range (no partial replay)."""
    plan = plan_replay(Since("e", 2), "e", 5, 1)
    assert replay_complete(plan, [3, 4, 5])
    assert not replay_complete(plan, [4, 5])
    assert not replay_complete(plan, [3, 5])


def test_arrivals() -> None:
    """Events from the store are next, already seen, or after a gap to fill."""
    assert classify_arrival(0, 7) is Arrival.NEXT
    assert classify_arrival(6, 7) is Arrival.NEXT
    assert classify_arrival(7, 7) is Arrival.OLD
    assert classify_arrival(5, 7) is Arrival.GAP


def test_coalescer_flushes_each_pair_at_most_once_per_interval() -> None:
    """Marks within an interval are flushed together; pairs are independent."""
    c = Coalescer(0.25)
    for _ in range(100):
        c.mark("s1", "reactions")
    c.mark("s1", "viewers")
    assert c.due(10.0) == [("s1", "reactions"), ("s1", "viewers")]
    c.mark("s1", "reactions")
    assert c.due(10.1) == []
    assert c.pending == 1
    assert c.due(10.26) == [("s1", "reactions")]
    c.retry("s2", "stock")
    assert c.due(10.27) == [("s2", "stock")]


def test_coalesced_events() -> None:
    """Viewers carry a count, reactions their counts, other kinds the latest values."""
    assert coalesced_event("viewers", {"count": 12}) == {"type": "viewers", "count": 12}
    assert coalesced_event("reactions", {"heart": 3}) == {"type": "reactions",
                                                          "counts": {"heart": 3}}
    assert coalesced_events("stock", {"B": 0, "A": 4}) == [
        {"type": "stock", "sku": "A", "left": 4}, {"type": "stock", "sku": "B", "left": 0}]
    assert coalesced_events("viewers", {"count": 2}) == [{"type": "viewers", "count": 2}]


def test_gc_plan_freezes_settled_waves_and_compacts_after_departures() -> None:
    """Freeze once a wave of joins has settled (not during it, not for a trickle);
    compact once a quarter of the frozen connections have left."""
    plan = GcPlan(wave=100, settle=0.5)
    for i in range(99):
        plan.joined(10.0 + i / 1000)
    assert plan.due(20.0) is None
    plan.joined(20.0)
    assert plan.due(20.2) is None
    assert plan.due(20.6) == "freeze"
    assert plan.due(21.0) is None
    for _ in range(1000):
        plan.joined(30.0)
    assert plan.due(30.6) == "freeze" and plan.frozen == 1100
    for _ in range(274):
        plan.left()
    assert plan.due(31.0) is None
    plan.left()
    assert plan.due(31.1) == "compact" and plan.frozen == 825
    assert plan.due(40.0) is None


def test_joined_frames_split_back_into_their_payloads() -> None:
    """Frames of 7-, 16- and 64-bit lengths written in one go come back as their payloads,
    in order; an empty write has none."""
    payloads = [b"x" * 5, b"y" * 300, b"z" * 70_000, b""]
    joined = b"".join(frame(p, Format.JSON) for p in payloads)
    assert frame_payloads(joined) == payloads
    assert frame_payloads(b"") == []
