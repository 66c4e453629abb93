"""HTTP routes of live sessions: a host opens one; anyone lists the live ones."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from identity.auth import require
from live.errors import bad_request
from live.http import json_response, read_json
from live.hub.sessions import Sessions
from live.media.routes import ingest, playback, session_video
from live.types import ProductSource

MAX_TITLE = 200
MAX_LINEUP = 100


def sessions(request: Request) -> Sessions:
    found: Sessions = request.app.state.services.hub.sessions
    return found


def _catalog(request: Request) -> ProductSource:
    found: ProductSource = request.app.state.services.catalog
    return found


def _lineup(body: dict[str, Any]) -> list[str]:
    products = body.get("products", [])
    if not isinstance(products, list) or not all(isinstance(s, str) and s for s in products):
        raise bad_request("products must be a list of skus")
    if len(products) > MAX_LINEUP:
        raise bad_request(f"at most {MAX_LINEUP} products in a session")
    return list(dict.fromkeys(products))


async def create_session(request: Request) -> Response:
    claims = require(request, "host", "admin")
    body = await read_json(request)
    if not isinstance(body, dict):
        raise bad_request('the body must be {"title", "products", "video_url"?}')
    title = body.get("title")
    if not isinstance(title, str) or not title.strip() or len(title) > MAX_TITLE:
        raise bad_request(f"title must be 1 to {MAX_TITLE} characters")
    video = body.get("video_url")
    if video is not None and (
        not isinstance(video, str) or not video.startswith(("https://", "http://"))
        or len(video) > 2000
    ):
        raise bad_request("video_url must be an http(s) URL")
    skus = _lineup(body)
    found = await _catalog(request).get_many(skus)
    missing = [sku for sku, p in zip(skus, found, strict=True) if p is None]
    if missing:
        raise bad_request("unknown products: " + ", ".join(missing[:10]))
    info = await sessions(request).create(title.strip(), skus, video, claims.sub)
    return json_response({"session_id": info.id, **info.public(),
                          "ingest": await ingest(request, info.id),
                          "playback": playback(info.id)}, 201)


async def list_sessions(request: Request) -> Response:
    live = await sessions(request).live()
    return json_response({"sessions": [s.public() for s in live]})


async def get_session(request: Request) -> Response:
    found = sessions(request)
    info = await found.get(request.path_params["session_id"])
    return json_response({**info.public(), "seq": await found.current_seq(info.id),
                          **await session_video(request, info.id)})


ROUTES = [
    Route("/live/sessions", create_session, methods=["POST"]),
    Route("/live/sessions", list_sessions, methods=["GET"]),
    Route("/live/sessions/{session_id}", get_session, methods=["GET"]),
]
