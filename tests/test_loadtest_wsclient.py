"""The project's one WebSocket client: the gevent ``WsClient``/``WsMux`` of the load test and
the asyncio ``LightClient`` of the tests and benchmarks."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

import msgpack
import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from loadtests.wsclient import (
    BINARY,
    JSON,
    MSGPACK,
    WsClient,
    WsError,
    WsMux,
    client_frame,
    open_client,
    server_frames,
)
from tests.utils import wait_until_sync

BIG = "x" * 200_000  # more than one read of the client's buffer
closed: list[int | None] = []  # the close codes the server's side ended with


@pytest.fixture
def server_url() -> Iterator[str]:
    """A ``websockets`` server: to each connection three text frames, a ping, a frame
    larger than one read, then a normal close."""
    ready = threading.Event()
    url: list[str] = []
    closed.clear()
    stop: list[asyncio.Future[None]] = []

    async def talk(conn: ServerConnection) -> None:
        name = await conn.recv()
        if name == "fragments":  # a message in two frames: the service never sends one
            await conn.send(["one", "two"])
            await conn.wait_closed()
            return
        for i in range(3):
            await conn.send(f"{name}:{i}")
        await asyncio.wait_for(await conn.ping(), 5)  # answered, or BIG never goes
        await conn.send(BIG)
        await conn.close(4001, "bye")
        closed.append(conn.close_code)

    async def main() -> None:
        async with serve(talk, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            url.append(f"ws://127.0.0.1:{port}/")
            stop.append(asyncio.get_running_loop().create_future())
            ready.set()
            await stop[0]

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10), "the test server did not start"
    yield url[0]
    loop.call_soon_threadsafe(stop[0].set_result, None)
    thread.join(10)
    loop.close()


def test_one_mux_reads_every_connection_in_order(server_url: str) -> None:
    mux = WsMux()
    got: dict[str, list[str]] = {}
    clients = []
    for name in ("a", "b", "c", "d"):
        ws = WsClient(server_url, subprotocol="chat")
        got[name] = []
        mux.add(ws, lambda frames, at, name=name: got[name].extend(f.decode() for f in frames))
        clients.append(ws)
        ws.send_text(name.encode())
    assert len(mux) == 4
    deadline = time.monotonic() + 10
    while len(mux) and time.monotonic() < deadline:
        mux.read_ready(timeout=0.5)
    # every connection's frames, whole and in order; each closed connection left the mux
    assert len(mux) == 0, got
    for name, frames in got.items():
        assert frames == [f"{name}:0", f"{name}:1", f"{name}:2", BIG]
    # the server's side finishes its closing handshake on its thread
    wait_until_sync(lambda: len(closed) >= 4, "the server's four closing handshakes", 5)
    assert closed == [4001] * 4  # each client echoed the close: a clean closing handshake
    assert all(ws.closed and ws.sock.fileno() == -1 for ws in clients)
    mux.close()


def test_a_dropped_connection_is_no_longer_read(server_url: str) -> None:
    mux = WsMux()
    kept, dropped = WsClient(server_url, subprotocol="chat"), WsClient(server_url,
                                                                      subprotocol="chat")
    seen: list[str] = []
    mux.add(kept, lambda frames, at: seen.extend("kept" for _ in frames))
    mux.add(dropped, lambda frames, at: seen.extend("dropped" for _ in frames))
    mux.drop(dropped)
    assert len(mux) == 1
    kept.send_text(b"k")
    dropped.send_text(b"d")
    deadline = time.monotonic() + 10
    while len(mux) and time.monotonic() < deadline:
        mux.read_ready(timeout=0.5)
    assert seen == ["kept"] * 4
    dropped.close()
    mux.close()


def test_a_frame_the_service_never_sends_fails_the_connection(server_url: str) -> None:
    """A fragmented message is not delivered in pieces or as garbage: the connection ends."""
    mux = WsMux()
    ws = WsClient(server_url, subprotocol="chat")
    got: list[bytes] = []
    mux.add(ws, lambda frames, at: got.extend(frames))
    ws.send_text(b"fragments")
    deadline = time.monotonic() + 10
    while len(mux) and time.monotonic() < deadline:
        mux.read_ready(timeout=0.5)
    assert len(mux) == 0 and ws.closed and got == []
    mux.close()


def test_server_frames_splits_whole_frames_and_keeps_the_rest() -> None:
    """Lengths in 7, 16 and 64 bits; a frame cut anywhere waits for the rest."""
    small, mid, big = b"a" * 5, b"b" * 300, b"c" * 70_000
    data = (bytes((0x81, 5)) + small + bytes((0x82, 126)) + (300).to_bytes(2, "big") + mid
            + bytes((0x81, 127)) + (70_000).to_bytes(8, "big") + big)
    assert server_frames(data) == ([(1, small), (2, mid), (1, big)], len(data))
    for cut in (1, 7, 9, 12, 310, len(data) - 1):
        frames, used = server_frames(data[:cut])
        rest, more = server_frames(data[used:])
        assert [p for _, p in frames + rest] == [small, mid, big] and used + more == len(data)
    with pytest.raises(WsError, match="unexpected frame"):
        server_frames(bytes((0x01, 3)) + b"abc")  # no FIN: a fragment
    with pytest.raises(WsError, match="unexpected frame"):
        server_frames(bytes((0xC1, 3)) + b"abc")  # RSV1: compressed


# The asyncio client (tests, benchmarks, the fan-out load generator) ------------------------


async def _echo_server(handler: Any) -> tuple[Any, int]:
    server = await serve(handler, "127.0.0.1", 0,
                         subprotocols=[Subprotocol(JSON), Subprotocol(MSGPACK)])
    return server, next(iter(server.sockets)).getsockname()[1]


@pytest.mark.parametrize("subprotocol", [JSON, MSGPACK])
async def test_the_light_client_says_hello_and_reads_events_in_its_format(
    subprotocol: str,
) -> None:
    """Hello with since goes out in the connection's format; the welcome, events and a
    personal message come back decoded, events apart, and an op waits for its own ack."""
    got: list[Any] = []

    async def hub(conn: ServerConnection) -> None:
        binary = conn.subprotocol == MSGPACK

        def enc(obj: dict[str, Any]) -> str | bytes:
            return msgpack.packb(obj) if binary else orjson.dumps(obj).decode()

        hello = await conn.recv()
        got.append(msgpack.unpackb(hello) if binary else orjson.loads(hello))
        await conn.send(enc({"type": "welcome", "seq": 3, "recovered": True}))
        for seq in (4, 5):
            await conn.send(enc({"type": "pinned", "seq": seq, "ts": 1}))
        op = await conn.recv()
        ref = (msgpack.unpackb(op) if binary else orjson.loads(op))["ref"]
        await conn.send(enc({"type": "ack", "ref": "other"}))
        await conn.send(enc({"type": "ack", "ref": ref}))
        await conn.close(4001, "slow consumer")

    server, port = await _echo_server(hub)
    try:
        c = await open_client(port, "/ws/live/s1", subprotocol=subprotocol)
        assert c.status == 101
        welcome = await c.welcomed("tok", since={"epoch": "e", "seq": 2})
        assert welcome["recovered"] is True and c.last_seq() >= 3
        assert got == [{"op": "hello", "token": "tok", "since": {"epoch": "e", "seq": 2}}]
        assert (await c.op("chat", "r1", text="hi"))["ref"] == "r1"
        await c.until(lambda c: c.close_code is not None, 10, "the server's close")
        assert [e["seq"] for e in c.events()] == [4, 5] and c.last_seq() == 5
        assert c.close_code == 4001 and c.close_reason == "slow consumer"
        assert [m["type"] for m in c.personal()] == ["welcome", "ack", "ack"]
        c.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_the_light_client_reports_a_refused_handshake() -> None:
    """A handshake answered with an HTTP error leaves ``status`` and the body to read."""

    async def refuse(conn: ServerConnection, request: Request) -> Response:
        return conn.respond(HTTPStatus.TOO_MANY_REQUESTS, '{"error": "busy"}\n')

    server = await serve(lambda conn: conn.wait_closed(), "127.0.0.1", 0,
                         process_request=refuse)
    port = next(iter(server.sockets)).getsockname()[1]
    try:
        c = await open_client(port, "/")
        await c.until(lambda c: c.lost, 10, "the refused socket's end")
        assert c.status == 429 and b"busy" in c.refusal
        with pytest.raises(TimeoutError, match="a welcome not met"):
            await c.until(lambda c: c.welcome is not None, 0.05, "a welcome")
    finally:
        server.close()
        await server.wait_closed()


def test_client_frames_are_masked_and_sized_for_every_length() -> None:
    """A client frame unmasks to its payload with 7, 16 and 64-bit lengths."""
    for n in (0, 5, 125, 126, 300, 65535, 65536, 70_000):
        payload = bytes(i % 251 for i in range(n))
        frame = client_frame(payload, BINARY)
        assert frame[0] == 0x80 | BINARY and frame[1] & 0x80
        size = frame[1] & 0x7F
        at = 2 if size < 126 else 4 if size == 126 else 10
        mask, body = frame[at:at + 4], frame[at + 4:]
        assert bytes(b ^ mask[i % 4] for i, b in enumerate(body)) == payload
