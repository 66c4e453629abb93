"""The OpenAPI description: it covers every route, the app serves it, and a real server
answers schemathesis-generated requests as described, with no 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks as st_checks
from starlette.routing import Route
from starlette.testclient import TestClient

from live.web.app import create_app
from live.web.openapi import DESCRIBED, openapi_document, served, undescribed
from live.web.settings import Settings
from tests.access_support import Actors, make_actors, seed_world
from tests.utils import ServerProcess, run_server

SCHEMA = schemathesis.openapi.from_dict(openapi_document())
CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
]


def test_every_route_is_described() -> None:
    """A route added to the app without a description here (or one described but no
    longer served) fails this test."""
    app = create_app(Settings(log_level="WARNING"))
    missing, stale = undescribed(app.routes)
    assert not missing, f"routes with no OpenAPI description: {sorted(missing)}"
    assert not stale, f"described but not served: {sorted(stale)}"
    assert len(served(app.routes)) == len(DESCRIBED)


def test_undescribed_route_is_caught() -> None:
    """The sync check notices a route it does not know."""
    async def extra(request: Any) -> None: ...
    missing, _ = undescribed([Route("/not-described", extra, methods=["POST"])])
    assert missing == {("POST", "/not-described")}


def test_document_shape() -> None:
    """Every operation has responses with schemas, an error shape for refusals and a
    security entry matching its roles."""
    doc = openapi_document()
    assert doc["openapi"].startswith("3.")
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            label = f"{method.upper()} {path}"
            assert op["responses"], label
            for status, resp in op["responses"].items():
                if status == "404" and "pages" in op["tags"] and "text/html" in resp.get(
                        "content", {}):
                    continue  # an unknown live is the 404 page, for people
                if int(status) >= 400:
                    schema = resp["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, label
            if op["x-roles"]:
                assert op["security"] == [{"bearer": []}], label
                assert {"401", "403"} <= set(op["responses"]), label
            if "requestBody" in op:
                assert "400" in op["responses"], label


def test_served_document(client: TestClient) -> None:
    """``/openapi.json`` is the document, as JSON, to anyone."""
    r = client.get("/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == openapi_document()


@dataclass
class World:
    server: ServerProcess
    actors: Actors


@pytest.fixture(scope="module")
def world(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from tests.access_support import SERVER_ENV

    seed_world(store_url)
    with run_server(store_url, tmp_path_factory.mktemp("openapi"), env=SERVER_ENV) as server:
        yield World(server, make_actors(server.url, store_url))


def _prepare(case: Any, actors: Actors) -> dict[str, str]:
    """A token of a role the operation serves, and its own ids in the path where the
    operation acts on the caller's own things (else the generated ones)."""
    roles: list[str] = case.operation.definition.raw.get("x-roles", [])
    params = case.path_parameters or {}
    path = case.operation.path
    if path == "/identity/me" and case.method == "DELETE":
        role, tok = "member", actors.victim_token
    elif roles:
        role = "member" if "member" in roles else roles[0]
        tok = actors.tokens[role]
    else:
        return {}
    if "user_id" in params:
        params["user_id"] = actors.subs[role]
    if path == "/identity/members/{id}/identifiers":
        params["id"] = actors.member_id
    return {"authorization": f"Bearer {tok}"}


@SCHEMA.parametrize()
@settings(max_examples=10, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_conforms(case: Any, world: World) -> None:
    """Generated requests to every operation get an answer as described: no 5xx, a
    documented status, content type and body shape."""
    headers = _prepare(case, world.actors)
    case.call_and_validate(base_url=world.server.url, headers=headers, checks=CHECKS,
                           timeout=10)


def test_server_still_answers(world: World) -> None:
    """After the generated requests the server is healthy and its store reachable."""
    r = httpx.get(f"{world.server.url}/readyz", timeout=5)
    assert r.status_code == 200 and r.json()["ready"] is True
