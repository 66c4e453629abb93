"""HTTP routes of carts, checkout, flash sales and orders: a thin layer over ``Commerce``.

The WebSocket ops do the same things inside a live session; these routes serve pages
outside one, scripts and load tests. A cart is addressed by its user id: your own, or
anyone's for an admin.
"""

from __future__ import annotations

import hashlib
import html
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from identity.auth import require
from identity.types import Claims
from live.commerce.catalog import Catalog
from live.commerce.service import Commerce
from live.commerce.types import Caller
from live.errors import LiveError, bad_request
from live.http import int_param, json_response, read_json, require_session_host
from live.types import HostedSession, SessionDirectory

if TYPE_CHECKING:
    from identity.types import Claims


def commerce(request: Request) -> Commerce:
    svc: Commerce = request.app.state.services.commerce
    return svc


def _catalog(request: Request) -> Catalog:
    return commerce(request).catalog


def _sessions(request: Request) -> SessionDirectory[HostedSession]:
    sessions = commerce(request).sessions
    if sessions is None:  # a commerce without live sessions knows none
        raise LiveError("not_found", "no live sessions here", 404)
    return sessions


def _cart_owner(request: Request) -> tuple[Claims, Caller]:
    """The caller when the cart in the path is theirs (or they are an admin)."""
    claims = require(request)
    owner = request.path_params["user_id"]
    if claims.sub != owner and claims.role != "admin":
        raise LiveError("forbidden", "this is another user's cart", 403)
    return claims, Caller(owner, claims.role if claims.sub == owner else "member")


async def _body(request: Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    return body


async def _session(request: Request, body: dict[str, Any]) -> str | None:
    """The ``session_id`` of the body, when given: a session that exists."""
    session = body.get("session_id")
    if session is None:
        return None
    if not isinstance(session, str) or not 0 < len(session) <= 64:
        raise bad_request("session_id must be a string of 1 to 64 characters")
    await _sessions(request).get(session)  # not_found for an unknown session
    return session


async def get_cart(request: Request) -> Response:
    _, caller = _cart_owner(request)
    cart = await commerce(request).cart(caller.user)
    return json_response({"user_id": caller.user, "cart": cart})


async def add_cart_item(request: Request) -> Response:
    claims, caller = _cart_owner(request)
    if claims.role == "admin" and claims.sub != caller.user:
        raise LiveError("forbidden", "admins may read carts, not fill them", 403)
    body = await _body(request)
    cart = await commerce(request).add_to_cart(
        caller, body.get("sku"), body.get("qty", 1), await _session(request, body))
    return json_response({"user_id": caller.user, "cart": cart})


async def remove_cart_item(request: Request) -> Response:
    claims, caller = _cart_owner(request)
    if claims.role == "admin" and claims.sub != caller.user:
        raise LiveError("forbidden", "admins may read carts, not change them", 403)
    cart = await commerce(request).remove_from_cart(caller, request.path_params["sku"])
    return json_response({"user_id": caller.user, "cart": cart})


async def checkout(request: Request) -> Response:
    claims = require(request)
    if claims.sub != request.path_params["user_id"]:
        raise LiveError("forbidden", "you can only check out your own cart", 403)
    body = await _body(request)
    result = await commerce(request).checkout(
        Caller(claims.sub, claims.role), body.get("idempotency_key"),
        await _session(request, body))
    return json_response({"order": result.order, "replayed": result.replayed},
                         200 if result.replayed else 201)


async def list_orders(request: Request) -> Response:
    claims = require(request, "member", "admin")
    limit = int_param(request, "limit", 50, 1, 500)
    orders = commerce(request).orders
    if claims.role == "admin":
        return json_response({"orders": await orders.recent(limit)})
    return json_response({"orders": await orders.of_member(claims.sub, limit)})


async def get_order(request: Request) -> Response:
    claims = require(request, "member", "admin")
    order = await commerce(request).orders.get(request.path_params["order_id"])
    if claims.role != "admin" and order["member_id"] != claims.sub:
        # Someone else's order reads as missing: ids are not confirmed to strangers.
        raise LiveError("not_found", "order not found", 404)
    return json_response(order)


async def start_flash(request: Request) -> Response:
    claims, info = await require_session_host(request, "flash sales", _sessions(request))
    body = await _body(request)
    sale = await commerce(request).start_flash(Caller(claims.sub, claims.role),
                                               info.require_live().id, body)
    return json_response(sale.message(), 201)


async def stop_flash(request: Request) -> Response:
    claims, _ = await require_session_host(request, "flash sales", _sessions(request))
    await commerce(request).stop_flash(
        Caller(claims.sub, claims.role), request.path_params["session_id"])
    return json_response({"stopped": True})


async def get_flash(request: Request) -> Response:
    sale = await commerce(request).flash_sale(request.path_params["session_id"])
    return json_response({"flash_sale": sale})


async def get_figures(request: Request) -> Response:
    _, info = await require_session_host(request, "figures", _sessions(request))
    return json_response(await commerce(request).figures(info.id))




def _product_json(p: Any, stock: dict[str, int]) -> dict[str, Any]:
    return {
        "sku": p.sku, "title": p.title, "category": p.category, "price": p.price.to_wire(),
        "image": p.image, "stock": sum(stock.values()),
    }


async def list_products(request: Request) -> Response:
    catalog: Catalog = _catalog(request)
    limit = int_param(request, "limit", 20, 1, 200)
    products = await catalog.search(request.query_params.get("q", ""), limit)
    stocks = await catalog.stock_many([p.sku for p in products])
    return json_response(
        {"products": [_product_json(p, s) for p, s in zip(products, stocks, strict=True)]}
    )


async def get_product(request: Request) -> Response:
    catalog = _catalog(request)
    product = await catalog.get(request.path_params["sku"])
    stock = await catalog.stock(product.sku)
    body = _product_json(product, stock)
    body["stock_by_location"] = stock
    return json_response(body)


async def put_stock(request: Request) -> Response:
    require(request, "admin")
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("location"), str):
        raise bad_request('the body must be {"location": str, "qty": int}')
    sku = request.path_params["sku"]
    await _catalog(request).set_stock(sku, body["location"], body.get("qty"))  # type: ignore[arg-type]
    return json_response({"sku": sku, "stock": await _catalog(request).stock(sku)})


_PALETTE = ("#e4572e", "#17bebb", "#ffc914", "#2e282a", "#76b041", "#6a4c93", "#1982c4")


async def product_image(request: Request) -> Response:
    """A generated SVG picture for a product: its category colour and initials."""
    product = await _catalog(request).get(request.path_params["sku"])
    colour = _PALETTE[int(hashlib.sha1(product.category.encode()).hexdigest(), 16) % 7]
    initials = html.escape("".join(w[0] for w in product.title.split()[:2]).upper())
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 200 200" width="200" height="200">'
        f'<rect width="200" height="200" rx="24" fill="{colour}"/>'
        '<text x="100" y="122" font-family="sans-serif" font-size="64" text-anchor="middle" '
        f'fill="#fff">{initials}</text></svg>'
    )
    return Response(svg, media_type="image/svg+xml",
                    headers={"cache-control": "public, max-age=86400"})


ROUTES = [
    Route("/catalog/products", list_products),
    Route("/catalog/products/{sku}", get_product),
    Route("/catalog/images/{sku}.svg", product_image),
    Route("/catalog/stock/{sku}", put_stock, methods=["PUT"]),
    Route("/carts/{user_id}", get_cart),
    Route("/carts/{user_id}/items", add_cart_item, methods=["POST"]),
    Route("/carts/{user_id}/items/{sku}", remove_cart_item, methods=["DELETE"]),
    Route("/carts/{user_id}/checkout", checkout, methods=["POST"]),
    Route("/orders", list_orders),
    Route("/orders/{order_id}", get_order),
    Route("/live/sessions/{session_id}/flash-sale", get_flash),
    Route("/live/sessions/{session_id}/flash-sale", start_flash, methods=["POST"]),
    Route("/live/sessions/{session_id}/flash-sale", stop_flash, methods=["DELETE"]),
    Route("/live/sessions/{session_id}/figures", get_figures),
]
