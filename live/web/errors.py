"""Where every package's errors meet the wire: the app's exception handlers."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from live.errors import (
    _HTTP_CODES,
    STORE_MESSAGE,
    STORE_UNAVAILABLE,
    WireError,
    error_body,
    log_store_error,
)


def error_response(code: str, message: str, status: int) -> Response:
    return Response(
        orjson.dumps(error_body(code, message)), status_code=status,
        media_type="application/json",
    )


async def handle_error(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for every package's error type."""
    err: WireError = exc  # type: ignore[assignment]
    return error_response(err.code, err.message, err.status)


async def handle_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own HTTP errors (unknown route, wrong method) in our error shape."""
    status = int(getattr(exc, "status_code", 500))
    detail = str(getattr(exc, "detail", "") or "error")
    return error_response(_HTTP_CODES.get(status, "http_error"), detail, status)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    return error_response("internal", "the server failed to handle this request", 500)


async def handle_store_error(request: Request, exc: Exception) -> Response:
    """Starlette exception handler: a datastore outage is a 503 with a retry hint, not a 500."""
    log_store_error(exc, request.url.path)
    resp = error_response(STORE_UNAVAILABLE, STORE_MESSAGE, 503)
    resp.headers["retry-after"] = "1"
    return resp
