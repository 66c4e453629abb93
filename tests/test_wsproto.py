"""The service's WebSocket protocol under uvicorn: reads pause only when the app falls behind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import connect

from live.wsproto import QUEUE_HIGH, QUEUE_LOW, WS_PROTOCOL


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
    server = uvicorn.Server(uvicorn.Config(
        app, host="127.0.0.1", port=0, ws=ws, lifespan="off", log_level="warning",
        ws_per_message_deflate=False))
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Served(app, f"ws://127.0.0.1:{port}/")
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def live_proto() -> AsyncIterator[Served]:
    async for served in _serve(WS_PROTOCOL):
        yield served


@pytest.fixture
async def uvicorn_proto() -> AsyncIterator[Served]:
    async for served in _serve("websockets-sansio"):
        yield served


async def _until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


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
