"""Helpers for tests that run the real service in its own process (``run_server``, shared
with the benchmarks in ``loadtests.server``), or uvicorn in theirs; waiting on conditions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import uvicorn

from loadtests.server import ServerProcess, free_port, run_server

__all__ = ["ServerProcess", "free_port", "run_server", "uvicorn_in_loop", "wait_until",
           "wait_until_sync"]


async def wait_until(condition: Callable[[], bool | Awaitable[bool]], what: str,
                     timeout: float = 10.0, interval: float = 0.01) -> None:
    """Poll ``condition`` (a plain or async predicate) until it holds; after ``timeout``
    seconds fail with an ``AssertionError`` saying ``what`` did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        held = condition()
        if not isinstance(held, bool):
            held = await held
        if held:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        await asyncio.sleep(interval)


def wait_until_sync(condition: Callable[[], bool], what: str, timeout: float = 10.0,
                    interval: float = 0.01) -> None:
    """``wait_until`` for code outside an event loop (threads, subprocesses)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(interval)


@asynccontextmanager
async def uvicorn_in_loop(config: uvicorn.Config) -> AsyncIterator[int]:
    """uvicorn serving ``config`` in this event loop; yields the port it listens on."""
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await wait_until(lambda: server.started or task.done(), "uvicorn's start")
    if task.done():
        raise AssertionError(f"uvicorn ended before it started: {task.exception()!r}")
    try:
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
