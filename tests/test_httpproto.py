"""The service's HTTP protocol under uvicorn: a response's head goes out with its body in
one write, and everything HTTP/1.1 asks of the order of writes still holds (interim
``100 Continue``, streamed bodies, pipelined requests, empty bodies)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from websockets.asyncio.client import connect

from live.uvicorn.http import LiveHttpProtocol
from live.uvicorn.ws import WS_PROTOCOL
from tests.utils import uvicorn_in_loop


@dataclass
class Writes:
    """What the server wrote to its connections' real transports, write by write."""

    chunks: list[bytes] = field(default_factory=list)


def spied(base: type[HttpToolsProtocol], writes: Writes) -> type[HttpToolsProtocol]:
    class Spied(base):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            real = transport.write

            def write(data: Any) -> None:
                writes.chunks.append(bytes(data))
                real(data)

            transport.write = write  # type: ignore[method-assign]

    return Spied


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    path = scope["path"]
    if path == "/plain":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": b"hello"})
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b"two", "more_body": False})
    elif path == "/empty":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/echo":
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
    elif path == "/broken":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"10")]})
        raise RuntimeError("the app fails after starting its response")


@dataclass
class Served:
    port: int
    writes: Writes


async def _serve(protocol: type[HttpToolsProtocol]) -> AsyncIterator[Served]:
    writes = Writes()
    async with uvicorn_in_loop(uvicorn.Config(
            app, host="127.0.0.1", port=0, http=spied(protocol, writes), lifespan="off",
            log_level="critical")) as port:
        yield Served(port, writes)


@pytest.fixture
async def live() -> AsyncIterator[Served]:
    async for served in _serve(LiveHttpProtocol):
        yield served


@pytest.fixture
async def plain() -> AsyncIterator[Served]:
    async for served in _serve(HttpToolsProtocol):
        yield served


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One response: status line, headers (lower-cased names) and the whole body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status, *lines = head[:-4].split(b"\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(b":", 1) for ln in lines)}
    if headers.get(b"transfer-encoding") == b"chunked":
        body = b""
        while True:
            size = int((await asyncio.wait_for(reader.readuntil(b"\r\n"), 5))[:-2], 16)
            chunk = await asyncio.wait_for(reader.readexactly(size + 2), 5)
            if size == 0:
                break
            body += chunk[:-2]
        return status, headers, body
    length = int(headers.get(b"content-length", b"0"))
    return status, headers, await asyncio.wait_for(reader.readexactly(length), 5)


async def get(port: int, *paths: str) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
    """``paths`` asked on one kept-alive connection, all in one write (pipelined)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"".join(f"GET {p} HTTP/1.1\r\nhost: t\r\n\r\n".encode() for p in paths))
        return [await read_response(reader) for _ in paths]
    finally:
        writer.close()


async def test_a_response_is_one_write(live: Served, plain: Served) -> None:
    status, headers, body = (await get(live.port, "/plain"))[0]
    assert (status, body, headers[b"content-type"]) == (b"HTTP/1.1 200 OK", b"hello", b"text/plain")
    assert len(live.writes.chunks) == 1
    assert live.writes.chunks[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert live.writes.chunks[0].endswith(b"\r\n\r\nhello")
    # uvicorn's own protocol writes the head and the body apart
    assert (await get(plain.port, "/plain"))[0][2] == b"hello"
    assert len(plain.writes.chunks) == 2


async def test_kept_alive_and_pipelined_requests_each_get_one_write_in_order(
    live: Served,
) -> None:
    answers = await get(live.port, "/plain", "/empty", "/stream", "/plain")
    assert [(s.split(b" ")[1], b) for s, _, b in answers] == [
        (b"200", b"hello"), (b"204", b""), (b"200", b"onetwo"), (b"200", b"hello")]
    heads = [c for c in live.writes.chunks if c.startswith(b"HTTP/1.1 ")]
    assert len(heads) == 4  # no head written alone: each came with its first body part
    assert all(not c.endswith(b"\r\n\r\n") or c.startswith(b"HTTP/1.1 204") for c in heads)


async def test_a_streamed_body_goes_out_as_the_app_sends_it(live: Served) -> None:
    status, headers, body = (await get(live.port, "/stream"))[0]
    assert (status, headers[b"transfer-encoding"], body) == (b"HTTP/1.1 200 OK", b"chunked",
                                                              b"onetwo")
    first, *rest = live.writes.chunks
    assert first.startswith(b"HTTP/1.1 200 OK") and first.endswith(b"3\r\none\r\n")
    assert b"".join(rest) == b"3\r\ntwo\r\n0\r\n\r\n"


async def test_100_continue_is_written_before_the_client_sends_its_body(live: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    try:
        writer.write(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 4\r\n"
                     b"expect: 100-continue\r\n\r\n")
        # the client waits for the interim answer before sending its body
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"ping")
        status, _, body = await read_response(reader)
        assert (status, body) == (b"HTTP/1.1 200 OK", b"ping")
    finally:
        writer.close()
    assert live.writes.chunks[0] == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert live.writes.chunks[1].startswith(b"HTTP/1.1 200 OK")
    assert live.writes.chunks[1].endswith(b"\r\n\r\nping")


async def test_a_response_abandoned_after_its_head_closes_the_connection(
    live: Served,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    try:
        writer.write(b"GET /broken HTTP/1.1\r\nhost: t\r\n\r\n")
        got = await asyncio.wait_for(reader.read(), 5)  # until the server closes
    finally:
        writer.close()
    # the head the app sent still reaches the client, then the connection ends
    assert got.startswith(b"HTTP/1.1 200 OK") and got.endswith(b"\r\n\r\n")


async def test_requests_leave_nothing_to_the_cycle_collector(live: Served) -> None:
    """A response cycle and its transport wrapper are freed when the next request replaces
    them: as a reference cycle, every request's objects would wait for a full collection
    (50-80 ms stalls under load)."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        answers = await get(live.port, *["/plain"] * 20)
        gc.collect()
        left = {type(o).__name__ for o in gc.garbage}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert [body for _, _, body in answers] == [b"hello"] * 20
    assert not left & {"RequestResponseCycle", "HeadWithBody"}, left


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while (message := await receive())["type"] == "websocket.receive":
        await send({"type": "websocket.send", "text": message["text"]})


async def test_a_connection_upgraded_to_a_websocket_leaves_nothing_to_the_cycle_collector(
) -> None:
    """After the upgrade the HTTP protocol and its parser are freed at once (they referred
    to each other): 2,000 viewers joining had left some 40,000 objects to one full
    collection of the WebSocket process, a stall of about 100 ms. The connections work."""
    async with uvicorn_in_loop(uvicorn.Config(
            echo, host="127.0.0.1", port=0, http=LiveHttpProtocol, ws=WS_PROTOCOL,
            lifespan="off", log_level="critical")) as port:
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            clients = [await connect(f"ws://127.0.0.1:{port}/") for _ in range(10)]
            for i, ws in enumerate(clients):
                await ws.send(f"m{i}")
                assert await asyncio.wait_for(ws.recv(), 5) == f"m{i}"
            gc.collect()
            left = {type(o).__name__ for o in gc.garbage}
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        for ws in clients:
            await ws.close()
    assert not left & {"LiveHttpProtocol", "HttpRequestParser"}, left
