"""HTTP routes of offers, events and a session's audience suggestions: a thin layer
over ``OfferService``."""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from identity.auth import require
from live.errors import LiveError, bad_request
from live.http import int_param, json_response, read_json, require_session_host
from live.hub.routes import sessions as _hub_sessions
from live.offers.service import MAX_EVENTS, SLATES, OfferService
from recommender.types import EVENT_KINDS, Event


def _service(request: Request) -> OfferService:
    svc: OfferService = request.app.state.services.offers
    return svc


async def get_offers(request: Request) -> Response:
    started = time.perf_counter()
    # Viewers (not signed in) get offers for nobody in particular: trending and the
    # session's lineup, never anyone's history.
    claims = require(request, "viewer", "member", "host", "screen", "admin")
    member_id = request.query_params.get("member_id") or (
        claims.sub if claims.role == "member" else None)
    if claims.role == "member" and member_id != claims.sub:
        raise LiveError("forbidden", "members see their own offers only", 403)
    if claims.role == "viewer" and member_id is not None:
        raise LiveError("forbidden", "sign in to see offers picked for you", 403)
    slate = request.query_params.get("slate") or "all"
    if slate not in SLATES:
        raise bad_request(f"slate must be one of {', '.join(SLATES)}")
    body = await _service(request).offers(
        member_id, int_param(request, "n", 10, 1, 50), request.query_params.get("store_id") or None,
        request.query_params.get("session_id") or None, slate)
    took = (time.perf_counter() - started) * 1000
    return Response(orjson.dumps(body), media_type="application/json",
                    headers={"server-timing": f"app;dur={took:.3f}"})


def parse_events(body: Any, now: float) -> list[Event]:
    """Validate a ``POST /events`` body into events (every one valid, or an error)."""
    if not isinstance(body, list) or not 1 <= len(body) <= MAX_EVENTS:
        raise bad_request(f"the body must be a list of 1 to {MAX_EVENTS} events")
    events = []
    for pos, item in enumerate(body):
        if not isinstance(item, dict):
            raise bad_request(f"event {pos} must be an object")
        users = [item[k] for k in ("member_id", "anon_id") if k in item]
        if len(users) != 1 or not isinstance(users[0], str) or not users[0]:
            raise bad_request(f"event {pos} needs exactly one of member_id, anon_id")
        sku, kind, ts = item.get("sku"), item.get("kind"), item.get("ts", now)
        if not isinstance(sku, str) or not sku or len(sku) > 64:
            raise bad_request(f"event {pos}: sku must be a string")
        if kind not in EVENT_KINDS or kind == "checkin":
            raise bad_request(f"event {pos}: kind must be view, click, cart or purchase")
        if isinstance(ts, bool) or not isinstance(ts, int | float) or not 0 < ts <= now + 300:
            raise bad_request(f"event {pos}: ts must be a past unix time in seconds")
        extra = {k: item.get(k) for k in ("session_id", "store_id")}
        if any(v is not None and not isinstance(v, str) for v in extra.values()):
            raise bad_request(f"event {pos}: session_id and store_id must be strings")
        events.append(Event(users[0], sku, kind, float(ts), extra["session_id"],
                            extra["store_id"]))
    return events


async def post_events(request: Request) -> Response:
    claims = require(request, "viewer", "member", "host", "screen", "admin")
    body = await read_json(request)
    events = parse_events(body, time.time())
    if claims.role in ("viewer", "member") and any(e.user != claims.sub for e in events):
        raise LiveError("forbidden", "you may record your own events only", 403)
    recorded = await _service(request).recommender.record(events)
    return json_response({"recorded": recorded, "refused": len(events) - recorded}, 202)


async def suggestions(request: Request) -> Response:
    """``GET /live/sessions/{id}/suggestions``: what the viewers now in the session want
    most, pinned products left out."""
    _, info = await require_session_host(request, "suggestions", _hub_sessions(request))
    sid = info.id
    n = int_param(request, "n", 5, 1, 50)
    hub = request.app.state.services.hub
    who = await hub.viewers(sid)
    exclude = set(await hub.pinned_skus(sid))
    body = await _service(request).suggestions(sid, who, exclude, n)
    return json_response({"session_id": sid, "suggestions": body})


ROUTES = [
    Route("/offers", get_offers),
    Route("/events", post_events, methods=["POST"]),
    Route("/live/sessions/{session_id}/suggestions", suggestions),
]
