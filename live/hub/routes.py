"""HTTP routes of live sessions: a host opens one (live now or scheduled) and starts a
scheduled one; a member asks to be reminded; anyone lists them (live, scheduled, replays)."""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from identity.auth import require
from identity.errors import IdentityError
from live.access import check_session_host
from live.errors import LiveError, bad_request
from live.http import json_response, read_json
from live.hub.sessions import Sessions
from live.media.routes import ingest, playback, session_video
from live.protocol.states import SessionState, session_transition
from live.types import ProductSource

log = logging.getLogger("newretail.live")

MAX_TITLE = 200
MAX_TEASER = 500
MAX_LINEUP = 100
# A live may be scheduled up to a year ahead, and "now" may be a little in the past.
MAX_AHEAD = 366 * 86400


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
    starts_at = body.get("starts_at")
    if starts_at is not None and (
        isinstance(starts_at, bool) or not isinstance(starts_at, int | float)
        or not time.time() - 3600 <= starts_at <= time.time() + MAX_AHEAD
    ):
        raise bad_request("starts_at must be a time (seconds since 1970) within a year")
    teaser = body.get("teaser", "")
    if not isinstance(teaser, str) or len(teaser) > MAX_TEASER:
        raise bad_request(f"teaser must be text of at most {MAX_TEASER} characters")
    skus = _lineup(body)
    found = await _catalog(request).get_many(skus)
    missing = [sku for sku, p in zip(skus, found, strict=True) if p is None]
    if missing:
        raise bad_request("unknown products: " + ", ".join(missing[:10]))
    info = await sessions(request).create(
        title.strip(), skus, video, claims.sub,
        float(starts_at) if starts_at is not None else None, teaser.strip())
    return json_response({"session_id": info.id, **info.public(),
                          "ingest": await ingest(request, info.id),
                          "playback": playback(info.id)}, 201)


async def list_sessions(request: Request) -> Response:
    """The live sessions (``sessions``, each with its ``viewers``), and beside them the
    ``scheduled`` ones, soonest first, and the ``replays``, the latest ended first."""
    found = sessions(request)
    live = await found.live()
    return json_response({
        "sessions": [{**s.public(), "viewers": await found.viewer_total(s.id)} for s in live],
        "scheduled": [s.public() for s in await found.scheduled(50)],
        "replays": [s.public() for s in await found.replays(50)],
    })


async def start_session(request: Request) -> Response:
    """The host starts a scheduled session: it goes live, viewers are told, and each
    member who asked to be reminded gets a text."""
    claims = require(request, "host", "admin")
    found = sessions(request)
    info = await found.get(request.path_params["session_id"])
    check_session_host("start", claims.role, claims.sub, info.host)
    session_transition(info.state, SessionState.LIVE)
    info = await found.start(info.id)
    hub = request.app.state.services.hub
    await hub.publish(info.id, {"type": "started"})
    identity = request.app.state.services.identity
    link = f"{_origin(request)}/live/{info.id}"
    for member_id, phone in sorted((await found.take_reminders(info.id)).items()):
        try:
            await identity.send_text(phone, f"{info.title} is live now: {link}")
        except (IdentityError, LiveError) as exc:  # one failed text does not stop the rest
            log.warning("reminder to %s for %s not sent: %s", member_id, info.id, exc)
    return json_response({"session_id": info.id, **info.public()})


def _origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


async def remind_session(request: Request) -> Response:
    """A member asks for a text when a scheduled session starts, on their own phone."""
    claims = require(request, "member")
    body = await read_json(request)
    if not isinstance(body, dict):
        raise bad_request('the body must be {"phone"}')
    found = sessions(request)
    info = await found.get(request.path_params["session_id"])
    if info.state is not SessionState.SCHEDULED:
        raise LiveError("bad_state", f"the session is {info.state.value}; only a scheduled "
                        "one has a reminder", 409)
    identity = request.app.state.services.identity
    phone = identity.phone(body.get("phone"))
    if await identity.members.resolve("phone", phone) != claims.sub:
        raise LiveError("forbidden", "that phone number is not linked to your membership",
                        403)
    await found.remind(info.id, claims.sub, phone)
    return json_response({"session_id": info.id, "reminded": True}, 201)


async def get_session(request: Request) -> Response:
    found = sessions(request)
    info = await found.get(request.path_params["session_id"])
    return json_response({**info.public(), "seq": await found.current_seq(info.id),
                          **await session_video(request, info.id)})


ROUTES = [
    Route("/live/sessions", create_session, methods=["POST"]),
    Route("/live/sessions", list_sessions, methods=["GET"]),
    Route("/live/sessions/{session_id}", get_session, methods=["GET"]),
    Route("/live/sessions/{session_id}/start", start_session, methods=["POST"]),
    Route("/live/sessions/{session_id}/remind", remind_session, methods=["POST"]),
]
