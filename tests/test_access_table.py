"""Who may do what: every HTTP route and every WebSocket op against every role, no token,
an expired token, a token signed with a retired key and another member's token, on a real
server with real clients. The tables below are the contract (from SPEC.md and the code);
each caller outside a row's roles is refused, each caller inside gets through."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis as redis_sync
import redis.asyncio as aredis
from starlette.routing import Route

from identity.members import Members
from live.commerce.catalog import Catalog
from live.commerce.service import Commerce
from live.hub.hub import Hub
from live.hub.session_ops import SessionOps
from live.web.app import create_app
from live.web.commerce_ops import register_commerce_ops
from live.web.openapi import DESCRIBED, served
from live.web.settings import Settings
from recommender.events import EventLog
from tests.access_support import (
    ROLES,
    SERVER_ENV,
    Actors,
    auth,
    expired,
    make_actors,
    retired,
    seed_world,
)
from tests.hub_support import Client
from tests.utils import ServerProcess, run_server

PUBLIC = frozenset({"*"})
EVERYONE = frozenset(ROLES)
STAFF = frozenset({"host", "admin"})
BAD_TOKENS = ("none", "expired", "retired")


@dataclass
class Ctx:
    """What the rows need to name: the caller, their id, ids made along the way."""

    actors: Actors
    caller: str  # a role, "other" (member B on member A's things) or a bad token
    sub: str  # the caller's own id (member A's for "other" and bad tokens)
    n: int  # a number unique to this call

    @property
    def sid(self) -> str:
        return self.actors.session_id


Text = Callable[[Ctx], str]
Body = Callable[[Ctx], Any]


@dataclass(frozen=True)
class Row:
    """One HTTP operation: who may call it, and whether a member's token on another
    member's thing must be refused (``own``)."""

    method: str
    route: str  # the route template, as in the route table
    roles: frozenset[str]
    path: Text | None = None  # the concrete path; default: the template with ctx ids
    body: Body | None = None
    own: bool = False  # acts on the caller's own things: another member is refused
    bad_token_refused: bool = False  # public, but a token that is sent must verify


def _fill(row: Row, ctx: Ctx) -> str:
    if row.path is not None:
        return row.path(ctx)
    return (row.route.replace("{session_id}", ctx.sid).replace("{user_id}", ctx.sub)
            .replace("{sku}", "mug").replace("{screen_id}", "screen-1"))


def _phone(ctx: Ctx) -> str:
    return f"+4477009002{ctx.n % 100:02d}"


# The HTTP table. Order matters where one row makes what a later row reads (an order),
# and the erasure comes last.
HTTP: tuple[Row, ...] = (
    Row("GET", "/healthz", PUBLIC),
    Row("GET", "/readyz", PUBLIC),
    Row("GET", "/metrics", PUBLIC),
    Row("GET", "/openapi.json", PUBLIC),
    Row("GET", "/catalog/products", PUBLIC),
    Row("GET", "/catalog/products/{sku}", PUBLIC),
    Row("GET", "/catalog/images/{sku}.svg", PUBLIC),
    Row("PUT", "/catalog/stock/{sku}", frozenset({"admin"}),
        body=lambda c: {"location": "warehouse", "qty": 50}),
    Row("POST", "/identity/anonymous", PUBLIC, bad_token_refused=True),
    Row("POST", "/identity/otp/request", PUBLIC, body=lambda c: {"phone": _phone(c)}),
    Row("POST", "/identity/otp/verify", PUBLIC,
        body=lambda c: {"phone": _phone(c), "code": "000000", "device_id": "d"}),
    Row("POST", "/identity/token/refresh", PUBLIC, body=lambda c: {"refresh_token": "rt.x"}),
    Row("GET", "/identity/dev/outbox", frozenset({"admin"})),
    Row("GET", "/identity/me", frozenset({"member"})),
    Row("PATCH", "/identity/me", frozenset({"member"}), body=lambda c: {"name": "Ann Lee"}),
    Row("POST", "/identity/members/{id}/identifiers", frozenset({"member", "admin"}),
        path=lambda c: f"/identity/members/{c.actors.member_id}/identifiers",
        body=lambda c: {"kind": "payment", "value": f"tok_{c.n}"}, own=True),
    Row("GET", "/identity/resolve", frozenset({"admin"}),
        path=lambda c: "/identity/resolve?kind=web&value=a_nobody"),
    Row("POST", "/identity/linklog/{entry}/undo", frozenset({"admin"}),
        path=lambda c: f"/identity/linklog/{c.actors.extra['entry']}/undo"),
    Row("GET", "/identity/member-code", frozenset({"member"})),
    Row("GET", "/identity/member-code.svg", frozenset({"member"})),
    Row("GET", "/identity/devices", frozenset({"member"})),
    Row("POST", "/identity/checkin", frozenset({"screen"}),
        body=lambda c: {"code": c.actors.extra["code"]}),
    Row("GET", "/offers", frozenset({"member", "host", "screen", "admin"}),
        path=lambda c: f"/offers?member_id={c.actors.member_id}", own=True),
    Row("POST", "/events", EVERYONE, own=True, body=lambda c: [
        {"member_id": c.sub if c.caller in ("viewer", "member") else c.actors.member_id,
         "sku": "mug", "kind": "view"}]),
    Row("GET", "/live/sessions/{session_id}/suggestions", STAFF),
    Row("POST", "/live/sessions", STAFF,
        body=lambda c: {"title": f"Drop {c.n}", "products": ["mug"]}),
    Row("GET", "/live/sessions", PUBLIC),
    Row("POST", "/live/sessions/{session_id}/start", STAFF,
        path=lambda c: f"/live/sessions/{c.actors.extra['scheduled']}/start"),
    Row("POST", "/live/sessions/{session_id}/remind", frozenset({"member"}),
        path=lambda c: f"/live/sessions/{c.actors.extra['to_remind']}/remind",
        body=lambda c: {"phone": c.actors.extra["phone"]}, own=True),
    Row("GET", "/live/sessions/{session_id}", PUBLIC),
    Row("GET", "/live/sessions/{session_id}/ingest", STAFF),
    Row("GET", "/media/{session_id}/{name}", PUBLIC,
        path=lambda c: f"/media/{c.sid}/index.m3u8"),
    Row("GET", "/carts/{user_id}", EVERYONE, own=True),
    Row("POST", "/carts/{user_id}/items", frozenset({"viewer", "member"}), own=True,
        body=lambda c: {"sku": "kite", "qty": 1}),
    Row("POST", "/carts/{user_id}/items", frozenset({"viewer", "member"}), own=True,
        body=lambda c: {"sku": "mug", "qty": 1}),
    Row("DELETE", "/carts/{user_id}/items/{sku}", frozenset({"viewer", "member"}), own=True),
    Row("POST", "/carts/{user_id}/checkout", frozenset({"member"}), own=True,
        body=lambda c: {"idempotency_key": f"access-{c.n}"}),
    Row("GET", "/orders", frozenset({"member", "admin"})),
    Row("GET", "/orders/{order_id}", frozenset({"member", "admin"}), own=True,
        path=lambda c: f"/orders/{c.actors.extra['order_id']}"),
    Row("GET", "/live/sessions/{session_id}/flash-sale", PUBLIC),
    Row("POST", "/live/sessions/{session_id}/flash-sale", STAFF,
        body=lambda c: {"sku": "kite", "price": {"amount": 950, "currency": "GBP"},
                        "qty": 5, "seconds": 60}),
    Row("DELETE", "/live/sessions/{session_id}/flash-sale", STAFF),
    Row("GET", "/live/sessions/{session_id}/figures", STAFF),
    Row("POST", "/payments/webhook/{provider}", PUBLIC, path=lambda c: "/payments/webhook/fake",
        body=lambda c: {"id": "evf_forged", "type": "payment.succeeded"}),
    Row("GET", "/pay/fake/{payment_id}", PUBLIC, path=lambda c: "/pay/fake/pf_nothing"),
    Row("POST", "/pay/fake/{payment_id}", PUBLIC, path=lambda c: "/pay/fake/pf_nothing",
        body=lambda c: {"decision": "approve"}),
    Row("GET", "/", PUBLIC),
    Row("GET", "/live/{session_id}", PUBLIC),
    Row("GET", "/host/{session_id}", PUBLIC),
    Row("GET", "/screen/{screen_id}", PUBLIC),
    Row("GET", "/me", PUBLIC),
    Row("GET", "/favicon.ico", PUBLIC),
    Row("DELETE", "/identity/devices/{index}", frozenset({"member", "admin"}), own=True,
        path=lambda c: f"/identity/devices/{c.actors.device_index}"),
    Row("DELETE", "/identity/members/{id}", frozenset({"admin"}),
        path=lambda c: f"/identity/members/{c.actors.extra['erasable']}"),
    Row("DELETE", "/identity/me", frozenset({"member"})),
)

# The WebSocket ops of /ws/live/{id} and the roles that may send them (a screen token
# cannot join a live session at all).
OPS: tuple[tuple[str, dict[str, Any], frozenset[str]], ...] = (
    ("react", {"kind": "heart"}, frozenset({"viewer", "member", "host", "admin"})),
    ("chat", {"text": "hello"}, frozenset({"member", "host", "admin"})),
    ("cart.add", {"sku": "kite", "qty": 1}, frozenset({"viewer", "member"})),
    ("cart.remove", {"sku": "kite"}, frozenset({"viewer", "member"})),
    ("checkout", {"idempotency_key": "ws-1"}, frozenset({"member"})),
    ("pin", {"sku": "mug"}, STAFF),
    ("unpin", {}, STAFF),
    ("flash.start", {"sku": "kite", "price": {"amount": 500, "currency": "GBP"},
                     "qty": 2, "seconds": 30}, STAFF),
    ("flash.stop", {}, STAFF),
    ("chat.remove", {"id": "c000000000000"}, STAFF),
    ("mute", {"member_id": "m_nobody"}, STAFF),
    ("end", {}, STAFF),
)
JOIN_LIVE = frozenset({"viewer", "member", "host", "admin"})
JOIN_SCREEN = frozenset({"screen", "admin"})
REFUSED_CODES = {"forbidden", "sign_in_required", "unauthorized"}


@pytest.fixture(scope="module")
def server(store_url: str, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[ServerProcess, Actors]]:
    seed_world(store_url)
    with run_server(store_url, tmp_path_factory.mktemp("access"), env=SERVER_ENV) as srv:
        actors = make_actors(srv.url, store_url)
        actors.extra["store_url"] = store_url
        yield srv, actors


def test_tables_cover_every_route_and_op() -> None:
    """Each served route has a row; each op the hub serves is in the op table; the
    OpenAPI ``x-roles`` say the same as the table."""
    app = create_app(Settings(log_level="WARNING"))
    rows = {(r.method, r.route) for r in HTTP}
    missing = served(app.routes) - rows
    assert missing <= {("GET", "/openapi.json")} - rows, f"no access row for {missing}"
    assert all(isinstance(r, Route) or r.path == "/static" for r in app.routes)
    described = {(op.method, op.path): set(op.roles) for op in DESCRIBED}
    hub = _hub_with_every_op()
    assert set(hub.ops) == {op for op, _, _ in OPS}, "an op without a row, or a row too many"
    for row in HTTP:
        want = set() if row.roles == PUBLIC else set(row.roles)
        assert described[(row.method, row.route)] == want, (row.method, row.route)


def _hub_with_every_op() -> Hub:
    """A hub with the ops a web process registers (its client never connects)."""
    redis = aredis.Redis()
    hub = Hub(redis)
    SessionOps(hub, Catalog(redis))
    register_commerce_ops(hub, Commerce(redis, Catalog(redis), Members(redis, b"p" * 32),
                                        EventLog(redis)))
    return hub


def _callers(actors: Actors) -> Iterator[tuple[str, str | None]]:
    """Every caller and the token it sends (``None``: no Authorization header)."""
    for role in ROLES:
        yield role, actors.tokens[role]
    yield "other", actors.other_token
    yield "none", None
    yield "expired", expired(actors.member_id, "admin")
    yield "retired", retired(actors.member_id, "admin")


def test_http_access_table(server: tuple[ServerProcess, Actors]) -> None:
    """Every route against every caller: exactly the allowed ones get through (no 401 or
    403); others get 403 (a valid token of another role), 401 (no, expired or retired
    token), or 403/404 for another member's things; no answer is a 5xx."""
    srv, actors = server
    counter = itertools.count(1)
    with httpx.Client(base_url=srv.url, timeout=10) as http:
        actors.extra["erasable"] = erasable = _fresh_member(http, actors, 950)
        store = redis_sync.Redis.from_url(actors.extra["store_url"])
        try:
            entry = store.lindex(f"nr:member:{erasable}:linklog", -1)
        finally:
            store.close()
        actors.extra["entry"] = entry.decode()
        for name in ("scheduled", "to_remind"):  # one to start, one to be reminded of
            r = http.post("/live/sessions", headers=auth(actors.tokens["host"]), json={
                "title": name, "products": ["mug"], "starts_at": time.time() + 3600})
            actors.extra[name] = r.json()["session_id"]
        actors.extra["phone"] = "+447700900101"  # member A's (access_support.make_actors)
        results: list[tuple[str, str, int]] = []
        for row in HTTP:
            if row.method == "GET" and row.route == "/orders/{order_id}":
                actors.extra["order_id"] = _an_order(http, actors)
            if row.route == "/identity/checkin":
                r = http.get("/identity/member-code", headers=auth(actors.tokens["member"]))
                actors.extra["code"] = r.json()["code"]
            passed = 0
            for caller, tok in _callers(actors):
                if row.method == "DELETE" and row.route == "/identity/me" and caller in (
                        "member", "other"):
                    tok = actors.victim_token  # erase a member kept for this
                sub = actors.subs.get(caller, actors.member_id)
                ctx = Ctx(actors, caller, sub, next(counter))
                headers = auth(tok) if tok else {}
                r = http.request(row.method, _fill(row, ctx), headers=headers,
                                 json=row.body(ctx) if row.body else None)
                label = f"{row.method} {_fill(row, ctx)} as {caller}: {r.status_code} {r.text}"
                results.append((row.route, caller, r.status_code))
                assert r.status_code < 500, label
                if r.status_code >= 400:
                    assert set(r.json()) == {"error"}, label
                if row.roles == PUBLIC:
                    if caller in ("expired", "retired") and row.bad_token_refused:
                        assert r.status_code == 401, label
                    else:
                        assert r.status_code not in (401, 403) or row.route.endswith(
                            ("verify", "refresh")), label
                elif caller in BAD_TOKENS:
                    assert r.status_code == 401, label
                elif caller == "other" and row.own:
                    assert r.status_code in (403, 404), label
                elif caller == "other":  # on nothing of member A's: as any member
                    assert (r.status_code in (401, 403)) != ("member" in row.roles), label
                elif caller in row.roles:
                    assert r.status_code not in (401, 403), label
                    passed += r.status_code < 400
                else:
                    assert r.status_code == 403, label
                    assert r.json()["error"]["code"] in REFUSED_CODES, label
            if row.roles == PUBLIC:
                # The answer does not depend on who asks (a code or refresh token is
                # checked the same for everyone).
                seen = {s for _, c, s in results[-9:]
                        if not (row.bad_token_refused and c in ("expired", "retired"))}
                assert len(seen) == 1, (row.method, row.route, results[-9:])
            else:
                assert passed, f"no caller got a 2xx from {row.method} {row.route}: " \
                    f"{results[-9:]}"


def _fresh_member(http: httpx.Client, actors: Actors, n: int) -> str:
    from tests.access_support import sign_in

    return str(sign_in(str(http.base_url), f"+447700900{n}", f"dev-{n}")["member_id"])


def _an_order(http: httpx.Client, actors: Actors) -> str:
    r = http.get("/orders", headers=auth(actors.tokens["member"]))
    orders = r.json()["orders"]
    assert orders, "the checkout row made no order"
    return str(orders[0]["id"])


async def _joined(srv: ServerProcess, path: str, tok: str | None) -> tuple[Client, dict[str, Any]]:
    c = await Client.open(srv.ws_url, path)
    if tok is None:
        await c.send({"op": "hello"})
        msg = await c.until(lambda m: m.get("type") in ("welcome", "error"))
    else:
        msg = await c.hello(tok)
    return c, msg


async def test_ws_access_table(server: tuple[ServerProcess, Actors]) -> None:
    """Joining and every op against every caller: exactly the allowed roles get an ack;
    the others get ``forbidden`` (or ``sign_in_required``); callers who could not join
    (screen on a live session, no/expired/retired token) have every op refused."""
    srv, actors = server
    r = httpx.post(f"{srv.url}/live/sessions", json={"title": "WS", "products": ["mug", "kite"]},
                   headers=auth(actors.tokens["host"]), timeout=10)
    sid = r.json()["session_id"]
    conns: dict[str, Client] = {}
    try:
        for caller, tok in _callers(actors):
            c, msg = await _joined(srv, f"/ws/live/{sid}", tok)
            conns[caller] = c
            may_join = caller in JOIN_LIVE or caller == "other"
            assert (msg["type"] == "welcome") == may_join, (caller, msg)
            if not may_join:
                want = {"none": "bad_frame"}.get(caller, "unauthorized")
                assert msg["code"] == ("forbidden" if caller == "screen" else want), msg
        for i, (op, payload, roles) in enumerate(OPS):
            for caller, c in conns.items():
                role = "member" if caller == "other" else caller
                await c.send({"op": op, "ref": f"{op}-{i}", **payload})
                reply = await c.until(lambda m, ref=f"{op}-{i}": m.get("ref") == ref
                                      and m.get("type") in ("ack", "error"))
                label = (op, caller, reply)
                if role in roles:
                    assert reply["type"] == "ack" or reply["code"] not in REFUSED_CODES, label
                    assert reply.get("code") != "internal", label
                elif caller in conns and role not in JOIN_LIVE | {"other"}:
                    assert reply["type"] == "error" and reply["code"] == "bad_frame", label
                else:
                    assert reply["type"] == "error", label
                    assert reply["code"] in ("forbidden", "sign_in_required"), label
    finally:
        await asyncio.gather(*(c.close() for c in conns.values()), return_exceptions=True)


async def test_ws_screen_access(server: tuple[ServerProcess, Actors]) -> None:
    """A store screen's socket takes that screen's token or an admin's; every other
    caller, and another screen's token, is refused; screens send no ops."""
    srv, actors = server
    from tests.access_support import token

    callers = [*_callers(actors), ("screen-2", token("screen-2", "screen", store="store-b"))]
    for caller, tok in callers:
        c, msg = await _joined(srv, "/ws/screen/screen-1", tok)
        try:
            if caller in JOIN_SCREEN:
                assert msg["type"] == "welcome", (caller, msg)
                reply = await c.op("pin", "p1", sku="mug")
                assert reply["type"] == "error" and reply["code"] == "unknown_op", reply
            else:
                assert msg["type"] == "error", (caller, msg)
                assert msg["code"] in ("forbidden", "unauthorized", "bad_frame"), (caller, msg)
        finally:
            await c.close()
