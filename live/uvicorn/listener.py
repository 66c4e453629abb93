"""uvicorn's configuration, with a listening socket that says it is TCP.

With several workers uvicorn binds the socket itself and hands it to each worker
(``Config.bind_socket``). That socket is made with ``proto`` 0; accepted sockets inherit
it, and asyncio sets ``TCP_NODELAY`` only on sockets that say ``IPPROTO_TCP``. Without it
Nagle's algorithm holds each response's body until the client acknowledges its headers,
which a client delays by up to 40 ms: every request on a kept-alive connection after the
first took about 44 ms, and WebSocket frames could wait as long (uvicorn issue #3149).
"""

from __future__ import annotations

import socket

import uvicorn


def as_tcp(sock: socket.socket) -> socket.socket:
    """``sock`` itself when it is not an internet socket or already says TCP, else the
    same listening socket re-wrapped so that its protocol reads ``IPPROTO_TCP``."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.proto == socket.IPPROTO_TCP:
        return sock
    return socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())


class TcpConfig(uvicorn.Config):
    """``uvicorn.Config`` whose bound socket (several workers) says it is TCP."""

    def bind_socket(self) -> socket.socket:
        return as_tcp(super().bind_socket())
