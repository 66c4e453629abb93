"""HTTP routes of identity: a thin layer over ``IdentityService`` with the role checks."""

from __future__ import annotations

import io
import time
from typing import Any

import orjson
import segno
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from identity.auth import authenticate, require
from identity.errors import bad_request, forbidden, not_found
from identity.service import IdentityService


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None,
                  ) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json",
                    headers=headers)


async def read_object(request: Request) -> dict[str, Any]:
    body = await request.body()
    try:
        data = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        raise bad_request("the body must be JSON") from None
    if not isinstance(data, dict):
        raise bad_request("the body must be a JSON object")
    return data


def identity(request: Request) -> IdentityService:
    svc: IdentityService = request.app.state.services.identity
    return svc


async def anonymous(request: Request) -> Response:
    authenticate(request)  # a bad token is refused even here
    return json_response(identity(request).anonymous(), 201)


async def otp_request(request: Request) -> Response:
    body = await read_object(request)
    await identity(request).request_code(body.get("phone"))
    return json_response({"status": "sent", "expires_in": 300}, 202)


async def otp_verify(request: Request) -> Response:
    body = await read_object(request)
    signed_in = await identity(request).verify(
        body.get("phone"), body.get("code"), body.get("device_id"), body.get("anon_id"))
    return json_response(signed_in)


async def token_refresh(request: Request) -> Response:
    body = await read_object(request)
    return json_response(await identity(request).refresh(body.get("refresh_token")))


async def dev_outbox(request: Request) -> Response:
    svc = identity(request)
    if svc.outbox is None:
        raise not_found("/identity/dev/outbox (dev and demo mode only)")
    require(request, "admin")
    return json_response({"messages": await svc.outbox_messages()})


async def get_me(request: Request) -> Response:
    claims = require(request, "member")
    return json_response((await identity(request).me(claims.sub)).public())


async def patch_me(request: Request) -> Response:
    claims = require(request, "member")
    body = await read_object(request)
    return json_response((await identity(request).update_me(claims.sub, body)).public())


async def delete_me(request: Request) -> Response:
    claims = require(request, "member")
    return json_response(await identity(request).erase(claims.sub, "member"))


async def delete_member(request: Request) -> Response:
    require(request, "admin")
    return json_response(await identity(request).erase(request.path_params["id"], "admin"))


async def add_identifier(request: Request) -> Response:
    claims = require(request, "member", "admin")
    member_id = request.path_params["id"]
    if claims.role == "member" and claims.sub != member_id:
        raise forbidden("a member may only add identifiers to themself")
    body = await read_object(request)
    linked = await identity(request).add_identifier(
        member_id, body.get("kind"), body.get("value"), claims)
    return json_response({"member_id": member_id, "kind": body["kind"], "linked": linked},
                         201 if linked else 200)


async def resolve(request: Request) -> Response:
    require(request, "admin")
    q = request.query_params
    member_id = await identity(request).resolve(q.get("kind"), q.get("value"))
    return json_response({"kind": q.get("kind"), "member_id": member_id})


async def undo_link(request: Request) -> Response:
    claims = require(request, "admin")
    entry = await identity(request).members.undo(request.path_params["entry"], claims.sub)
    return json_response({"undone": entry.id, "action": entry.action, "kind": entry.kind})


async def member_code(request: Request) -> Response:
    claims = require(request, "member")
    return json_response(await identity(request).member_code(claims),
                         headers={"cache-control": "no-store"})


async def member_code_svg(request: Request) -> Response:
    claims = require(request, "member")
    code = await identity(request).member_code(claims)
    # A full QR symbol: store scanners often cannot read the Micro QR segno would pick.
    out = io.BytesIO()
    # A standalone document (namespace included), so an <img> can draw it as it is.
    segno.make_qr(code["code"], error="m").save(out, kind="svg", scale=6, border=4,
                                                xmldecl=False)
    return Response(out.getvalue(), media_type="image/svg+xml",
                    headers={"cache-control": "no-store"})


async def list_devices(request: Request) -> Response:
    claims = require(request, "member")
    return json_response({"devices": await identity(request).list_devices(claims.sub)})


async def delete_device(request: Request) -> Response:
    claims = require(request, "member", "admin")
    owner = None if claims.role == "admin" else claims.sub
    await identity(request).revoke_device(request.path_params["index"], owner)
    return Response(status_code=204)


async def checkin(request: Request) -> Response:
    started = time.perf_counter()
    claims = require(request, "screen")
    body = await read_object(request)
    result = await identity(request).check_in(body.get("code"), claims.sub, claims.store)
    took = (time.perf_counter() - started) * 1000
    return json_response(result, headers={"server-timing": f"app;dur={took:.3f}"})


ROUTES = [
    Route("/identity/anonymous", anonymous, methods=["POST"]),
    Route("/identity/otp/request", otp_request, methods=["POST"]),
    Route("/identity/otp/verify", otp_verify, methods=["POST"]),
    Route("/identity/token/refresh", token_refresh, methods=["POST"]),
    Route("/identity/dev/outbox", dev_outbox, methods=["GET"]),
    Route("/identity/me", get_me, methods=["GET"]),
    Route("/identity/me", patch_me, methods=["PATCH"]),
    Route("/identity/me", delete_me, methods=["DELETE"]),
    Route("/identity/members/{id}", delete_member, methods=["DELETE"]),
    Route("/identity/members/{id}/identifiers", add_identifier, methods=["POST"]),
    Route("/identity/resolve", resolve, methods=["GET"]),
    Route("/identity/linklog/{entry}/undo", undo_link, methods=["POST"]),
    Route("/identity/member-code", member_code, methods=["GET"]),
    Route("/identity/member-code.svg", member_code_svg, methods=["GET"]),
    Route("/identity/devices", list_devices, methods=["GET"]),
    Route("/identity/devices/{index}", delete_device, methods=["DELETE"]),
    Route("/identity/checkin", checkin, methods=["POST"]),
]
