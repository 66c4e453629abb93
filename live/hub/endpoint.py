"""The WebSocket endpoints ``/ws/live/{session_id}`` and ``/ws/screen/{screen_id}``.

They are served by a pure ASGI middleware ahead of Starlette's routing, so the hub gets
the server's own ``send`` (and, under uvicorn's sans-I/O protocol, its transport) for each
connection, with nothing wrapped around it per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from identity.errors import IdentityError
from identity.tokens import KeyRing
from live.errors import (
    STORE_ERRORS,
    STORE_MESSAGE,
    STORE_UNAVAILABLE,
    LiveError,
    log_store_error,
)
from live.hub.hub import Hub
from live.metrics import WS_CONNECTIONS, WS_DISCONNECTS
from live.protocol.frames import Format, choose_format, decode_frame
from live.protocol.messages import (
    AUDIENCE_ROLES,
    CLOSE_POLICY,
    ConnId,
    error_message,
    parse_hello,
    parse_op,
)
from live.protocol.states import ConnState
from live.uvicorn.rawconn import RawConn, raw_conn
from live.writers.base import Conn
from live.writers.queued import QueuedConn

log = logging.getLogger("newretail.live")

_LIVE = re.compile(r"/ws/live/([A-Za-z0-9_-]{1,64})")
_SCREEN = re.compile(r"/ws/screen/([A-Za-z0-9_.-]{1,64})")
HELLO_TIMEOUT = 15.0
SCREEN_ROLES = frozenset({"screen", "admin"})
CLOSE_TOO_BIG = 1009


class LiveSockets:
    """ASGI middleware: the live and screen sockets; everything else goes to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            live = _LIVE.fullmatch(scope["path"])
            screen = None if live else _SCREEN.fullmatch(scope["path"])
            if live or screen:
                services = scope["app"].state.services
                socket = Socket(services.hub, services.keyring, services.settings.ws_max_frame,
                                services.settings.ws_send_buffer, services.identity.is_erased)
                match = live or screen
                assert match is not None  # for the type checker: one of the two matched
                await socket.serve(scope, receive, send, match.group(1), bool(screen))
                return
        await self.app(scope, receive, send)


class Socket:
    """One connection's receive loop: hello, then ops, errors as messages, never a crash."""

    __slots__ = ("hub", "keyring", "max_frame", "bound", "is_erased")

    def __init__(self, hub: Hub, keyring: KeyRing, max_frame: int, bound: int,
                 is_erased: Callable[[str], Awaitable[bool]] | None = None) -> None:
        self.hub = hub
        self.keyring = keyring
        self.max_frame = max_frame
        self.bound = bound
        self.is_erased = is_erased

    async def serve(
        self, scope: Scope, receive: Receive, send: Send, target: str, screen: bool
    ) -> None:
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        del first
        fmt, subprotocol = choose_format(scope.get("subprotocols") or ())
        await send({"type": "websocket.accept", "subprotocol": subprotocol})
        conn = make_conn(self.hub.new_conn_id(), fmt, self.bound, send,
                         self.hub.config.direct_send)
        if isinstance(conn, RawConn):
            scope["headers"] = ()  # read above; no one needs them for the connection's life
        kind = "screen" if screen else "live"
        WS_CONNECTIONS.labels(kind).inc()
        try:
            await self._loop(conn, receive, target, screen)
        finally:
            WS_CONNECTIONS.labels(kind).dec()
            if screen:
                self.hub.remove_screen(target, conn)
            else:
                self.hub.leave(conn)
            conn.closed = True
            if isinstance(conn, QueuedConn):
                with contextlib.suppress(asyncio.TimeoutError, Exception):
                    await asyncio.wait_for(asyncio.shield(conn.task), 1.0)
                conn.stop()

    async def _loop(self, conn: Conn, receive: Receive, target: str, screen: bool) -> None:
        hello_by = time.monotonic() + HELLO_TIMEOUT
        while True:
            if conn.state is ConnState.AWAITING_HELLO:
                try:
                    msg = await asyncio.wait_for(receive(), hello_by - time.monotonic())
                except TimeoutError:
                    WS_DISCONNECTS.labels("no_hello").inc()
                    conn.close(CLOSE_POLICY, "no hello")
                    return
            else:
                msg = await receive()
            if msg["type"] == "websocket.disconnect":
                return
            data = msg.get("text")
            if data is None:
                data = msg.get("bytes")
            if data is None:
                continue
            if len(data) > self.max_frame:
                WS_DISCONNECTS.labels("too_big").inc()
                conn.close(CLOSE_TOO_BIG, "frame too big")
                return
            await self._handle(conn, data, target, screen)
            del msg, data  # an idle connection keeps no frame alive
            if conn.closed:
                return

    async def _handle(self, conn: Conn, data: str | bytes, target: str, screen: bool) -> None:
        """One client frame: hello first, then ops; any refusal is an error message."""
        ref: Any = None
        try:
            obj = decode_frame(data, conn.fmt)
            ref = obj.get("ref") if isinstance(obj.get("ref"), str | int) else None
            if conn.state is ConnState.AWAITING_HELLO:
                await self._hello(conn, obj, target, screen)
            elif screen:
                raise LiveError("unknown_op", "screens send no ops after hello")
            else:
                await self.hub.run_op(conn, parse_op(obj))
        except (LiveError, IdentityError) as exc:
            conn.send_message(error_message(exc.code, exc.message, ref))
        except STORE_ERRORS as exc:  # hello while the datastore is down: retry, not internal
            log_store_error(exc, "hello")
            conn.send_message(error_message(STORE_UNAVAILABLE, STORE_MESSAGE, ref))
        except Exception:
            log.exception("conn %s: frame failed", conn.id)
            conn.send_message(error_message("internal", "the server failed on this frame", ref))

    async def _hello(self, conn: Conn, obj: dict[str, Any], target: str, screen: bool) -> None:
        hello = parse_hello(obj)
        claims = self.keyring.verify(hello.token)
        if self.is_erased is not None and await self.is_erased(claims.sub):
            # An erased member's token may not have expired yet; it brings nothing back.
            raise IdentityError("unauthorized", "this user was erased", 401)
        if screen:
            if claims.role not in SCREEN_ROLES:
                raise LiveError("forbidden", "screen sockets need a screen token", 403)
            if claims.role == "screen" and claims.sub != target:
                raise LiveError("forbidden", "this token is for another screen", 403)
        elif claims.role not in AUDIENCE_ROLES:
            raise LiveError("forbidden", f"a {claims.role} token cannot join a session", 403)
        conn.user, conn.role = claims.sub, claims.role
        conn.member_id = claims.sub if claims.role == "member" else None
        if screen:
            conn.session_id = ""
            conn.joined()
            self.hub.add_screen(target, conn)
            conn.send_message({"type": "welcome", "role": claims.role, "screen_id": target})
            return
        conn.session_id = target
        log.debug("conn %s: %s %s joins %s", conn.id, claims.role, claims.sub, target)
        await self.hub.join(conn, target, hello.since)


def make_conn(
    conn_id: ConnId, fmt: Format, bound: int, send: Send, direct_send: bool = True
) -> Conn:
    """A raw connection under uvicorn's sans-I/O protocol, else a queued one."""
    return raw_conn(conn_id, fmt, bound, send, direct_send) or QueuedConn(conn_id, fmt, bound, send)
