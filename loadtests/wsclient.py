"""The project's one WebSocket client: tests, benchmarks and load tests all use it.

The service's frames are unmasked, unfragmented and without extensions, so what the server
sends is split here (``server_frames``, 0.2 µs a frame against 3 µs through a general
parser) and what the client sends is built here (``client_frame``, masked). Two pumps
share that codec:

- ``LightClient``: an ``asyncio.Protocol`` (no task, no stream per socket), so one
  process holds thousands. It keeps every decoded message (JSON text or msgpack binary
  frames, by the subprotocol offered) with its arrival time, says hello (with ``since``
  to resume), waits on conditions with a deadline (``until``, ``op``, ``wait_all``).
  Load generators subclass it and override ``on_frame`` to do less per frame.
- ``WsClient`` / ``WsMux``: a blocking socket for Locust's gevent users, its handshake and
  sends through ``websockets``' sans-I/O ``ClientProtocol``; a ``WsMux`` reads many
  connections from one greenlet through one epoll object.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import select
import socket
import time
from collections.abc import Callable
from typing import Any

import msgpack
import orjson
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidState, ProtocolError
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

RECV_BYTES = 65536
FramesHandler = Callable[[list[bytes], float], None]
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
JSON, MSGPACK = "newretail.json", "newretail.msgpack"
Message = dict[str, Any]


class WsError(Exception):
    """The connection failed or was closed."""


# The codec -----------------------------------------------------------------------------


def client_frame(payload: bytes, opcode: int = TEXT) -> bytes:
    """One masked client frame (pure)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    if not n:
        return head + mask
    # XOR with the mask repeated to the payload's length, as one big integer.
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + mask + masked


def walk_frames(buf: bytes, on_frame: Callable[[int, bytes], object]) -> int:
    """Hand each whole frame at the start of ``buf`` to ``on_frame(opcode, payload)``;
    returns how many bytes they took. A frame the service never sends raises ``WsError``."""
    pos, size = 0, len(buf)
    while size - pos >= 2:
        head, n = buf[pos], buf[pos + 1]
        if head & 0x70 or not head & 0x80 or n & 0x80:
            raise WsError(f"unexpected frame from the server: first bytes {head:#04x} {n:#04x}"
                          " (extension bits, a fragment or a mask)")
        n &= 0x7F
        start = pos + 2
        if n == 126:
            if size - pos < 4:
                break
            n, start = int.from_bytes(buf[pos + 2:pos + 4], "big"), pos + 4
        elif n == 127:
            if size - pos < 10:
                break
            n, start = int.from_bytes(buf[pos + 2:pos + 10], "big"), pos + 10
        if size - start < n:
            break
        on_frame(head & 0x0F, buf[start:start + n])
        pos = start + n
    return pos


def server_frames(buf: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """The whole frames at the start of ``buf`` as ``(opcode, payload)``, and how many bytes
    they took; a frame the service never sends raises ``WsError`` (pure)."""
    out: list[tuple[int, bytes]] = []
    used = walk_frames(buf, lambda opcode, payload: out.append((opcode, payload)))
    return out, used


def upgrade_request(path: str, subprotocol: str | None, host: str = "127.0.0.1") -> bytes:
    """The opening handshake's HTTP request (pure but for the random key)."""
    key = base64.b64encode(os.urandom(16)).decode()
    proto = f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else ""
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{proto}\r\n").encode()


def hello_op(token: str, since: Message | None = None) -> Message:
    """The hello a viewer page sends; ``since`` (epoch and seq) asks to resume."""
    op: Message = {"op": "hello", "token": token}
    if since is not None:
        op["since"] = since
    return op


# The asyncio client ----------------------------------------------------------------------


class LightClient(asyncio.Protocol):
    """One WebSocket connection. ``status`` is the handshake's HTTP status (101 when open),
    ``close_code`` the server's close code once it closed, ``messages`` every decoded
    message (``arrived``: their wall-clock arrival, to compare with events' ``ts``)."""

    def __init__(self, path: str, subprotocol: str | None = JSON) -> None:
        self.path = path
        self.subprotocol = subprotocol
        self.binary = subprotocol == MSGPACK
        self.buf = bytearray()
        self.status = 0
        self.head = b""  # the handshake answer's status line and headers
        self.refusal = b""
        self.upgraded = False
        self.transport: asyncio.Transport | None = None
        self.messages: list[Message] = []
        self.arrived: list[float] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.lost = False
        self.changed = asyncio.Event()
        self.handshake: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        # The read being handled: its clock reading, and whether it changed anything.
        self._now = 0.0
        self._got = False

    # asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(upgrade_request(self.path, self.subprotocol))  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.handshake.done():
            self.handshake.set_result(self.status)
        self.changed.set()

    def data_received(self, data: bytes) -> None:
        if self.upgraded and not self.buf:  # the common case: no copy into the buffer
            used = self._walk(data)
            if used < len(data):
                self.buf += data[used:]
            return
        if self.status and self.status != 101:
            self.refusal += data  # the rest of a refusal's body
            return
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end])
            self.head = head
            self.status = int(head.split(b" ", 2)[1])
            del self.buf[:end + 4]
            if self.status != 101:
                self.refusal = bytes(self.buf)  # the error body
                if not self.handshake.done():
                    self.handshake.set_result(self.status)
                return
            self.upgraded = True
            self.on_open()
            if not self.handshake.done():
                self.handshake.set_result(101)
        used = self._walk(bytes(self.buf))
        del self.buf[:used]

    def _walk(self, buf: bytes) -> int:
        """Handle every whole frame at the start of ``buf`` (no list in between: a load
        generator reads 100,000 frames a second with this); returns how many bytes they
        took. One clock read per read from the socket: frames that arrived together share
        it."""
        self._now = time.time()
        self._got = False
        used = walk_frames(buf, self._one)
        if self._got:
            self.changed.set()
        return used

    def _one(self, opcode: int, payload: bytes) -> None:
        if opcode == PING:
            self._write(client_frame(payload, PONG))
        elif opcode == CLOSE:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.close_reason = payload[2:].decode(errors="replace")
            self._write(client_frame(payload[:2], CLOSE))
            self._got = True
        elif opcode != PONG and self.on_frame(opcode, payload, self._now):
            self._got = True

    # What a subclass may change ----------------------------------------------------------

    def on_open(self) -> None:
        """The handshake succeeded (a load generator says hello here)."""

    def on_frame(self, opcode: int, payload: bytes, now: float) -> bool:
        """A text or binary frame: decoded and kept. Returns whether anything changed."""
        msg = msgpack.unpackb(payload) if opcode == BINARY else orjson.loads(payload)
        self.messages.append(msg)
        self.arrived.append(now)
        return True

    # Use -----------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def send(self, obj: Message) -> None:
        """One message in the connection's format (msgpack binary or JSON text)."""
        if self.binary:
            self._write(client_frame(msgpack.packb(obj), BINARY))
        else:
            self._write(client_frame(orjson.dumps(obj)))

    def send_raw(self, payload: bytes, opcode: int = TEXT) -> None:
        """One frame as given (a broken frame, a pre-built one)."""
        self._write(client_frame(payload, opcode))

    def hello(self, token: str, since: Message | None = None) -> None:
        self.send(hello_op(token, since))

    @property
    def welcome(self) -> Message | None:
        return next((m for m in self.messages if m.get("type") == "welcome"), None)

    def events(self) -> list[Message]:
        """Session events (they carry a seq; the welcome's seq is its snapshot's)."""
        return [m for m in self.messages if "seq" in m and m.get("type") != "welcome"]

    def personal(self) -> list[Message]:
        """Everything that is not a session event: welcome, acks, errors, orders."""
        return [m for m in self.messages if "seq" not in m or m.get("type") == "welcome"]

    def first(self, cond: Callable[[Message], bool]) -> Message | None:
        return next((m for m in self.messages if cond(m)), None)

    def last_seq(self) -> int:
        """The last session seq this client knows (its welcome's, or a later event's)."""
        if self.welcome is None:
            raise AssertionError(f"no welcome on {self.path}: {self.messages[:3]}")
        return int(max([self.welcome["seq"], *(e["seq"] for e in self.events())]))

    async def until(self, cond: Callable[[LightClient], bool], timeout: float = 20.0,
                    what: str = "") -> None:
        """Wait until ``cond(self)``; fail after ``timeout`` seconds naming ``what``."""
        deadline = time.monotonic() + timeout
        while not cond(self):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{what or 'condition'} not met within {timeout} s on "
                                   f"{self.path} (last messages {str(self.messages[-3:])[:300]}, "
                                   f"close {self.close_code}, lost {self.lost})")
            self.changed.clear()
            if cond(self):
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)

    async def welcomed(self, token: str, since: Message | None = None,
                       timeout: float = 20.0) -> Message:
        """Say hello and wait for the welcome (or an error, which is returned)."""
        start = len(self.messages)
        self.hello(token, since)

        def answered(c: LightClient) -> bool:
            return any(m.get("type") in ("welcome", "error") for m in c.messages[start:]) \
                or c.lost

        await self.until(answered, timeout, "a welcome")
        return next((m for m in self.messages[start:]
                     if m.get("type") in ("welcome", "error")), {"type": "lost"})

    async def op(self, op: str, ref: str, timeout: float = 20.0, **payload: Any) -> Message:
        """Send an op and return its ack or error (events arriving meanwhile are kept)."""
        self.send({"op": op, "ref": ref, **payload})

        def reply(m: Message) -> bool:
            return m.get("type") in ("ack", "error") and m.get("ref") == ref

        await self.until(lambda c: c.first(reply) is not None, timeout, f"an answer to {ref}")
        answer = self.first(reply)
        assert answer is not None
        return answer

    def pause(self) -> None:
        """Stop reading: the socket's receive buffer fills and the server's backs up."""
        if self.transport is None:
            raise WsError("not connected")
        self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_client(port: int, path: str, rcvbuf: int | None = None,
                      timeout: float = 20.0, source: str | None = None,
                      subprotocol: str | None = JSON, host: str = "127.0.0.1",
                      factory: Callable[[], LightClient] | None = None) -> LightClient:
    """Connect and finish the handshake (``status`` says whether it was accepted).

    Args:
        rcvbuf: a small receive buffer for a client meant to stop reading, so the server's
            side backs up after kilobytes rather than the megabytes loopback allows.
        source: the local address to connect from (any of 127.0.0.0/8 works on Linux),
            to look like another client to per-address limits.
        subprotocol: ``newretail.json``, ``newretail.msgpack``, or None to offer none.
        factory: builds the protocol (a subclass of ``LightClient``) instead.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if source is not None:
        sock.bind((source, 0))
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout)
    except BaseException:
        sock.close()
        raise
    make = factory or (lambda: LightClient(path, subprotocol))
    _, client = await loop.create_connection(make, sock=sock)
    await asyncio.wait_for(asyncio.shield(client.handshake), timeout)
    return client


async def wait_all(clients: list[LightClient], cond: Callable[[LightClient], bool],
                   timeout: float) -> list[LightClient]:
    """Wait until every client meets ``cond`` (or the deadline); return the ones that
    did not."""
    deadline = time.monotonic() + timeout
    for c in clients:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            await c.until(cond, left)
        except TimeoutError:
            break
    return [c for c in clients if not cond(c)]


# The blocking client, for gevent ----------------------------------------------------------


class WsClient:
    """One client connection.

    Args:
        url: ``ws://host:port/path``.
        subprotocol: offered to the server (``newretail.json`` for JSON text frames).
        timeout: seconds for the TCP connect and the opening handshake.
    """

    def __init__(self, url: str, subprotocol: str = "newretail.json",
                 timeout: float = 30.0) -> None:
        uri = parse_uri(url)
        self.proto = ClientProtocol(uri, subprotocols=[Subprotocol(subprotocol)],
                                    max_size=None)
        self.sock = socket.create_connection((uri.host, uri.port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.closed = False
        self.proto.send_request(self.proto.connect())
        self._flush()
        while self.proto.state is State.CONNECTING:
            self._feed(self._recv())
            for event in self.proto.events_received():
                if isinstance(event, Response) and event.status_code != 101:
                    raise WsError(f"handshake refused: HTTP {event.status_code}")
        if self.proto.handshake_exc is not None:
            raise WsError(f"handshake failed: {self.proto.handshake_exc}")
        # The server speaks only after hello, so the handshake's read held nothing more.
        self._rest = b""
        self.sock.settimeout(None)  # from now on the reader waits as long as it takes

    def _recv(self) -> bytes:
        try:
            return self.sock.recv(RECV_BYTES)
        except OSError as exc:
            raise WsError(f"receive failed: {exc}") from exc

    def _feed(self, data: bytes) -> None:
        if data:
            self.proto.receive_data(data)
        else:
            self.proto.receive_eof()
            self.closed = True

    def _flush(self) -> None:
        for chunk in self.proto.data_to_send():
            if chunk:
                try:
                    self.sock.sendall(chunk)
                except OSError as exc:
                    self.closed = True
                    raise WsError(f"send failed: {exc}") from exc

    def send_text(self, data: bytes) -> None:
        """Send one text frame (``data`` is UTF-8 already, e.g. from orjson)."""
        if self.closed:
            raise WsError("the connection is closed")
        self.proto.send_text(data)
        self._flush()

    def recv_frames(self) -> list[bytes]:
        """Block until at least one read came in; the text/binary payloads it completed."""
        return self.frames_from(self._recv())

    def frames_from(self, data: bytes) -> list[bytes]:
        """Bytes read from the socket (``b""``: it ended); the payloads they completed."""
        if not data:
            self.closed = True
            return []
        buf = self._rest + data if self._rest else data
        frames, used = server_frames(buf)
        self._rest = buf[used:]
        out: list[bytes] = []
        for opcode, payload in frames:
            if opcode == TEXT or opcode == BINARY:
                out.append(payload)
            elif opcode == PING:
                self.proto.send_pong(payload)
                self._flush()
            elif opcode == CLOSE:
                self._answer_close(payload)
                break
            elif opcode != PONG:
                raise WsError(f"unexpected frame from the server: opcode {opcode:#x}")
        return out

    def _answer_close(self, payload: bytes) -> None:
        """The closing handshake: echo the server's code; the caller closes the socket."""
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1000
        with contextlib.suppress(WsError, ProtocolError, InvalidState):
            self.proto.send_close(code)  # a code one may not send back is not answered
            self._flush()
        self.closed = True

    def run(self, on_frames: FramesHandler) -> None:
        """Read until the connection ends: ``on_frames(payloads, read_at)`` per read with
        frames, as ``WsMux`` calls it; then close."""
        try:
            while not self.closed:
                frames = self.recv_frames()
                if frames:
                    on_frames(frames, time.time())
        finally:
            self.close()

    def close(self) -> None:
        if self.sock.fileno() == -1:
            return
        if not self.closed and self.proto.state is State.OPEN:
            try:
                self.proto.send_close(1000)
                self._flush()
            except WsError:
                pass
        self.closed = True
        self.sock.close()


def _real_epoll() -> select.epoll:
    """An epoll object even where gevent's monkey-patching took ``select.epoll`` away."""
    try:
        from gevent.monkey import get_original
    except ImportError:  # pragma: no cover - gevent comes with Locust
        return select.epoll()
    epoll: type[select.epoll] = get_original("select", "epoll")
    return epoll()


class WsMux:
    """Many connections read by one greenlet.

    A greenlet per connection costs a wake-up, two switches and a watcher of gevent's loop
    for every message: in the load test that was most of the 23 µs a viewer's message cost.
    Here one greenlet waits on an epoll object that holds every connection; when the
    server writes one event to every viewer, one wake-up reads all that are ready, one
    ``recv`` each. Sends still go through each ``WsClient`` (cooperative ``sendall``).
    """

    def __init__(self) -> None:
        self._epoll = _real_epoll()
        self._conns: dict[int, tuple[WsClient, FramesHandler]] = {}

    def __len__(self) -> int:
        return len(self._conns)

    def add(self, ws: WsClient, on_frames: FramesHandler) -> None:
        """Read ``ws`` from now on: ``on_frames(payloads, read_at)`` per read with frames."""
        fd = ws.sock.fileno()
        self._conns[fd] = (ws, on_frames)
        self._epoll.register(fd, select.EPOLLIN)

    def drop(self, ws: WsClient) -> None:
        fd = ws.sock.fileno()
        if fd != -1 and self._conns.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    def read_ready(self, timeout: float = 0.0) -> int:
        """One pass: every connection epoll reports readable is read once. Returns the
        number of connections read."""
        ready = self._epoll.poll(timeout)
        for fd, _ in ready:
            entry = self._conns.get(fd)
            if entry is None:
                continue
            ws, on_frames = entry
            try:
                # level-triggered and reported readable: this read does not block
                frames = ws.frames_from(os.read(fd, RECV_BYTES))
            except (OSError, WsError):
                frames, ws.closed = [], True
            if frames:
                on_frames(frames, time.time())
            if ws.closed:
                self._conns.pop(fd, None)
                self._epoll.unregister(fd)
                ws.close()
        return len(ready)

    def run(self) -> None:
        """Read every connection added, now or later, until killed (run it in a greenlet);
        then close them all."""
        from gevent.socket import wait_read

        try:
            while True:
                wait_read(self._epoll.fileno())
                self.read_ready()
        finally:
            self.close()

    def close(self) -> None:
        """Close every connection still read, and the epoll object."""
        for ws, _ in list(self._conns.values()):
            ws.close()
        self._conns.clear()
        self._epoll.close()
