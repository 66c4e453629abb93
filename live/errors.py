"""The live package's error type and the one place every package's errors meet the wire."""

from __future__ import annotations

from typing import Any, Protocol

import orjson
from starlette.requests import Request
from starlette.responses import Response


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


def error_response(code: str, message: str, status: int) -> Response:
    return Response(
        orjson.dumps(error_body(code, message)), status_code=status,
        media_type="application/json",
    )


async def handle_error(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for every package's error type."""
    err: WireError = exc  # type: ignore[assignment]
    return error_response(err.code, err.message, err.status)


def not_found(what: str) -> LiveError:
    return LiveError("not_found", f"{what} not found", 404)


def bad_request(message: str) -> LiveError:
    return LiveError("bad_request", message, 400)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}


async def handle_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own HTTP errors (unknown route, wrong method) in our error shape."""
    status = int(getattr(exc, "status_code", 500))
    detail = str(getattr(exc, "detail", "") or "error")
    return error_response(_HTTP_CODES.get(status, "http_error"), detail, status)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    return error_response("internal", "the server failed to handle this request", 500)
