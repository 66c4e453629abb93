"""Helpers for tests that run the real service in its own process, or uvicorn in theirs."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A ``newretail serve`` process on an ephemeral port."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up (fault tests)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def run_server(
    redis_url: str, var_dir: Path, env: Mapping[str, str] | None = None,
    workers: int = 1, timeout: float = 30.0,
) -> Iterator[ServerProcess]:
    """Run ``newretail serve`` against ``redis_url`` and wait until it answers /healthz."""
    port = free_port()
    var_dir.mkdir(parents=True, exist_ok=True)
    log_path = var_dir / f"server-{port}.log"
    full_env = {
        **os.environ, "NEWRETAIL_REDIS_URL": redis_url, "NEWRETAIL_VAR_DIR": str(var_dir),
        "NEWRETAIL_LOG_LEVEL": "WARNING", **(env or {}),
    }
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "live.cli", "serve", "--port", str(port),
             "--workers", str(workers)],
            env=full_env, stdout=log_file, stderr=subprocess.STDOUT,
        )
    server = ServerProcess(process, port, log_path)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
            try:
                if httpx.get(f"{server.url}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not answer within {timeout} s:\n{server.log()}")
            time.sleep(0.1)
        yield server
    finally:
        server.stop()
