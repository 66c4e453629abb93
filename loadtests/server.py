"""``newretail serve`` in a process of its own on an ephemeral port: for the benchmarks and
the tests (``tests.utils`` re-exports it; loadtests never import tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


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
            [sys.executable, "-m", "live.web.cli", "serve", "--port", str(port),
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
