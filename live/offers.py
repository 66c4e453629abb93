"""Offers: the recommender's candidates composed with the catalog's stock and the member's
consent and tier, and the routes ``GET /offers``, ``POST /events`` and host suggestions."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from identity.auth import require
from identity.members import Members
from live.catalog import Catalog
from live.errors import LiveError, bad_request
from live.keys import text
from live.routes import int_param, json_response, read_json
from recommender.rank import Candidate, Offer, ProductInfo, compose_offers
from recommender.service import Recommender
from recommender.types import EVENT_KINDS, Event

SkuList = Callable[[str], Awaitable[list[str]]]
OVERFETCH = 4
PRODUCT_TTL = 30.0
PRODUCT_CACHE_MAX = 200_000
MAX_EVENTS = 500


class OfferService:
    """Offers for a member at a place, and suggestions for a host."""

    def __init__(self, recommender: Recommender, catalog: Catalog, members: Members,
                 session_products: SkuList, product_ttl: float = PRODUCT_TTL) -> None:
        self.recommender = recommender
        self.catalog = catalog
        self.members = members
        self.session_products = session_products
        self.product_ttl = product_ttl
        # titles, categories and prices change rarely; stock is always read fresh
        self._product_cache: dict[str, tuple[float, ProductInfo | None]] = {}

    async def _in_stock(self, skus: list[str], store_id: str | None) -> set[str]:
        pipe = self.catalog.redis.pipeline(transaction=False)
        for sku in skus:
            if store_id:
                pipe.hget(f"nr:stock:{sku}", store_id)
            else:
                pipe.hvals(f"nr:stock:{sku}")
        out = set()
        for sku, raw in zip(skus, await pipe.execute(), strict=True):
            units = (int(raw) if raw else 0) if store_id else sum(int(v) for v in raw)
            if units > 0:
                out.add(sku)
        return out

    async def _catalog_head(self, k: int) -> list[Candidate]:
        first: Any = await self.catalog.redis.zrange("nr:catalog", 0, k)
        return [Candidate(text(s), 0.0, "trending") for s in first]

    async def _products(self, skus: list[str]) -> dict[str, ProductInfo]:
        now = time.monotonic()
        cache = self._product_cache
        missing = [s for s in skus if s not in cache or cache[s][0] < now]
        if missing:
            if len(cache) > PRODUCT_CACHE_MAX:
                cache.clear()
            for sku, p in zip(missing, await self.catalog.get_many(missing), strict=True):
                info = ProductInfo(p.title, p.category, p.price) if p else None
                cache[sku] = (now + self.product_ttl, info)
        out = {}
        for sku in skus:
            info = cache[sku][1]
            if info is not None:
                out[sku] = info
        return out

    async def offers(self, member_id: str | None, n: int, store_id: str | None,
                     session_id: str | None) -> dict[str, Any]:
        """The spec's ``/offers`` body: in stock at ``store_id`` (anywhere when none),
        personal only with the member's ``personalization`` consent."""
        started = time.perf_counter()
        tier, personalized = "member", False
        if member_id is not None:
            member = await self.members.get(member_id)
            tier, personalized = member.tier, member.consents_to("personalization")
        user = member_id if personalized else None
        candidates: list[Candidate] = []
        if session_id:
            live = await self.session_products(session_id)
            candidates += (await self.recommender.rank_within(user, live))[: max(1, n // 3)]
        out_of_stock: set[str] = set()
        want = n * OVERFETCH
        offers: list[Offer] = []
        for _attempt in range(3):
            pool = list(candidates)
            if user is not None:
                pool += await self.recommender.personal(user, want, out_of_stock)
            short = max(n, want - len(pool))  # trending fills what personal left short
            pool += await self.recommender.trending(short + len(out_of_stock))
            if len(pool) < want + len(out_of_stock):  # a new shop: nothing trends yet
                pool += await self._catalog_head(want + len(out_of_stock))
            skus = list(dict.fromkeys(c.sku for c in pool))
            in_stock: set[str] = set()
            for start in range(0, len(skus), 2 * n):  # stock of the best first, fresh
                chunk = skus[start:start + 2 * n]
                in_stock |= await self._in_stock(chunk, store_id)
                out_of_stock |= set(chunk) - in_stock
                offers = compose_offers(pool, await self._products(sorted(in_stock)),
                                        in_stock, n, tier)
                if len(offers) >= n:
                    break
            if len(offers) >= n:
                break
            want *= 2
        return {
            "member_id": member_id, "personalized": personalized,
            "model_version": self.recommender.model_version, "offers": offers,
            "took_ms": round((time.perf_counter() - started) * 1000, 3),
        }

    async def suggestions(self, session_id: str, viewer_ids: list[str], exclude: set[str],
                          n: int) -> list[dict[str, Any]]:
        """What the viewers now in the session want most, pinned products left out."""
        wants = await self.recommender.audience_wants(viewer_ids, exclude, n * OVERFETCH)
        if len(wants) < n:
            wants += [c for c in await self._catalog_head(n * OVERFETCH + len(exclude))
                      if c.sku not in exclude]
        skus = [c.sku for c in wants]
        products = await self._products(skus)
        in_stock = await self._in_stock(skus, None)
        out: dict[str, dict[str, Any]] = {}
        for c in wants:
            if c.sku in products and c.sku in in_stock and c.sku not in out:
                out[c.sku] = {"sku": c.sku, "title": products[c.sku].title,
                              "score": round(c.score, 4)}
        return list(out.values())[:n]


# routes ---------------------------------------------------------------------------------

def _service(request: Request) -> OfferService:
    svc: OfferService = request.app.state.services.offers
    return svc


async def get_offers(request: Request) -> Response:
    claims = require(request, "member", "host", "screen", "admin")
    member_id = request.query_params.get("member_id") or (
        claims.sub if claims.role == "member" else None)
    if claims.role == "member" and member_id != claims.sub:
        raise LiveError("forbidden", "members see their own offers only", 403)
    body = await _service(request).offers(
        member_id, int_param(request, "n", 10, 1, 50), request.query_params.get("store_id") or None,
        request.query_params.get("session_id") or None)
    return json_response(body)


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
    require(request, "host", "admin")
    sid = request.path_params["session_id"]
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
