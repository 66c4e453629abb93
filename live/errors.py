"""The live package's error type and the one place every package's errors meet the wire."""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("newretail.live")

# What the datastore client raises when the datastore is down, restarting (``LOADING`` is a
# ``ConnectionError``) or too slow to answer within ``NEWRETAIL_STORE_TIMEOUT``.
STORE_ERRORS: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError)
STORE_UNAVAILABLE = "store_unavailable"
STORE_MESSAGE = "the store is not reachable just now; try again in a moment"


class LiveError(Exception):
    """A refused request or op of the live package, with its wire code and HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class WireError(Protocol):
    code: str
    message: str
    status: int


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def not_found(what: str) -> LiveError:
    return LiveError("not_found", f"{what} not found", 404)


def bad_request(message: str) -> LiveError:
    return LiveError("bad_request", message, 400)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}


def store_unavailable() -> LiveError:
    """The error for a request or op that needed the datastore while it was unreachable."""
    return LiveError(STORE_UNAVAILABLE, STORE_MESSAGE, 503)


class _Every:
    """At most one log line per ``seconds``: an outage fails every request at once."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.last = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last < self.seconds:
            return False
        self.last = now
        return True


_store_log = _Every(5.0)


class StoreOutageFilter(logging.Filter):
    """A logging filter: during a datastore outage every background loop (hub flushes, viewer
    counts, the flash-sale sweep) fails on each turn; keep one short line per ``seconds``
    for failures the datastore caused instead of a traceback each time."""

    def __init__(self, seconds: float = 5.0) -> None:
        super().__init__()
        self.every = _Every(seconds)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, STORE_ERRORS):
            return True
        if not self.every.due():
            return False
        record.msg = f"{record.getMessage()} (store unavailable: {type(exc).__name__})"
        record.args = None
        record.exc_info = None
        record.exc_text = None
        return True


def log_store_error(exc: BaseException, where: str) -> None:
    if _store_log.due():
        log.warning("store unavailable (%s: %s); answering %s", where,
                    type(exc).__name__, STORE_UNAVAILABLE)

