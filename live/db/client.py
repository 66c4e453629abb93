"""The datastore client: one connection pool per process, with bounded waits on shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

import redis.asyncio as aredis

log = logging.getLogger("newretail.live")


def connect(url: str, timeout: float = 2.0) -> aredis.Redis:
    """A ``redis.asyncio`` client for ``url`` returning ``bytes``.

    A down store gives a clear error rather than a hang: a refused or reset connection
    is retried a few times (a restart is quick), and a command that gets no answer
    within ``timeout`` seconds fails at once, without retries that would multiply the
    wait.
    """
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError

    # A blocking pool: a burst (2,000 viewers joining at once) waits for a free connection,
    # up to the same timeout as a command, instead of failing with "Too many connections".
    pool = aredis.BlockingConnectionPool.from_url(
        url,
        socket_connect_timeout=min(2.0, timeout),
        socket_timeout=timeout,
        socket_keepalive=True,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), retries=3,
                    supported_errors=(RedisConnectionError,)),
        retry_on_error=[RedisConnectionError],
        max_connections=256,
        timeout=timeout,
    )
    return aredis.Redis.from_pool(pool)


async def bounded(step: Awaitable[object], name: str, seconds: float = 5.0) -> None:
    """Run one shutdown step for at most ``seconds``: a client library that stalls while
    closing (a pool's lock, a socket that never reports closed) must not keep the process
    from exiting. The step runs as a task of its own and is left cancelled when late, so a
    step that swallows cancellation cannot hold the caller either."""
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        log.warning("shutdown: %s did not finish within %.0f s; going on", name, seconds)
        return
    task.result()


def text(value: bytes | str) -> str:
    """A datastore reply as text (the client returns bytes; its types allow str too)."""
    return value.decode() if isinstance(value, bytes) else value
