"""uvicorn's httptools protocol, with a response's head and its body in one write.

uvicorn writes the status line and headers when the app starts a response, and the body
in a second write: two ``send`` calls, two TCP segments and, on loopback or a busy host,
often two wake-ups of the client, for a response that fits in one. Here the head is held
until the first body write and goes out with it; what follows is written as it comes.
A ``100 Continue`` interim response is written at once, as before.

``newretail serve`` runs uvicorn with ``http=HTTP_PROTOCOL``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HTTP_PROTOCOL = "live.httpproto:LiveHttpProtocol"


class HeadWithBody:
    """The transport as one response cycle sees it: its first write once the response
    has started (the head) waits for the next one (the body) and goes out with it."""

    __slots__ = ("transport", "cycle", "head", "started")

    def __init__(self, transport: asyncio.Transport, cycle: Any) -> None:
        self.transport = transport
        self.cycle = cycle
        self.head: bytes | None = None
        self.started = False

    def write(self, data: bytes) -> None:
        head = self.head
        if head is not None:
            self.head = None
            self.transport.write(head + data)
        elif not self.started and self.cycle.response_started:
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
    """``HttpToolsProtocol`` whose response cycles write the head with the body."""

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle is not before:
            cycle.transport = HeadWithBody(self.transport, cycle)  # type: ignore[assignment]
