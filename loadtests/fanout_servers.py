"""The comparison servers of the fan-out benchmark, each one process, one room.

- ``ws``: the bare ``websockets`` library server; ``broadcast()`` of one text message.
- ``raw``: the same server, but one frame built per event and written as is to each
  connection's transport: the floor of asyncio fan-out here, what no library can beat.
- ``sio``: python-socketio ``AsyncServer`` as an ASGI app on uvicorn; ``emit`` to a room.

Driven over stdin/stdout with JSON lines: ``{"cmd": "broadcast", "count", "rate"}`` sends
``count`` pin events (``rate`` per second, 0 = back to back) and answers when done;
``{"cmd": "conns"}`` answers the number of clients. The event is the same shape and size
as the hub's ``pinned`` event, with ``ts`` (ms) the time the event was due by the
schedule (the time of the broadcast when sending back to back).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

PRODUCT = {"sku": "B1", "title": "Bench thing B1", "price": {"amount": 950, "currency": "GBP"},
           "image": "/catalog/images/B1.svg"}


def pin_event(seq: int, due: float) -> dict[str, Any]:
    return {"seq": seq, "ts": round(due * 1000, 3),
            "type": "pinned" if seq % 2 else "unpinned", "sku": "B1", "product": PRODUCT}


async def control(broadcast: Callable[[int, float], Awaitable[None]],
                  conns: Callable[[], int]) -> None:
    loop = asyncio.get_running_loop()
    seq = 0
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        cmd = orjson.loads(line)
        if cmd["cmd"] == "conns":
            print(orjson.dumps({"conns": conns()}).decode(), flush=True)
        elif cmd["cmd"] == "broadcast":
            rate = float(cmd["rate"])
            start, wall = time.monotonic(), time.time()
            for i in range(int(cmd["count"])):
                if rate:
                    await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
                seq += 1
                # ts is when the event was due, so a server that falls behind the
                # schedule shows it in its latency (as the hub's does).
                await broadcast(seq, wall + i / rate if rate else time.time())
                await asyncio.sleep(0)
            print(orjson.dumps({"done": True}).decode(), flush=True)
        else:
            return


async def serve_websockets(port: int, raw: bool = False) -> None:
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    from live.protocol.frames import Format, frame

    clients: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        clients.add(ws)
        try:
            await ws.wait_closed()
        finally:
            clients.discard(ws)

    async def send_all(seq: int, due: float) -> None:
        if raw:
            data = frame(orjson.dumps(pin_event(seq, due)), Format.JSON)
            for ws in clients:
                ws.transport.write(data)
        else:
            broadcast(clients, orjson.dumps(pin_event(seq, due)).decode())

    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=4):
        print(orjson.dumps({"listening": port}).decode(), flush=True)
        await control(send_all, lambda: len(clients))


async def serve_socketio(port: int) -> None:
    import socketio
    import uvicorn

    sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins=[])
    count = 0

    @sio.event  # type: ignore[misc]
    async def connect(sid: str, environ: dict[str, Any]) -> None:
        nonlocal count
        count += 1
        await sio.enter_room(sid, "room")

    @sio.event  # type: ignore[misc]
    async def disconnect(sid: str, *args: Any) -> None:
        nonlocal count
        count -= 1

    async def send_all(seq: int, due: float) -> None:
        await sio.emit("pin", pin_event(seq, due), room="room")

    config = uvicorn.Config(socketio.ASGIApp(sio), host="127.0.0.1", port=port,
                            ws="websockets-sansio", log_level="warning",
                            ws_per_message_deflate=False, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    print(orjson.dumps({"listening": port}).decode(), flush=True)
    await control(send_all, lambda: count)
    server.should_exit = True
    await task


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["ws", "raw", "sio"])
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    if args.kind == "sio":
        asyncio.run(serve_socketio(args.port))
    else:
        asyncio.run(serve_websockets(args.port, raw=args.kind == "raw"))


if __name__ == "__main__":
    main()
