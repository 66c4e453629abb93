"""Property-based fuzz of every HTTP route that takes a JSON body, on a real server:
junk bytes, JSON of the wrong shape, wrong types, huge numbers, long strings and deep
nesting each get a 4xx with the ``{"error": {"code", "message"}}`` body, and nothing in
the store changes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
import redis as redis_sync
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from live.web.app import create_app
from live.web.openapi import DESCRIBED
from live.web.settings import Settings
from tests.access_support import SERVER_ENV, auth, seed_world, sign_in, token
from tests.fuzz_strategies import (
    BAD_ID,
    BAD_KEY,
    BAD_PRICE,
    BAD_QTY,
    BAD_SECONDS,
    BAD_SKU,
    BAD_TEXT,
    HUGE,
    LONG,
    NOT_INT,
    NOT_STR,
    VALUE,
)
from tests.utils import ServerProcess, run_server


@dataclass
class World:
    server: ServerProcess
    store: redis_sync.Redis
    member_id: str
    member_token: str
    session_id: str
    scheduled_id: str = ""


NOT_BOOL = VALUE.filter(lambda v: not isinstance(v, bool))
BAD_PHONE = st.one_of(NOT_STR, st.just(""), st.just("0"), st.just("+44"), st.just("phone"),
                      st.text(alphabet="abcxyz ", min_size=1, max_size=30), LONG)


def _obj(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(fields)


def _one_bad(valid: dict[str, Any], bad: dict[str, st.SearchStrategy[Any]],
             required: tuple[str, ...] = ()) -> st.SearchStrategy[dict[str, Any]]:
    """``valid`` with one field replaced by a bad value, or a required one removed."""
    def build(name: str) -> st.SearchStrategy[dict[str, Any]]:
        if name.startswith("-"):
            return st.just({k: v for k, v in valid.items() if k != name[1:]})
        return bad[name].map(lambda v: {**valid, name: v})
    names = [*bad, *(f"-{k}" for k in required)]
    return st.sampled_from(names).flatmap(build)


PHONE_OK = "+447700900777"


# method, route, concrete path, role of the caller, bad body strategy
Case = tuple[str, str, Callable[["World"], str], str | None,
             st.SearchStrategy[Any]]
CASES: tuple[Case, ...] = (
    ("PUT", "/catalog/stock/{sku}", lambda w: "/catalog/stock/mug", "admin",
     _one_bad({"location": "warehouse", "qty": 5},
              {"location": st.one_of(NOT_STR, st.just("atlantis"), LONG),
               "qty": st.one_of(NOT_INT, st.integers(-(2**63), -1),
                                st.integers(10**9 + 1, 2**64 - 1), HUGE)},
              ("location", "qty"))),
    ("POST", "/identity/otp/request", lambda w: "/identity/otp/request", None,
     _one_bad({"phone": PHONE_OK}, {"phone": BAD_PHONE}, ("phone",))),
    ("POST", "/identity/otp/verify", lambda w: "/identity/otp/verify", None,
     _one_bad({"phone": PHONE_OK, "code": "123456", "device_id": "d1"},
              {"phone": BAD_PHONE, "code": st.one_of(NOT_STR, st.text(max_size=12), LONG),
               "device_id": st.one_of(NOT_STR, st.just(""), st.just("0"), LONG),
               "anon_id": st.one_of(NOT_STR.filter(lambda v: v is not None), LONG)},
              ("phone", "code", "device_id"))),
    ("POST", "/identity/token/refresh", lambda w: "/identity/token/refresh", None,
     _obj(refresh_token=st.one_of(NOT_STR, st.text(max_size=40), LONG))),
    ("PATCH", "/identity/me", lambda w: "/identity/me", "member",
     st.one_of(
         _obj(name=st.one_of(NOT_STR.filter(lambda v: v is not None),
                             st.integers(81, 5000).map(lambda n: "n" * n))),
         _obj(consent=st.one_of(NOT_STR.filter(lambda v: v != {}), st.dictionaries(
             st.sampled_from(["personalization", "marketing", "spam", ""]), NOT_BOOL,
             min_size=1, max_size=3))),
         st.dictionaries(st.text(max_size=10).filter(lambda k: k not in ("name", "consent")),
                         VALUE, min_size=1, max_size=3))),
    ("POST", "/identity/members/{id}/identifiers",
     lambda w: f"/identity/members/{w.member_id}/identifiers", "member",
     _one_bad({"kind": "payment", "value": "tok_fuzz"},
              {"kind": VALUE.filter(lambda v: v not in ("payment", "loyalty_card")
                                    or not isinstance(v, str)),
               "value": st.one_of(NOT_STR, st.just(""), st.just("0"), st.just("null"),
                                  st.text(min_size=201, max_size=400))},
              ("kind", "value"))),
    ("POST", "/identity/checkin", lambda w: "/identity/checkin", "screen",
     _obj(code=st.one_of(NOT_STR, st.text(max_size=30), LONG, st.just("NR0000000000123456")))),
    ("POST", "/events", lambda w: "/events", "member",
     st.one_of(
         NOT_STR.filter(lambda v: not isinstance(v, list)), st.just([]),
         st.lists(st.just({"member_id": "m_x", "sku": "mug", "kind": "view"}),
                  min_size=1001, max_size=1001),
         st.lists(VALUE.filter(lambda v: not isinstance(v, dict)), min_size=1, max_size=3),
         _one_bad({"member_id": "SELF", "sku": "mug", "kind": "view"},
                  {"sku": BAD_SKU.filter(lambda v: v not in ("no-such-sku", "mug\n")),
                   "kind": VALUE.filter(lambda v: v not in ("view", "click", "cart",
                                                             "purchase")),
                   "ts": st.one_of(NOT_INT.filter(lambda v: not isinstance(v, float)),
                                   st.floats(max_value=0), st.just(4e9), HUGE),
                   "session_id": NOT_STR.filter(lambda v: v is not None),
                   "member_id": st.one_of(NOT_STR, st.just(""))},
                  ("member_id", "sku", "kind")).map(lambda e: [e]))),
    ("POST", "/live/sessions", lambda w: "/live/sessions", "host",
     _one_bad({"title": "Fuzz", "products": ["mug"]},
              {"title": st.one_of(NOT_STR, st.just("  "), st.text(min_size=201, max_size=300)),
               "products": st.one_of(NOT_STR.filter(lambda v: not isinstance(v, list)),
                                     st.lists(NOT_STR, min_size=1, max_size=3),
                                     st.just(["no-such-sku"]),
                                     st.lists(st.just("mug"), min_size=101, max_size=101)),
               "video_url": st.one_of(NOT_STR.filter(lambda v: v is not None),
                                      st.just("javascript:alert(1)"), st.just("ftp://x")),
               "starts_at": st.one_of(NOT_INT.filter(lambda v: v is not None),
                                      st.just(-1), st.just(4e10), HUGE),
               "teaser": st.one_of(NOT_STR, st.text(min_size=501, max_size=600))},
              ("title",))),
    ("POST", "/live/sessions/{session_id}/remind",
     lambda w: f"/live/sessions/{w.scheduled_id}/remind", "member",
     _one_bad({"phone": "+447700900501"},
              {"phone": st.one_of(NOT_STR, st.just(""), st.just("+447700900999"), LONG)},
              ("phone",))),
    ("POST", "/carts/{user_id}/items", lambda w: f"/carts/{w.member_id}/items", "member",
     _one_bad({"sku": "mug", "qty": 1},
              {"sku": BAD_SKU, "qty": BAD_QTY,
               "session_id": st.one_of(NOT_STR.filter(lambda v: v is not None),
                                       st.just(""), st.just("no-such-session"), LONG)},
              ("sku",))),
    ("POST", "/carts/{user_id}/checkout", lambda w: f"/carts/{w.member_id}/checkout",
     "member", _one_bad({"idempotency_key": "fuzz-1"}, {"idempotency_key": BAD_KEY},
                        ("idempotency_key",))),
    ("POST", "/live/sessions/{session_id}/flash-sale",
     lambda w: f"/live/sessions/{w.session_id}/flash-sale", "host",
     _one_bad({"sku": "kite", "price": {"amount": 500, "currency": "GBP"}, "qty": 2, "seconds": 30},
              {"sku": BAD_SKU, "price": BAD_PRICE, "qty": BAD_QTY, "seconds": BAD_SECONDS,
               "limit": BAD_QTY}, ("sku", "price", "qty", "seconds"))),
    ("POST", "/pay/fake/{payment_id}", lambda w: "/pay/fake/pf_nothing", None,
     _one_bad({"decision": "approve"},
              {"decision": VALUE.filter(lambda v: v not in ("approve", "decline"))},
              ("decision",))),
)
_ = BAD_TEXT, BAD_ID  # the WebSocket fuzz uses these; bodies have no chat

JUNK = st.one_of(
    st.binary(max_size=300), st.just(b""), st.just(b"{"), st.just(b"[" * 3000 + b"]" * 3000),
    st.just(b'{"a": ' + b"9" * 400 + b"}"), st.just(b"\xff\xfe\x00"), st.just(b"NaN"),
    st.just(b'{"a": 1e999}'), st.just(b'{"a": "\\ud800"}'),
)


@pytest.fixture(scope="module")
def world(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    seed_world(store_url)
    with run_server(store_url, tmp_path_factory.mktemp("fuzzhttp"), env=SERVER_ENV) as srv:
        member = sign_in(srv.url, "+447700900501", "fuzz-http")
        r = httpx.post(f"{srv.url}/live/sessions", headers=auth(token("host-1", "host")),
                       json={"title": "Fuzz", "products": ["mug", "kite"]}, timeout=10)
        scheduled = httpx.post(
            f"{srv.url}/live/sessions", headers=auth(token("host-1", "host")), timeout=10,
            json={"title": "Later", "products": ["mug"], "starts_at": time.time() + 3600})
        store = redis_sync.Redis.from_url(store_url)
        try:
            yield World(srv, store, member["member_id"], member["token"],
                        r.json()["session_id"], scheduled.json()["session_id"])
        finally:
            store.close()


def test_every_json_route_is_fuzzed() -> None:
    """Each described operation with a request body has a fuzz case here."""
    with_body = {(op.method, op.path) for op in DESCRIBED if op.body is not None}
    assert {(m, r) for m, r, *_ in CASES} == with_body
    create_app(Settings(log_level="WARNING"))  # the table is of this app's routes


def store_state(store: redis_sync.Redis) -> dict[bytes, bytes]:
    """Every key and its value, except what a request legitimately touches without
    changing anything (metrics, rate windows, expiring presence)."""
    keys = [k for k in store.scan_iter(count=1000) if not k.startswith(
        (b"nr:live:viewers", b"nr:live:present", b"nr:otp:fails", b"nr:otp:lock"))]
    pipe = store.pipeline(transaction=False)
    for key in keys:
        pipe.dump(key)
    return {k: v or b"" for k, v in zip(keys, pipe.execute(), strict=True)}


def _tokens(w: World) -> dict[str, str]:
    return {"member": w.member_token, "admin": token("admin-1", "admin"),
            "host": token("host-1", "host"), "screen": token("screen-1", "screen",
                                                              store="store-a")}


@settings(max_examples=80, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(st.data())
def test_bad_bodies_are_refused_and_change_nothing(world: World, data: st.DataObject) -> None:
    """A junk or wrong-shaped body on any JSON route: a 4xx with the error shape, the
    same store as before."""
    method, route, path, role, bodies = data.draw(st.sampled_from(CASES))
    raw: bytes
    if data.draw(st.integers(0, 4)) == 0:
        raw = data.draw(JUNK)
    else:
        body = data.draw(bodies)
        if route == "/events" and isinstance(body, list):
            body = [{**e, "member_id": world.member_id} if isinstance(e, dict)
                    and e.get("member_id") == "SELF" else e for e in body]
        raw = orjson.dumps(body)
    headers = {"content-type": "application/json"}
    if role is not None:
        headers.update(auth(_tokens(world)[role]))
    before = store_state(world.store)
    r = httpx.request(method, world.server.url + path(world), content=raw, headers=headers,
                      timeout=10)
    label = f"{method} {route} {raw[:200]!r}: {r.status_code} {r.text[:300]}"
    if raw == b"" and (method, route) == ("PATCH", "/identity/me"):
        # No body is no change asked for: the member as they are.
        assert r.status_code == 200 and r.json()["member_id"] == world.member_id, label
        assert store_state(world.store) == before
        return
    assert 400 <= r.status_code < 500, label
    assert r.headers["content-type"].startswith("application/json"), label
    err = r.json()
    assert set(err) == {"error"} and set(err["error"]) == {"code", "message"}, label
    assert isinstance(err["error"]["code"], str) and err["error"]["message"], label
    after = store_state(world.store)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"{label}\nchanged: {changed}"
