"""The service's WebSocket protocol under uvicorn: reads pause only when the app falls
behind, and a client's ordinary frames are read without the general parser, whatever the
bytes around them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from live.uvicorn.ws import QUEUE_HIGH, QUEUE_LOW, WS_PROTOCOL
from live.websockets.parser import between_frames
from tests.utils import uvicorn_in_loop, wait_until


@dataclass
class Echo:
    """An ASGI app that echoes each text message once ``gate`` is open."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    got: list[str] = field(default_factory=list)
    protos: list[Any] = field(default_factory=list)
    pauses: int = 0  # times the server stopped reading a connection

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        proto = send.__self__  # uvicorn's protocol object for this connection
        self.protos.append(proto)
        pause = proto.transport.pause_reading

        def counted() -> None:
            self.pauses += 1
            pause()

        proto.transport.pause_reading = counted
        while True:
            await self.gate.wait()
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            self.got.append(message["text"])
            await send({"type": "websocket.send", "text": message["text"]})


@dataclass
class Served:
    app: Echo
    url: str


async def _serve(ws: str) -> AsyncIterator[Served]:
    app = Echo()
    async with uvicorn_in_loop(uvicorn.Config(
            app, host="127.0.0.1", port=0, ws=ws, lifespan="off", log_level="warning",
            ws_per_message_deflate=False)) as port:
        yield Served(app, f"ws://127.0.0.1:{port}/")


@pytest.fixture
async def live_proto() -> AsyncIterator[Served]:
    async for served in _serve(WS_PROTOCOL):
        yield served


@pytest.fixture
async def uvicorn_proto() -> AsyncIterator[Served]:
    async for served in _serve("websockets-sansio"):
        yield served


async def _until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    await wait_until(condition, what, timeout, 0.005)


async def _round_trips(served: Served, n: int) -> None:
    served.app.gate.set()
    async with connect(served.url, compression=None) as ws:
        for i in range(n):
            await ws.send(f"m{i}")
            assert await ws.recv() == f"m{i}"
    assert served.app.got == [f"m{i}" for i in range(n)]


async def test_a_client_the_app_keeps_up_with_is_never_paused(
    live_proto: Served, uvicorn_proto: Served
) -> None:
    await _round_trips(live_proto, 50)
    await _round_trips(uvicorn_proto, 50)
    assert live_proto.app.pauses == 0
    # uvicorn's own protocol pauses (and resumes) reading for every message
    assert uvicorn_proto.app.pauses >= 50


async def test_reading_stops_past_the_high_mark_and_resumes_in_order(
    live_proto: Served,
) -> None:
    app = live_proto.app
    n = 5 * QUEUE_HIGH
    async with connect(live_proto.url, compression=None) as ws:
        await _until(lambda: len(app.protos) == 1, "the connection")
        proto = app.protos[0]
        # The app is not receiving (the gate is shut): messages wait in its queue, read
        # one at a time, until QUEUE_HIGH of them wait.
        for i in range(QUEUE_HIGH):
            assert proto.transport.is_reading()
            await ws.send(f"m{i}")
            await _until(lambda i=i: proto.queue.qsize() == i + 1, f"message {i} queued")
        assert proto.read_paused and not proto.transport.is_reading()
        assert app.pauses == 1
        for i in range(QUEUE_HIGH, n):
            await ws.send(f"m{i}")
        await asyncio.sleep(0.1)  # time enough to read them, were the socket being read
        assert proto.queue.qsize() == QUEUE_HIGH  # the rest waits in the socket
        app.gate.set()
        for i in range(n):
            assert await ws.recv() == f"m{i}"
        assert app.got == [f"m{i}" for i in range(n)]  # nothing lost, nothing reordered
        assert proto.transport.is_reading() and not proto.read_paused
        assert proto.queue.qsize() <= QUEUE_LOW
        assert app.pauses >= 1


class RawClient:
    """A WebSocket client that writes whatever bytes it is given: frames joined in one
    write, cut anywhere, malformed. The handshake and the server's frames go through the
    ``websockets`` sans-I/O client."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 proto: ClientProtocol) -> None:
        self.reader, self.writer, self.proto = reader, writer, proto

    @classmethod
    async def open(cls, url: str) -> RawClient:
        uri = parse_uri(url)
        reader, writer = await asyncio.open_connection(uri.host, uri.port)
        proto = ClientProtocol(uri)
        proto.send_request(proto.connect())
        client = cls(reader, writer, proto)
        await client.write(b"".join(proto.data_to_send()))
        while proto.state is not State.OPEN:
            proto.receive_data(await asyncio.wait_for(reader.read(65536), 5))
            assert proto.handshake_exc is None
        proto.events_received()
        return client

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def frames(self, n: int) -> list[Frame]:
        """The next ``n`` frames from the server (or fewer, when it closed first)."""
        got: list[Frame] = []
        while len(got) < n:
            data = await asyncio.wait_for(self.reader.read(65536), 5)
            if not data:
                break
            self.proto.receive_data(data)
            got += [e for e in self.proto.events_received() if isinstance(e, Frame)]
        return got

    def close(self) -> None:
        self.writer.close()


def masked(opcode: Opcode, payload: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, payload, fin=fin).serialize(mask=True)


async def test_frames_joined_cut_or_mixed_with_others_arrive_whole_and_in_order(
    live_proto: Served,
) -> None:
    """Ordinary frames joined in one write; a frame cut after its first bytes, finished in
    a write that carries more; a ping, a fragmented message and a 64-bit-length frame among
    them: every message reaches the app once, whole, in order, and the ping is answered."""
    app = live_proto.app
    app.gate.set()
    client = await RawClient.open(live_proto.url)
    try:
        await _until(lambda: len(app.protos) == 1, "the connection")
        conn = app.protos[0].conn
        fed: list[int] = []  # bytes given to websockets' parser
        parse = conn.receive_data
        conn.receive_data = lambda data: (fed.append(len(data)), parse(data))
        texts = [f"m{i}" for i in range(10)] + ["x" * 300, "y" * 70_000]
        await client.write(b"".join(masked(Opcode.TEXT, t.encode()) for t in texts))
        assert [f.data.decode() for f in await client.frames(len(texts))] == texts
        assert sum(fed) <= 70_000 + 14  # only the frame with a 64-bit length went there
        cut = masked(Opcode.TEXT, b"cut in two")
        await client.write(cut[:3])
        await _until(lambda: len(conn.reader.buffer) == 1, "the cut frame's first bytes read")
        assert not between_frames(conn)
        await client.write(b"".join([
            cut[3:], masked(Opcode.TEXT, b"after"), masked(Opcode.PING, b"hi"),
            masked(Opcode.TEXT, b"frag", fin=False), masked(Opcode.CONT, b"mented"),
            masked(Opcode.TEXT, "é".encode())]))
        frames = await client.frames(5)
        # the pong is the protocol's own answer, written as the ping is read
        assert [bytes(f.data) for f in frames if f.opcode is Opcode.PONG] == [b"hi"]
        assert [f.data for f in frames if f.opcode is Opcode.TEXT] == [
            b"cut in two", b"after", b"fragmented", "é".encode()]
        assert between_frames(conn)
        assert app.got == [*texts, "cut in two", "after", "fragmented", "é"]
    finally:
        client.close()


@pytest.mark.parametrize(("bad", "code"), [
    (masked(Opcode.TEXT, b"\xff\xfe"), 1007),  # not UTF-8
    (Frame(Opcode.TEXT, b"plain").serialize(mask=False), 1002),  # a client must mask
    (bytes([0xC1]) + masked(Opcode.TEXT, b"rsv1")[1:], 1002),  # no extension agreed
])
async def test_a_bad_frame_closes_the_connection_and_what_follows_is_not_read(
    live_proto: Served, bad: bytes, code: int,
) -> None:
    app = live_proto.app
    app.gate.set()
    client = await RawClient.open(live_proto.url)
    try:
        await client.write(masked(Opcode.TEXT, b"before"))
        assert [f.data for f in await client.frames(1)] == [b"before"]
        await client.write(bad + masked(Opcode.TEXT, b"after"))
        frames = await client.frames(2)
        assert [f.opcode for f in frames] == [Opcode.CLOSE]
        assert Close.parse(frames[0].data).code == code
        assert app.got == ["before"]
    finally:
        client.close()
