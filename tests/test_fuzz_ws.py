"""Property-based fuzz of the WebSocket protocol, JSON text and msgpack binary frames.

The sans-I/O core (``live.protocol`` and the op validators) gets many examples: every
frame is either refused with a wire error code or turned into a well-formed op, and the
error reply is always encodable. A real server gets a bounded number: each bad frame
gets an error, the connection still answers the next op, and nothing changed (the
session's seq and history, chat, pins, mutes, carts, stock, orders, flash sale)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import msgpack
import orjson
import pytest
import redis as redis_sync
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from live.commerce.carts import parse_idempotency_key, parse_qty, parse_sku
from live.commerce.flash import parse_flash_start
from live.commerce.types import CART_ROLES
from live.errors import LiveError
from live.protocol.frames import Format, decode_frame, encode
from live.protocol.messages import (
    AUDIENCE_ROLES,
    CHAT_ROLES,
    HOST_ROLES,
    MAX_CHAT_CHARS,
    chat_text,
    check_role,
    error_message,
    parse_hello,
    parse_op,
    reaction_kind,
    require_str,
)
from live.web.commerce_ops import CHECKOUT_ROLES
from tests.access_support import SERVER_ENV, auth, seed_world, sign_in, token
from tests.fuzz_strategies import VALUE, bad_frame
from tests.fuzz_strategies import encode as encode_frame
from tests.utils import ServerProcess, run_server

WIRE_CODES = {"bad_frame", "unknown_op", "bad_request", "forbidden", "not_found",
              "invalid_qty", "invalid_price", "invalid_duration", "no_flash_sale",
              "empty_cart", "limit_exceeded", "session_ended", "muted", "rate_limited",
              "sign_in_required", "insufficient_stock", "unauthorized"}
SKU = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
IDEM = re.compile(r"[A-Za-z0-9._:-]{1,64}")

# What each op checks before it touches the store, as the hub and its handlers do.
OPS: dict[str, tuple[frozenset[str], Callable[[dict[str, Any]], Any]]] = {
    "chat": (CHAT_ROLES, chat_text),
    "react": (AUDIENCE_ROLES, reaction_kind),
    "cart.add": (CART_ROLES, lambda p: (parse_sku(p.get("sku")), parse_qty(p.get("qty", 1)))),
    "cart.remove": (CART_ROLES, lambda p: parse_sku(p.get("sku"))),
    "checkout": (CHECKOUT_ROLES, lambda p: parse_idempotency_key(p.get("idempotency_key"))),
    "pin": (HOST_ROLES, lambda p: require_str(p, "sku")),
    "unpin": (HOST_ROLES, lambda p: require_str(p, "sku") if "sku" in p else None),
    "flash.start": (HOST_ROLES, lambda payload: parse_flash_start(payload, "GBP")),
    "flash.stop": (HOST_ROLES, lambda p: None),
    "chat.remove": (HOST_ROLES, lambda p: require_str(p, "id")),
    "mute": (HOST_ROLES, lambda p: require_str(p, "member_id")),
    "end": (HOST_ROLES, lambda p: None),
}


def check_accepted(op: str, value: Any) -> None:
    """What a validator lets through is well formed."""
    if op == "chat":
        assert isinstance(value, str) and 0 < len(value) <= MAX_CHAT_CHARS
        assert all(ch.isprintable() or ch == " " for ch in value)
    elif op == "cart.add":
        sku, qty = value
        assert SKU.fullmatch(sku), sku
        assert isinstance(qty, int) and not isinstance(qty, bool) and 1 <= qty <= 99
    elif op == "cart.remove":
        assert SKU.fullmatch(value), value
    elif op == "checkout":
        assert IDEM.fullmatch(value), value
    elif op == "flash.start":
        assert SKU.fullmatch(value.sku) and value.price.amount > 0 and value.qty >= 1


def pure_pipeline(data: str | bytes, fmt: Format, role: str, joined: bool) -> str | None:
    """The refusal code for a frame, or ``None`` when the pure layer accepts it."""
    try:
        obj = decode_frame(data, fmt)
        if not joined:
            hello = parse_hello(obj)
            assert isinstance(hello.token, str) and hello.token
            assert hello.since is None or (isinstance(hello.since.seq, int)
                                           and hello.since.seq >= 0)
            return None
        op = parse_op(obj)
        if op.op == "hello":
            raise LiveError("bad_frame", "already joined")
        spec = OPS.get(op.op)
        if spec is None:
            raise LiveError("unknown_op", op.op)
        check_role(op.op, spec[0], role)
        check_accepted(op.op, spec[1](op.payload))
        return None
    except LiveError as exc:
        assert exc.code in WIRE_CODES, exc.code
        assert isinstance(exc.message, str) and exc.message
        ref = obj.get("ref") if "obj" in locals() and isinstance(obj, dict) else None
        reply = error_message(exc.code, exc.message,
                              ref if isinstance(ref, str | int) else None)
        assert encode(reply, fmt)  # every refusal can be told to the client
        return exc.code


ROLE = st.sampled_from(["viewer", "member", "host", "admin"])
FMT = st.sampled_from([Format.JSON, Format.MSGPACK])


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_protocol_refuses_bad_frames(data: st.DataObject) -> None:
    """Frames built to be wrong in one way are refused with a wire code by the pure
    core, or, where only the store can tell (an unknown product), are well formed."""
    role = data.draw(st.sampled_from(["member", "host"]))
    fmt = data.draw(FMT)
    frame = data.draw(bad_frame(role, fmt is Format.MSGPACK))
    pure_pipeline(frame, fmt, role, joined=True)


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300),
                 VALUE.map(lambda v: orjson.dumps(v).decode()),
                 VALUE.map(lambda v: msgpack.packb(v, use_bin_type=True)),
                 st.dictionaries(st.sampled_from(["op", "ref", "token", "since", "text",
                                                  "sku", "qty", "kind"]),
                                 VALUE, max_size=5).map(orjson.dumps)),
       FMT, ROLE, st.booleans())
def test_protocol_never_fails_on_anything(data: str | bytes, fmt: Format, role: str,
                                          joined: bool) -> None:
    """Arbitrary bytes, text and values, as hello or as an op: a wire error code or a
    well-formed result, never an exception of another kind."""
    pure_pipeline(data, fmt, role, joined)


# The real server ------------------------------------------------------------------------


@dataclass
class Fuzzed:
    server: ServerProcess
    store: redis_sync.Redis
    sid: str
    member_id: str
    member_token: str
    conns: dict[tuple[str, bool], ClientConnection]


def _recv(ws: ClientConnection, msgpack_format: bool, timeout: float = 10) -> dict[str, Any]:
    raw = ws.recv(timeout=timeout)
    msg: dict[str, Any] = msgpack.unpackb(raw) if msgpack_format else orjson.loads(raw)
    return msg


def _until(ws: ClientConnection, mp: bool, cond: Callable[[dict[str, Any]], bool],
           timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        msg = _recv(ws, mp, max(0.01, deadline - time.monotonic()))
        if cond(msg):
            return msg


def _open(stack: ExitStack, srv: ServerProcess, sid: str, tok: str, mp: bool
          ) -> ClientConnection:
    ws = stack.enter_context(connect(
        # No keepalive pings: they draw from `random`, which Hypothesis forbids mid-example.
        f"{srv.ws_url}/ws/live/{sid}", open_timeout=10, max_size=None, ping_interval=None,
        subprotocols=["newretail.msgpack" if mp else "newretail.json"]))  # type: ignore[list-item]
    ws.send(encode_frame({"op": "hello", "token": tok}, mp))
    assert _until(ws, mp, lambda m: m.get("type") in ("welcome", "error"))["type"] == "welcome"
    return ws


@pytest.fixture(scope="module")
def fuzzed(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    seed_world(store_url)
    env = {**SERVER_ENV, "NEWRETAIL_LIVE_VIEWERS_EVERY": "0.1"}
    with run_server(store_url, tmp_path_factory.mktemp("fuzzws"), env=env) as srv, \
            ExitStack() as stack:
        member = sign_in(srv.url, "+447700900301", "fuzz-phone")
        r = httpx.post(f"{srv.url}/live/sessions", headers=auth(token("host-1", "host")),
                       json={"title": "Fuzz", "products": ["mug", "kite"]}, timeout=10)
        sid = r.json()["session_id"]
        conns = {}
        for role, tok in (("member", member["token"]), ("host", token("host-1", "host"))):
            for mp in (False, True):
                conns[(role, mp)] = _open(stack, srv, sid, tok, mp)
        host = conns[("host", False)]
        host.send(encode_frame({"op": "mute", "member_id": "m_probe", "ref": "setup"}, False))
        _until(host, False, lambda m: m.get("ref") == "setup")
        # Settle: every process has counted the two viewers (hosts are not viewers).
        _until(host, False, lambda m: m.get("type") == "viewers" and m.get("count") == 2)
        store = redis_sync.Redis.from_url(store_url)
        try:
            yield Fuzzed(srv, store, sid, member["member_id"], member["token"], conns)
        finally:
            store.close()


def state(f: Fuzzed) -> dict[str, Any]:
    """Everything a bad frame must leave as it was, read over HTTP and from the store."""
    base, admin = f.server.url, auth(token("admin-1", "admin"))
    sid = f.sid
    with httpx.Client(base_url=base, timeout=10) as http:
        return {
            "session": http.get(f"/live/sessions/{sid}").json(),
            "history": f.store.xlen(f"nr:live:history:{{{sid}}}"),
            "chat": f.store.lrange(f"nr:live:chat:{{{sid}}}", 0, -1),
            "pins": f.store.lrange(f"nr:live:pins:{{{sid}}}", 0, -1),
            "muted": f.store.smembers(f"nr:live:muted:{{{sid}}}"),
            "pending": sorted(k for k in f.store.scan_iter(match=f"nr:live:pending:{{{sid}}}*")
                              if f.store.hlen(k)),
            "cart": http.get(f"/carts/{f.member_id}", headers=auth(f.member_token)).json(),
            "host_cart": http.get("/carts/host-1", headers=auth(token("host-1", "host"))).json(),
            "stock": [http.get(f"/catalog/products/{s}").json()["stock_by_location"]
                      for s in ("mug", "kite")],
            "orders": http.get("/orders?limit=500", headers=admin).json(),
            "flash": http.get(f"/live/sessions/{sid}/flash-sale").json(),
            "events": f.store.xlen("nr:events"),
        }


def probe(f: Fuzzed, role: str, mp: bool, n: int) -> None:
    """The connection still answers: the host's mute (already muted) is acked; the
    member's removal of a product not in the cart is refused, in order, by ref."""
    ws = f.conns[(role, mp)]
    ref = f"probe-{n}"
    if role == "host":
        ws.send(encode_frame({"op": "mute", "member_id": "m_probe", "ref": ref}, mp))
        reply = _until(ws, mp, lambda m: m.get("ref") == ref)
        assert reply["type"] == "ack", reply
    else:
        ws.send(encode_frame({"op": "cart.remove", "sku": "lamp", "ref": ref}, mp))
        reply = _until(ws, mp, lambda m: m.get("ref") == ref)
        assert reply["type"] == "error" and reply["code"] == "not_found", reply


COUNTER = iter(range(10**9))


@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(st.data())
def test_server_refuses_bad_frames_and_changes_nothing(fuzzed: Fuzzed,
                                                       data: st.DataObject) -> None:
    """Each bad frame on a real connection (member or host, JSON or msgpack) gets an
    error, the connection answers the next op, and no state changed."""
    role = data.draw(st.sampled_from(["member", "host"]))
    mp = data.draw(st.booleans())
    frame = data.draw(bad_frame(role, mp))
    before = state(fuzzed)
    ws = fuzzed.conns[(role, mp)]
    ws.send(frame)
    reply = _until(ws, mp, lambda m: m.get("type") in ("ack", "error", "order"))
    assert reply["type"] == "error", (frame[:200], reply)
    assert reply["code"] in WIRE_CODES, reply
    probe(fuzzed, role, mp, next(COUNTER))
    assert state(fuzzed) == before


@pytest.mark.parametrize("mp", [False, True], ids=["json", "msgpack"])
def test_frame_over_the_limit_closes_1009(fuzzed: Fuzzed, mp: bool) -> None:
    """A frame one byte over the limit, before or after hello, closes with 1009 and
    changes nothing; a new connection is served as before."""
    before = state(fuzzed)
    limit = int(SERVER_ENV["NEWRETAIL_WS_MAX_FRAME"])
    sub = ["newretail.msgpack" if mp else "newretail.json"]
    for joined in (False, True):
        with connect(f"{fuzzed.server.ws_url}/ws/live/{fuzzed.sid}", open_timeout=10,
                     max_size=None, subprotocols=sub) as ws:  # type: ignore[list-item]
            if joined:
                ws.send(encode_frame({"op": "hello", "token": token("m_big", "member")}, mp))
                _until(ws, mp, lambda m: m.get("type") == "welcome")
            big = {"op": "chat", "text": "x" * limit}
            ws.send(encode_frame(big, mp))
            with pytest.raises(ConnectionClosed):
                _until(ws, mp, lambda m: False)
            assert ws.close_code == 1009
    after = state(fuzzed)
    # The joined connection came and went: only viewer counts may have moved.
    for key in ("chat", "pins", "muted", "cart", "stock", "orders", "flash", "events"):
        assert after[key] == before[key], key
    probe(fuzzed, "member", mp, next(COUNTER))
