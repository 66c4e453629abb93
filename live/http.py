"""HTTP helpers shared by every package's routes: JSON, query parameters, session hosts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response

from identity.auth import require
from live.access import check_session_host
from live.errors import bad_request
from live.types import HostedSession, SessionDirectory

if TYPE_CHECKING:
    from identity.types import Claims

S = TypeVar("S", bound=HostedSession)


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


async def read_json(request: Request) -> Any:
    """The request body as JSON, or a ``bad_request`` error."""
    body = await request.body()
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_request("the body must be JSON") from None


async def require_session_host(
    request: Request, what: str, sessions: SessionDirectory[S]
) -> tuple[Claims, S]:
    """A host or admin token and the session of the path; a host must be its own host."""
    claims = require(request, "host", "admin")
    info = await sessions.get(request.path_params["session_id"])
    check_session_host(what, claims.role, claims.sub, info.host)
    return claims, info


def int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{name} must be a whole number") from None
    if not lo <= value <= hi:
        raise bad_request(f"{name} must be between {lo} and {hi}")
    return value
