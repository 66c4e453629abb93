"""uvicorn's httptools protocol, with a response's head and its body in one write.

uvicorn writes the status line and headers when the app starts a response, and the body
in a second write: two ``send`` calls, two TCP segments and, on loopback or a busy host,
often two wake-ups of the client, for a response that fits in one. Here the head is held
until the first body write and goes out with it; what follows is written as it comes.
A ``100 Continue`` interim response is written at once, as before.

Once a connection is upgraded to a WebSocket, the HTTP protocol drops its parser, so that
the two are freed by reference counting rather than by the cycle collector.

``newretail serve`` runs uvicorn with ``http=HTTP_PROTOCOL``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from live.metrics import FAST_PATHS

HTTP_PROTOCOL = "live.uvicorn.http:LiveHttpProtocol"


INTERIM = b"HTTP/1.1 100 Continue\r\n\r\n"


class HeadWithBody:
    """The transport as one response cycle sees it: its first write (the head; only a
    ``100 Continue`` may come before it, and goes out at once) waits for the next one (the
    body) and goes out with it. It holds no reference to the cycle, which holds it: one
    reference cycle per request would leave every request's objects to the cycle
    collector."""

    __slots__ = ("transport", "head", "started")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.head: bytes | None = None
        self.started = False

    def write(self, data: bytes) -> None:
        head = self.head
        if head is not None:
            self.head = None
            self.transport.write(head + data)
            FAST_PATHS.one_write += 1
        elif not self.started and data != INTERIM:
            self.started = True
            self.head = data
        else:
            self.transport.write(data)

    def close(self) -> None:
        # A response abandoned after its head: the client gets what there was.
        if self.head is not None:
            self.transport.write(self.head)
            self.head = None
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class LiveHttpProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` whose response cycles write the head with the body, and which
    lets go of its parser once a connection becomes a WebSocket."""

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        # The connection is the WebSocket protocol's now. This protocol and its parser
        # refer to each other (the parser calls back into it): without the parser both are
        # freed at once, instead of leaving some 20 objects per connection to the cycle
        # collector, whose full pass after 2,000 viewers joined stalled the process ~100 ms.
        self.parser = None  # type: ignore[assignment]

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle is not before:
            cycle.transport = HeadWithBody(self.transport)  # type: ignore[assignment]
