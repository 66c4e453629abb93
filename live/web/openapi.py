"""The OpenAPI 3.1 description of every HTTP route, served at ``/openapi.json``.

Each operation is written out here by hand (summary, roles, parameters, request body and
responses with their schemas) and the document is built against the app's route table:
a route the table serves but this module does not describe, or the other way round, is a
test failure (``undescribed``), so the two cannot drift apart silently. The roles of each
operation are also given as ``x-roles`` (``[]`` for public), the server's own checks being
the authority.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

JSON = "application/json"
Schema = dict[str, Any]

ROLES = ("viewer", "member", "host", "screen", "admin")
EVERY_ROLE = ROLES
STAFF = ("host", "admin")

# Path parameters take the shapes the server accepts, so generated requests are
# meaningful; anything else still gets a clear 4xx.
ID_PATTERN = "^[A-Za-z0-9_.:-]{1,64}$"


def obj(required: Iterable[str] = (), **props: Schema) -> Schema:
    """An object schema with the given properties (others are allowed: the wire grows)."""
    schema: Schema = {"type": "object", "properties": props}
    req = list(required)
    if req:
        schema["required"] = req
    return schema


def arr(items: Schema, **extra: Any) -> Schema:
    return {"type": "array", "items": items, **extra}


STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
ANY: Schema = {}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


SCHEMAS: dict[str, Schema] = {
    "Error": obj(["error"], error=obj(["code", "message"], code=STR, message=STR)),
    "Product": obj(["sku", "title", "category", "price", "image", "stock"], sku=STR,
                   title=STR, category=STR, price=ref("Money"), image=STR, stock=INT),
    "StockByLocation": {"type": "object", "additionalProperties": INT},
    "Member": obj(["member_id", "name", "tier", "home_store", "spend", "created_at", "consent"],
                  member_id=STR, name=STR, tier={"enum": ["member", "silver", "gold"]},
                  home_store=nullable(STR), spend=NUM, created_at=NUM,
                  consent={"type": "object"}),
    "Erasure": obj(["erasure_id", "at", "by_role", "subject", "user_ids", "identifiers",
                    "devices", "hooks"], erasure_id=STR, at=NUM, by_role=STR, subject=STR,
                   user_ids=INT, identifiers=INT, devices=INT, hooks=INT),
    "SignIn": obj(["member_id", "token", "expires_in", "refresh_token", "device_id",
                   "device_index", "device_secret", "created", "stitched"],
                  member_id=STR, token=STR, expires_in=INT, refresh_token=STR, device_id=STR,
                  device_index=STR, device_secret=STR, created=BOOL, stitched=BOOL),
    "Session": obj(["session_id", "title", "products", "video_url", "host", "status",
                    "created_at"], session_id=STR, title=STR, products=arr(STR),
                   video_url=nullable(STR), host=nullable(STR),
                   status={"enum": ["scheduled", "live", "ended"]}, created_at=NUM,
                   starts_at=nullable(NUM), teaser=STR, started_at=nullable(NUM),
                   ended_at=nullable(NUM), share_url=STR, viewers=INT),
    # Video (live/media): where hosts stream to, where players read, the stream's state.
    "Ingest": obj(["url", "key"], url=STR, key=STR),
    "Playback": obj(["hls"], hls=STR),
    "Stream": obj(["state"], state={"enum": ["offline", "live"]}, bitrate=INT),
    "CartView": obj(["lines", "count", "total"], count=INT, total=ref("Money"), lines=arr(obj(
        ["sku", "title", "qty", "list_price", "discount", "price", "line_total", "reason"],
        sku=STR, title=STR, qty=INT, list_price=ref("Money"), discount=ref("Money"),
        price=ref("Money"), line_total=ref("Money"),
        reason={"enum": ["list", "tier", "flash_sale"]}, flash_sale=nullable(STR),
        repriced=nullable({"enum": ["sale_ended"]}), note=nullable(STR)))),
    "Cart": obj(["user_id", "cart"], user_id=STR, cart=ref("CartView")),
    "Order": obj(["id", "member_id", "lines", "total", "status", "created_at"],
                 id=STR, member_id=STR, total=ref("Money"), status=STR, created_at=NUM,
                 session_id=nullable(STR), lines=arr(obj(
                     ["sku", "qty", "list_price", "discount", "price", "location"], sku=STR,
                     qty=INT, list_price=ref("Money"), discount=ref("Money"),
                     price=ref("Money"), location=STR))),
    "FlashSale": obj(["type", "id", "sku", "price", "qty_total", "qty_left", "limit",
                      "ends_at"], type=STR, id=STR, sku=STR, price=ref("Money"), qty_total=INT,
                     qty_left=INT, limit=nullable(INT), ends_at=NUM),
    "Money": obj(["amount", "currency"], amount=INT,
                  currency={"type": "string", "pattern": "^[A-Z]{3}$"}),
    "PaymentState": obj(["provider", "status", "payment_id"], provider=STR, payment_id=STR,
                        url=STR, status={"enum": ["requires_action", "processing", "succeeded",
                                                  "failed", "canceled", "refunded"]}),
    "Figures": obj(["carts", "orders", "revenue", "stock"], carts=INT, orders=INT,
                   revenue=ref("Money"), stock={"type": "object"}, orders_recent=INT,
                   orders_window=INT),
}

# Request bodies ---------------------------------------------------------------------------

CONSENT = obj(personalization=BOOL, marketing=BOOL)
BODIES: dict[str, Schema] = {
    "phone": obj(["phone"], phone=STR),
    "verify": obj(["phone", "code", "device_id"], phone=STR, code=STR, device_id=STR,
                  anon_id=STR),
    "refresh": obj(["refresh_token"], refresh_token=STR),
    "patch_me": {**obj(name=STR, consent=CONSENT), "additionalProperties": False},
    "identifier": obj(["kind", "value"], value=STR, kind={
        "enum": ["phone", "device", "payment", "loyalty_card", "web"]}),
    "checkin": obj(["code"], code=STR),
    "stock": obj(["location", "qty"], location=STR, qty={"type": "integer", "minimum": 0}),
    "events": arr(obj(["sku", "kind"], member_id=STR, anon_id=STR, sku=STR,
                      kind={"enum": ["view", "click", "cart", "purchase"]}, ts=NUM,
                      session_id=STR, store_id=STR), minItems=1, maxItems=1000),
    "session": obj(["title"], title=STR, products=arr(STR), video_url=STR,
                   starts_at=NUM, teaser=STR),
    "remind": obj(["phone"], phone=STR),
    "cart_add": obj(["sku"], sku=STR, qty={"type": "integer", "minimum": 1},
                    session_id=STR),
    "checkout": obj(["idempotency_key"], idempotency_key=STR, session_id=STR),
    "pay_decision": obj(["decision"], decision={"enum": ["approve", "decline"]}),
    "flash": obj(["sku", "price", "qty", "seconds"], sku=STR, price=ref("Money"), qty=INT,
                 seconds=INT, limit=INT),
}


@dataclass(frozen=True)
class Op:
    """One described operation.

    Attributes:
        roles: who may call it; ``()`` for a public operation.
        ok: success status -> (media type, schema).
        errors: the 4xx/5xx statuses it answers with the error body.
        query: query parameter name -> schema.
        security_optional: public, but a token that is sent must verify.
    """

    method: str
    path: str
    summary: str
    roles: tuple[str, ...]
    ok: dict[int, tuple[str, Schema | None]]
    body: str | None = None
    errors: tuple[int, ...] = ()
    query: dict[str, Schema] = field(default_factory=dict)
    security_optional: bool = False
    tag: str = "api"


def _page(path: str, summary: str) -> Op:
    return Op("GET", path, summary, (), {200: ("text/html", None)}, errors=(404,), tag="pages")


def _session_page(path: str, summary: str) -> Op:
    """A page of one live: an unknown live is the 404 page (HTML, not JSON)."""
    return Op("GET", path, summary, (), {200: ("text/html", None), 404: ("text/html", None)},
              tag="pages")


SESSION = "/live/sessions/{session_id}"
ME = "/identity/me"
OPS: tuple[Op, ...] = (
    # operations
    Op("GET", "/healthz", "Liveness", (), {200: (JSON, obj(["status"], status=STR))},
       tag="ops"),
    Op("GET", "/readyz", "Readiness: the datastore answers (and which model serves)", (),
       {200: (JSON, obj(["ready", "checks"], ready=BOOL, checks={"type": "object"}))},
       errors=(503,), tag="ops"),
    Op("GET", "/metrics", "Prometheus metrics", (), {200: ("text/plain", None)}, tag="ops"),
    # catalog
    Op("GET", "/catalog/products", "Search the catalog", (),
       {200: (JSON, obj(["products"], products=arr(ref("Product"))))}, errors=(400,),
       query={"q": {"type": "string", "maxLength": 200},
              "limit": {"type": "integer", "minimum": 1, "maximum": 200}}),
    Op("GET", "/catalog/products/{sku}", "A product with its stock per location", (),
       {200: (JSON, {"allOf": [ref("Product"), obj(
           ["stock_by_location"], stock_by_location=ref("StockByLocation"))]})},
       errors=(404,)),
    Op("GET", "/catalog/images/{sku}.svg", "A product's generated picture", (),
       {200: ("image/svg+xml", None)}, errors=(404,)),
    Op("PUT", "/catalog/stock/{sku}", "Set the units of a product at a location", ("admin",),
       {200: (JSON, obj(["sku", "stock"], sku=STR, stock=ref("StockByLocation")))},
       body="stock", errors=(400, 404)),
    # identity
    Op("POST", "/identity/anonymous", "An anonymous viewer id and its viewer token", (),
       {201: (JSON, obj(["anon_id", "token"], anon_id=STR, token=STR))},
       security_optional=True),
    Op("POST", "/identity/otp/request", "Send a sign-in code to a phone", (),
       {202: (JSON, obj(["status", "expires_in"], status=STR, expires_in=INT))},
       body="phone", errors=(400, 429, 503)),
    Op("POST", "/identity/otp/verify", "Sign in with the code; stitches an anonymous id", (),
       {200: (JSON, ref("SignIn"))}, body="verify", errors=(400, 401, 409, 429)),
    Op("POST", "/identity/token/refresh", "Rotate a refresh token", (),
       {200: (JSON, obj(["token", "expires_in", "refresh_token"], token=STR,
                        expires_in=INT, refresh_token=STR))},
       body="refresh", errors=(400, 401)),
    Op("GET", "/identity/dev/outbox", "Codes sent in dev and demo mode", ("admin",),
       {200: (JSON, obj(["messages"], messages=arr({"type": "object"})))}, errors=(404,)),
    Op("GET", ME, "The signed-in member", ("member",), {200: (JSON, ref("Member"))},
       errors=(404,)),
    Op("PATCH", ME, "Change name and consent", ("member",), {200: (JSON, ref("Member"))},
       body="patch_me", errors=(400, 404)),
    Op("DELETE", ME, "Erase the signed-in member everywhere", ("member",),
       {200: (JSON, ref("Erasure"))}, errors=(404, 503)),
    Op("DELETE", "/identity/members/{id}", "Erase a member everywhere", ("admin",),
       {200: (JSON, ref("Erasure"))}, errors=(404, 503)),
    Op("POST", "/identity/members/{id}/identifiers", "Link an identifier",
       ("member", "admin"),
       {200: (JSON, obj(["member_id", "kind", "linked"], member_id=STR, kind=STR,
                        linked=BOOL)),
        201: (JSON, obj(["member_id", "kind", "linked"], member_id=STR, kind=STR,
                        linked=BOOL))},
       body="identifier", errors=(400, 404, 409)),
    Op("GET", "/identity/resolve", "The member an identifier belongs to", ("admin",),
       {200: (JSON, obj(["kind", "member_id"], kind=nullable(STR),
                        member_id=nullable(STR)))},
       errors=(400,), query={
           "kind": {"enum": ["phone", "device", "payment", "loyalty_card", "web"]},
           "value": {"type": "string", "maxLength": 200}}),
    Op("POST", "/identity/linklog/{entry}/undo", "Undo a link or unlink", ("admin",),
       {200: (JSON, obj(["undone", "action", "kind"], undone=STR, action=STR, kind=STR))},
       errors=(400, 404, 409)),
    Op("GET", "/identity/member-code", "The device's current member code", ("member",),
       {200: (JSON, obj(["code", "expires_at"], code=STR, expires_at=NUM))},
       errors=(400, 404)),
    Op("GET", "/identity/member-code.svg", "The member code as a QR code", ("member",),
       {200: ("image/svg+xml", None)}, errors=(400, 404)),
    Op("GET", "/identity/devices", "The member's signed-in devices", ("member",),
       {200: (JSON, obj(["devices"], devices=arr(obj(
           ["device_index", "device_id", "created_at"], device_index=STR, device_id=STR,
           created_at=NUM))))}),
    Op("DELETE", "/identity/devices/{index}", "Sign a device out", ("member", "admin"),
       {204: ("", None)}, errors=(404,)),
    Op("POST", "/identity/checkin", "Check a member in at a store screen", ("screen",),
       {200: (JSON, obj(["member_id", "greeting", "tier"], member_id=STR, greeting=STR,
                        tier=STR))},
       body="checkin", errors=(400, 401)),
    # offers and events
    Op("GET", "/offers", "Personalized offers", ("member", "host", "screen", "admin"),
       {200: (JSON, obj(["member_id", "personalized", "model_version", "offers", "took_ms"],
                        member_id=nullable(STR), personalized=BOOL,
                        model_version=nullable(STR), took_ms=NUM, offers=arr(obj(
                            ["sku", "title", "price", "offer_price", "reason", "score"],
                            sku=STR, title=STR, price=ref("Money"),
                            offer_price=ref("Money"),
                            reason={"enum": ["buy_again", "for_you", "trending",
                                             "in_this_live"]}, score=NUM))))},
       errors=(400,), query={
           "member_id": {"type": "string", "maxLength": 64},
           "n": {"type": "integer", "minimum": 1, "maximum": 50},
           "store_id": {"type": "string", "maxLength": 64},
           "session_id": {"type": "string", "maxLength": 64},
           "slate": {"type": "string", "enum": ["all", "discover"]}}),
    Op("POST", "/events", "Record viewer events", EVERY_ROLE,
       {202: (JSON, obj(["recorded", "refused"], recorded=INT, refused=INT))},
       body="events", errors=(400,)),
    Op("GET", SESSION + "/suggestions",
       "What this audience wants next (its own host, or an admin)", STAFF,
       {200: (JSON, obj(["session_id", "suggestions"], session_id=STR, suggestions=arr(
           obj(["sku", "title", "score"], sku=STR, title=STR, score=NUM))))},
       errors=(400, 404), query={"n": {"type": "integer", "minimum": 1, "maximum": 50}}),
    # live sessions
    Op("POST", "/live/sessions", "Open a live session, or schedule one (starts_at, teaser)",
       STAFF,
       {201: (JSON, {"allOf": [ref("Session"), obj(
           ["ingest", "playback"], ingest=ref("Ingest"), playback=ref("Playback"))]})},
       body="session", errors=(400,)),
    Op("GET", "/live/sessions",
       "The live sessions (with viewers), the scheduled ones and the replays", (),
       {200: (JSON, obj(["sessions", "scheduled", "replays"], sessions=arr(ref("Session")),
                        scheduled=arr(ref("Session")), replays=arr(ref("Session"))))}),
    Op("POST", SESSION + "/start",
       "Start a scheduled session (its own host, or an admin); reminded members get a text",
       STAFF, {200: (JSON, ref("Session"))}, errors=(404, 409)),
    Op("POST", SESSION + "/remind",
       "Text me when this scheduled session starts (a member, on their own phone)",
       ("member",), {201: (JSON, obj(["session_id", "reminded"], session_id=STR,
                                    reminded=BOOL))},
       body="remind", errors=(400, 404, 409)),
    Op("GET", SESSION, "A session with its last seq", (),
       {200: (JSON, {"allOf": [ref("Session"), obj(
           ["seq", "playback", "stream"], seq=INT, playback=ref("Playback"),
           stream=ref("Stream"))]})}, errors=(404,)),
    Op("GET", SESSION + "/ingest",
       "The RTMP ingest URL and stream key (the session's own host, or an admin)", STAFF,
       {200: (JSON, obj(["ingest", "playback", "stream"], ingest=ref("Ingest"),
                        playback=ref("Playback"), stream=ref("Stream")))}, errors=(404,)),
    Op("GET", "/media/{session_id}/{name}", "A session's HLS playlist or segment", (),
       {200: ("application/vnd.apple.mpegurl", None)}, errors=(404,), tag="media"),
    # carts, checkout, orders, flash sales
    Op("GET", "/carts/{user_id}", "A cart (your own; an admin: anyone's)", EVERY_ROLE,
       {200: (JSON, ref("Cart"))}),
    Op("POST", "/carts/{user_id}/items", "Add units to your cart", ("viewer", "member"),
       {200: (JSON, ref("Cart"))}, body="cart_add", errors=(400, 404, 409)),
    Op("DELETE", "/carts/{user_id}/items/{sku}", "Remove a product from your cart",
       ("viewer", "member"), {200: (JSON, ref("Cart"))}, errors=(400, 404)),
    Op("POST", "/carts/{user_id}/checkout", "Buy the whole cart, once per key", ("member",),
       {200: (JSON, obj(["order", "replayed"], order=ref("Order"), replayed=BOOL)),
        201: (JSON, obj(["order", "replayed"], order=ref("Order"), replayed=BOOL))},
       body="checkout", errors=(400, 404, 409)),
    Op("GET", "/orders", "Your orders (an admin: everyone's)", ("member", "admin"),
       {200: (JSON, obj(["orders"], orders=arr(ref("Order"))))}, errors=(400,),
       query={"limit": {"type": "integer", "minimum": 1, "maximum": 500}}),
    Op("GET", "/orders/{order_id}", "One order", ("member", "admin"),
       {200: (JSON, ref("Order"))}, errors=(404,)),
    Op("GET", SESSION + "/flash-sale", "The session's running flash sale", (),
       {200: (JSON, obj(["flash_sale"], flash_sale=nullable(ref("FlashSale"))))}),
    Op("POST", SESSION + "/flash-sale",
       "Start a flash sale (the session's own host, or an admin)", STAFF,
       {201: (JSON, ref("FlashSale"))}, body="flash", errors=(400, 404, 409)),
    Op("DELETE", SESSION + "/flash-sale",
       "Stop the flash sale (the session's own host, or an admin)", STAFF,
       {200: (JSON, obj(["stopped"], stopped=BOOL))}, errors=(404, 409)),
    Op("GET", SESSION + "/figures",
       "Carts, orders, revenue and stock of a session (its own host, or an admin)", STAFF,
       {200: (JSON, ref("Figures"))}, errors=(404,)),
    # payments
    Op("POST", "/payments/webhook/{provider}",
       "A payment provider's event, signed by it (fake: fake-signature; stripe: "
       "stripe-signature); deduplicated by event id", (),
       {200: (JSON, obj(["received", "outcome"], received=BOOL,
                        outcome={"enum": ["handled", "duplicate", "ignored"]}))},
       errors=(400, 404, 503), tag="payments"),
    Op("GET", "/pay/fake/{payment_id}", "The fake provider's payer page (dev and demo)", (),
       {200: ("text/html", None)}, errors=(404,), tag="payments"),
    Op("POST", "/pay/fake/{payment_id}", "The payer's decision on the fake provider's page "
       "(dev and demo); the outcome follows as the provider's webhook", (),
       {200: (JSON, obj(["payment"], payment=ref("PaymentState")))}, body="pay_decision",
       errors=(400, 404), tag="payments"),
    # pages
    _page("/", "The home of lives: live now, scheduled, replays"),
    _session_page("/live/{session_id}", "The viewer page (an unknown live: the 404 page)"),
    _session_page("/host/{session_id}", "The presenter console (an unknown live: 404)"),
    _page("/screen/{screen_id}", "The in-store screen"),
    _page("/me", "The member phone page"),
    Op("GET", "/favicon.ico", "The site icon (SVG)", (), {200: ("image/svg+xml", None)},
       tag="pages"),
)

# The description itself is public.
SELF = Op("GET", "/openapi.json", "This description", (),
          {200: (JSON, {"type": "object"})}, tag="ops")
DESCRIBED: tuple[Op, ...] = (*OPS, SELF)


def _path_params(path: str) -> list[str]:
    return [part[:part.index("}")] for part in path.split("{")[1:] if "}" in part]


def _param_schema(op: Op, name: str) -> Schema:
    if op.path.startswith("/live/{") and name == "session_id":
        # ``/live/sessions`` is the API's list, not a page.
        return {"type": "string", "pattern": "^(?!sessions$)[A-Za-z0-9_-]{1,64}$"}
    return {"type": "string", "pattern": ID_PATTERN}


def _error(status: int) -> dict[str, Any]:
    return {"description": f"refused ({status})",
            "content": {JSON: {"schema": ref("Error")}}}


def _operation(op: Op) -> dict[str, Any]:
    out: dict[str, Any] = {
        "summary": op.summary, "operationId": f"{op.method.lower()} {op.path}",
        "tags": [op.tag], "x-roles": list(op.roles),
    }
    params: list[dict[str, Any]] = [
        {"name": n, "in": "path", "required": True, "schema": _param_schema(op, n)}
        for n in _path_params(op.path)
    ]
    params += [{"name": n, "in": "query", "required": False, "schema": s}
               for n, s in op.query.items()]
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {"required": True,
                              "content": {JSON: {"schema": BODIES[op.body]}}}
    responses: dict[str, Any] = {}
    for status, (media, schema) in op.ok.items():
        resp: dict[str, Any] = {"description": "done"}
        if media:
            resp["content"] = {media: {"schema": schema} if schema is not None else {}}
        responses[str(status)] = resp
    errors = set(op.errors)
    if op.roles or op.security_optional:
        errors |= {401}
    if op.roles:
        errors |= {403}
    if op.body is not None:
        errors |= {400}
    for status in sorted(errors):
        responses[str(status)] = _error(status)
    out["responses"] = responses
    if op.roles:
        out["security"] = [{"bearer": []}]
    elif op.security_optional:
        out["security"] = [{}, {"bearer": []}]
    else:
        out["security"] = []
    return out


def openapi_document(ops: Iterable[Op] = DESCRIBED) -> dict[str, Any]:
    """The OpenAPI document of ``ops``."""
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "newretail", "version": "1",
                 "description": "Live commerce, one identity, personalized offers. Every "
                                "error is {\"error\": {\"code\", \"message\"}}. The "
                                "WebSocket endpoints /ws/live/{session_id} and "
                                "/ws/screen/{screen_id} are described in SPEC.md."},
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"}},
        },
    }


def served(routes: Iterable[BaseRoute]) -> set[tuple[str, str]]:
    """``(method, path)`` of every HTTP route (HEAD goes with GET; mounts are files)."""
    out = set()
    for route in routes:
        if isinstance(route, Route):
            for method in route.methods or ():
                if method != "HEAD":
                    out.add((method, route.path))
    return out


def undescribed(routes: Iterable[BaseRoute]) -> tuple[set[tuple[str, str]],
                                                       set[tuple[str, str]]]:
    """Routes served but not described, and operations described but not served."""
    have = served(routes)
    described = {(op.method, op.path) for op in DESCRIBED}
    return have - described, described - have


@functools.cache
def _document_bytes() -> bytes:
    return orjson.dumps(openapi_document())


async def openapi_json(request: Request) -> Response:
    return Response(_document_bytes(), media_type=JSON)


ROUTE = Route("/openapi.json", openapi_json, methods=["GET"])
