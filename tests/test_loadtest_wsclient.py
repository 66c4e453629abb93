"""The load generator's WebSocket client: many connections read by one ``WsMux``."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
from websockets.asyncio.server import ServerConnection, serve

from loadtests.sale.wsclient import WsClient, WsError, WsMux, server_frames

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
    deadline = time.monotonic() + 5
    while len(closed) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)  # the server's side finishes its closing handshake on its thread
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
