"""The contract of the hub's connection writers, one suite over both: ``RawConn`` (frames
straight to uvicorn's transport) and ``QueuedConn`` (a writer task draining a bounded queue
through ASGI ``send``). Each test runs once per writer, against a real uvicorn server and
the project's client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn

from live.hub.endpoint import make_conn
from live.protocol.frames import Format, encode, frame
from live.protocol.messages import CLOSE_SLOW_CONSUMER, ConnId
from live.uvicorn.rawconn import RawConn
from live.uvicorn.ws import WS_PROTOCOL
from live.writers.base import Conn
from live.writers.queued import QueuedConn
from loadtests.wsclient import JSON, MSGPACK, LightClient, open_client
from tests.utils import uvicorn_in_loop, wait_until

BOUND = 64 * 1024
WRITERS = {"raw": RawConn, "queued": QueuedConn}


@dataclass
class WriterApp:
    """An ASGI app that gives each connection to the test as the hub would get it: one
    writer per connection, kept by path, and what its receive loop saw at the end."""

    writer: str
    conns: dict[str, Conn] = field(default_factory=dict)
    disconnects: dict[str, int] = field(default_factory=dict)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        if (await receive())["type"] != "websocket.connect":
            return
        offered = scope.get("subprotocols") or []
        fmt = Format.MSGPACK if MSGPACK in offered else Format.JSON
        await send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None})

        async def plain_send(message: Any) -> None:  # not uvicorn's bound method: queued
            await send(message)

        conn = make_conn(ConnId(len(self.conns) + 1), fmt, BOUND,
                         send if self.writer == "raw" else plain_send)
        if not isinstance(conn, WRITERS[self.writer]):
            raise TypeError(f"{self.writer} asked, {type(conn).__name__} made")
        self.conns[scope["path"]] = conn
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    self.disconnects[scope["path"]] = message.get("code", 1005)
                    return
        finally:  # as live/ws.py ends a connection
            conn.closed = True
            if isinstance(conn, QueuedConn):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(conn.task), 1.0)
                conn.stop()


@dataclass
class Served:
    app: WriterApp
    port: int

    async def connect(self, path: str, subprotocol: str = JSON,
                      rcvbuf: int | None = None) -> tuple[LightClient, Conn]:
        """A client on ``path`` and the server's writer for it."""
        client = await open_client(self.port, path, subprotocol=subprotocol, rcvbuf=rcvbuf)
        assert client.status == 101
        await wait_until(lambda: path in self.app.conns, f"the server's writer for {path}")
        return client, self.app.conns[path]


@pytest.fixture(params=sorted(WRITERS))
async def served(request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    """uvicorn with the service's WebSocket protocol, the app using one kind of writer."""
    app = WriterApp(request.param)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, ws=WS_PROTOCOL, lifespan="off",
                            log_level="warning", ws_per_message_deflate=False)
    async with uvicorn_in_loop(config) as port:
        yield Served(app, port)


@pytest.mark.parametrize("subprotocol", [JSON, MSGPACK])
async def test_frames_arrive_whole_and_in_order(served: Served, subprotocol: str) -> None:
    """Frames of every length encoding, pushed back to back without waiting (within the
    bound), arrive whole, once each and in order, in the connection's format."""
    client, conn = await served.connect("/order", subprotocol)
    fmt = conn.fmt
    assert fmt is (Format.MSGPACK if subprotocol == MSGPACK else Format.JSON)
    sizes = [0, 1, 125, 126, 300, 20_000, *range(50)] * 2
    for i, size in enumerate(sizes):
        conn.push(frame(encode({"i": i, "pad": "x" * size}, fmt), fmt))
    await client.until(lambda c: len(c.messages) == len(sizes), 10, "every frame")
    assert [(m["i"], len(m["pad"])) for m in client.messages] == list(enumerate(sizes))
    assert not conn.closed
    client.close()


async def test_a_personal_message_reaches_only_its_connection(served: Served) -> None:
    """``send_message`` encodes for that connection's format and no other sees it."""
    json_client, json_conn = await served.connect("/json")
    mp_client, mp_conn = await served.connect("/msgpack", MSGPACK)
    json_conn.send_message({"type": "ack", "ref": "j"})
    mp_conn.send_message({"type": "ack", "ref": "m", "raw": b"\x00\x01"})
    await json_client.until(lambda c: len(c.messages) == 1, 10, "the JSON client's ack")
    await mp_client.until(lambda c: len(c.messages) == 1, 10, "the msgpack client's ack")
    assert json_client.messages == [{"type": "ack", "ref": "j"}]
    assert mp_client.messages == [{"type": "ack", "ref": "m", "raw": b"\x00\x01"}]
    json_client.close()
    mp_client.close()


async def test_send_messages_is_one_write_in_order(served: Served,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Several personal messages go out in one ``push`` (one write), in the given order."""
    client, conn = await served.connect("/batch")
    pushes: list[bytes] = []
    real_push = type(conn).push

    def counted(self: Conn, data: bytes) -> None:
        pushes.append(data)
        real_push(self, data)

    monkeypatch.setattr(type(conn), "push", counted)
    conn.send_messages({"type": "order", "n": 1}, {"type": "ack", "n": 2},
                       {"type": "stock", "n": 3})
    await client.until(lambda c: len(c.messages) == 3, 10, "the three messages")
    assert len(pushes) == 1
    assert [m["n"] for m in client.messages] == [1, 2, 3]
    client.close()


async def test_close_sends_its_code_and_reason_and_ends_the_receive_loop(
    served: Served,
) -> None:
    """``close(code, reason)``: what was pushed before arrives, then a close frame with
    that code and reason; the app's receive loop sees the disconnect."""
    client, conn = await served.connect("/close")
    conn.send_message({"type": "last words"})
    conn.close(4003, "session over")
    await client.until(lambda c: c.close_code is not None, 10, "the close frame")
    assert client.messages == [{"type": "last words"}]
    assert (client.close_code, client.close_reason) == (4003, "session over")
    await wait_until(lambda: "/close" in served.app.disconnects, "the app's disconnect")
    assert conn.closed
    client.close()


async def test_writes_after_close_are_ignored(served: Served) -> None:
    """Pushes, messages and a second close after ``close`` raise nothing and send
    nothing: the client sees the close and no frame after it."""
    client, conn = await served.connect("/after")
    conn.close(1000, "bye")
    conn.send_message({"type": "too late"})
    conn.send_messages({"type": "later still"}, {"type": "and this"})
    conn.push(frame(encode({"type": "raw"}, conn.fmt), conn.fmt))
    conn.close(4001, "again")
    await client.until(lambda c: c.lost, 10, "the connection's end")
    assert client.close_code == 1000 and client.messages == []
    client.close()


async def test_a_slow_consumer_is_closed_past_the_bound_and_others_are_not_held_up(
    served: Served,
) -> None:
    """A client that stops reading is closed with ``CLOSE_SLOW_CONSUMER`` once its
    pending output passes the bound; a reading client on the same server gets every frame,
    in order, and stays open."""
    stuck, stuck_conn = await served.connect("/stuck", rcvbuf=4096)
    reader, reader_conn = await served.connect("/reader")
    stuck.pause()
    chunk = "x" * 32_000
    sent = 0
    # Loopback lets the kernel hold a few MB before the server's side backs up.
    for i in range(1000):
        if stuck_conn.closed:
            break
        data = frame(encode({"i": i, "pad": chunk}, Format.JSON), Format.JSON)
        stuck_conn.push(data)
        reader_conn.push(data)
        sent = i + 1
        await reader.until(lambda c, n=sent: len(c.messages) == n, 10, f"frame {i} read")
    assert stuck_conn.closed, f"still open after {sent} frames of 32 KB"
    stuck.resume()
    await stuck.until(lambda c: c.close_code is not None or c.lost, 15, "the stuck one's close")
    assert stuck.close_code == CLOSE_SLOW_CONSUMER
    assert [m["i"] for m in reader.messages] == list(range(sent))
    reader_conn.send_message({"type": "still here"})
    await reader.until(lambda c: c.messages[-1] == {"type": "still here"}, 10, "a later message")
    assert not reader_conn.closed and reader.close_code is None
    reader.close()
    stuck.close()
