"""Store values kept in the process for as long as the datastore says they have not changed.

Redis's server-assisted client-side caching, broadcast mode: one connection per process
(RESP3) asks the datastore to announce every write to a key under some prefixes
(``CLIENT TRACKING ON BCAST PREFIX ...``), and each announced key is dropped from the
process's copy as soon as the announcement is read, before any task runs again.

- The datastore sends a write's announcement in the same turn as the write's reply, so the
  copy is behind the datastore by one trip over the network at most.
- A read under way when its key is announced keeps nothing: it may hold the old value.
- While the connection is down nothing is kept, and the copy is dropped whole when it goes
  and again when it comes back (writes in between were never announced).
- A flush of the datastore (an announcement without keys) drops the whole copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import hiredis
from prometheus_client import Counter
from redis.asyncio.connection import SSLConnection, parse_url

log = logging.getLogger("newretail.tracked")

MISSING: Any = object()
CLIENT_NAME = "newretail-tracked"

ANNOUNCED = Counter("newretail_tracked_announced_keys",
                    "Keys the datastore announced as written, dropped from the process's copy")
DROPPED = Counter("newretail_tracked_dropped",
                  "Times the whole copy was dropped, by why", ["why"])


class Tracked:
    """A copy of store values under ``prefixes``, each dropped when the datastore writes it.

    Use: ``get`` a key (``MISSING`` when not held); to fill it, ``begin`` before the read
    and ``end`` after it with what was read.

    Args:
        url: the datastore.
        prefixes: the key prefixes to be told about (none may be a prefix of another).
        max_keys: keys held at most; the oldest go first.
        max_fields: fields held at most in one key's dict (see ``end``); past it the dict
            starts afresh.
    """

    def __init__(self, url: str, prefixes: Iterable[str], max_keys: int = 100_000,
                 max_fields: int = 100_000) -> None:
        self.url = url
        self.prefixes = tuple(prefixes)
        self.max_keys = max_keys
        self.max_fields = max_fields
        self.live = False
        self.announced = 0  # keys announced so far
        self._values: dict[str, Any] = {}
        self._reading: dict[str, int] = {}
        self._spoiled: set[str] = set()
        self._epoch = 0
        self._task: asyncio.Task[None] | None = None
        self._up = asyncio.Event()

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: str) -> Any:
        return self._values.get(key, MISSING)

    def begin(self, keys: Iterable[str]) -> int:
        """Before reading ``keys`` from the datastore; the result goes to ``end``."""
        reading = self._reading
        for key in keys:
            reading[key] = reading.get(key, 0) + 1
        return self._epoch

    def end(self, keys: Sequence[str], began: int, values: Mapping[str, Any],
            fields: Iterable[tuple[str, str, Any]] = ()) -> None:
        """After the read begun with ``begin``: keep ``values`` (some of ``keys``), and each
        ``(key, field, value)`` of ``fields`` in the dict held at ``key`` (made when none
        is; for hash-like entries read a field at a time), unless the key was announced
        meanwhile or the copy was dropped since. Call it when the read failed too, with
        nothing to keep."""
        reading, spoiled = self._reading, self._spoiled
        for key in keys:
            left = reading.get(key, 1) - 1
            if left > 0:
                reading[key] = left
            else:
                reading.pop(key, None)
        if self.live and began == self._epoch:
            for key, value in values.items():
                if key not in spoiled:
                    self._hold(key, value)
            held = self._values
            for key, field, value in fields:
                if key in spoiled:
                    continue
                # In place: not announced since this read began, so whatever is held at
                # the key is as current as what was read.
                entry = held.get(key)
                if entry is None or len(entry) >= self.max_fields:
                    self._hold(key, {field: value})
                else:
                    entry[field] = value
        if spoiled:
            for key in keys:
                if key not in reading:
                    spoiled.discard(key)

    def _hold(self, key: str, value: Any) -> None:
        held = self._values
        if key not in held and len(held) >= self.max_keys:
            del held[next(iter(held))]
        held[key] = value

    def drop_all(self, why: str) -> None:
        """Keep nothing held now, nor what reads under way bring back."""
        self._values.clear()
        self._spoiled.clear()
        self._epoch += 1
        DROPPED.labels(why).inc()

    def _announce(self, push: list[Any]) -> None:
        if len(push) < 2 or push[0] != b"invalidate":
            return
        keys = push[1]
        if keys is None:  # the datastore was flushed
            self.drop_all("flush")
            return
        values, reading, spoiled = self._values, self._reading, self._spoiled
        for raw in keys:
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            values.pop(key, None)
            if key in reading:
                spoiled.add(key)
        self.announced += len(keys)
        ANNOUNCED.inc(len(keys))

    # the connection ---------------------------------------------------------------------

    async def start(self, wait: float = 2.0) -> None:
        """Connect in the background; wait up to ``wait`` s for the datastore to start
        announcing (reads go to the datastore meanwhile, and for good if it never does)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._up.wait(), wait)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _commands(self, options: Mapping[str, Any]) -> list[list[str]]:
        hello = ["HELLO", "3"]
        if options.get("password"):
            hello += ["AUTH", options.get("username") or "default", options["password"]]
        tracking = ["CLIENT", "TRACKING", "ON", "BCAST"]
        for prefix in self.prefixes:
            tracking += ["PREFIX", prefix]
        return [hello + ["SETNAME", CLIENT_NAME], tracking]

    async def _connect(self, options: Mapping[str, Any]) -> tuple[asyncio.Transport, _Listener]:
        loop = asyncio.get_running_loop()
        listener = _Listener(self._announce)
        if "path" in options:
            made = loop.create_unix_connection(lambda: listener, options["path"])
        else:
            tls = (ssl.create_default_context()
                   if options.get("connection_class") is SSLConnection else None)
            made = loop.create_connection(lambda: listener, options.get("host", "localhost"),
                                          int(options.get("port", 6379)), ssl=tls)
        transport, _ = await asyncio.wait_for(made, 2.0)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return transport, listener

    async def _watch(self) -> None:
        options = parse_url(self.url)
        pause = 0.05
        said = ""
        while True:
            transport: asyncio.Transport | None = None
            try:
                transport, listener = await self._connect(options)
                for cmd in self._commands(options):
                    transport.write(_encode(cmd))
                    reply = await asyncio.wait_for(listener.replies.get(), 5.0)
                    if isinstance(reply, hiredis.ReplyError):
                        raise _Refused(f"{cmd[0]} {cmd[1]}: {reply}")
                self.drop_all("connected")
                self.live = True
                self._up.set()
                pause = 0.05
                log.info("the datastore announces writes under %s", ", ".join(self.prefixes))
                lost = await listener.closed
                raise ConnectionError(f"connection lost: {lost or 'closed by the datastore'}")
            except (OSError, hiredis.HiredisError, _Refused) as exc:
                if self.live:
                    log.warning("store announcements stopped (%s): reading from the datastore "
                                "until they are back", exc)
                elif str(exc) != said:  # a datastore that refuses is retried quietly
                    log.warning("store announcements not available (%s): reading from the "
                                "store", exc)
                said = str(exc)
            finally:
                if self.live:
                    self.live = False
                    self._up.clear()
                    self.drop_all("disconnected")
                if transport is not None:
                    transport.close()
            await asyncio.sleep(pause)
            pause = min(5.0, pause * 2)


class _Refused(Exception):
    """The datastore answered the set-up with an error (no RESP3, no tracking, bad auth)."""


class _Listener(asyncio.Protocol):
    """The announcements connection: replies to the set-up commands in order, and
    announcements applied in ``data_received`` itself, so that whatever the event loop
    runs after reading one sees the copy without the keys it names."""

    def __init__(self, announce: Callable[[list[Any]], None]) -> None:
        self.announce = announce
        self.reader = hiredis.Reader()
        self.replies: asyncio.Queue[Any] = asyncio.Queue()
        self.closed: asyncio.Future[Exception | None] = (
            asyncio.get_running_loop().create_future())

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (msg := self.reader.gets()) is not False:
            if isinstance(msg, hiredis.PushNotification):
                self.announce(msg)
            else:
                self.replies.put_nowait(msg)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)


def _encode(cmd: list[str]) -> bytes:
    """A command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(cmd)]
    for arg in cmd:
        raw = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)
