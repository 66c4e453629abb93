"""HTTP routes of the live package: catalog, stock and operations."""

from __future__ import annotations

import hashlib
import html
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from identity.auth import require
from live.catalog import Catalog
from live.errors import bad_request
from live.metrics import metrics_endpoint
from live.protocol import check_session_host

if TYPE_CHECKING:
    from identity.types import Claims
    from live.services import Services
    from live.sessions import SessionInfo


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


async def read_json(request: Request) -> Any:
    """The request body as JSON, or a ``bad_request`` error."""
    body = await request.body()
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_request("the body must be JSON") from None


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def require_session_host(request: Request, what: str) -> tuple[Claims, SessionInfo]:
    """A host or admin token and the session of the path; a host must be its own host."""
    claims = require(request, "host", "admin")
    info = await services(request).hub.store.get(request.path_params["session_id"])
    check_session_host(what, claims.role, claims.sub, info.host)
    return claims, info


def int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{name} must be a whole number") from None
    if not lo <= value <= hi:
        raise bad_request(f"{name} must be between {lo} and {hi}")
    return value


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    svc = services(request)
    checks: dict[str, Any] = {}
    try:
        await svc.redis.ping()
        checks["store"] = "ok"
    except Exception as exc:  # any store failure means not ready
        checks["store"] = f"down: {type(exc).__name__}"
    # Offers fall back to trending until a model is trained, so no model is not "not ready".
    checks["model"] = svc.recommender.model_version or "none"
    if svc.recommender.load_error:  # the newest version is unreadable; the previous serves
        checks["model_error"] = svc.recommender.load_error
    ready = checks["store"] == "ok"
    return json_response({"ready": ready, "checks": checks}, 200 if ready else 503)


def _product_json(p: Any, stock: dict[str, int]) -> dict[str, Any]:
    return {
        "sku": p.sku, "title": p.title, "category": p.category, "price": p.price,
        "image": p.image, "stock": sum(stock.values()),
    }


async def list_products(request: Request) -> Response:
    catalog: Catalog = services(request).catalog
    limit = int_param(request, "limit", 20, 1, 200)
    products = await catalog.search(request.query_params.get("q", ""), limit)
    stocks = await catalog.stock_many([p.sku for p in products])
    return json_response(
        {"products": [_product_json(p, s) for p, s in zip(products, stocks, strict=True)]}
    )


async def get_product(request: Request) -> Response:
    catalog = services(request).catalog
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
    await services(request).catalog.set_stock(sku, body["location"], body.get("qty"))  # type: ignore[arg-type]
    return json_response({"sku": sku, "stock": await services(request).catalog.stock(sku)})


_PALETTE = ("#e4572e", "#17bebb", "#ffc914", "#2e282a", "#76b041", "#6a4c93", "#1982c4")


async def product_image(request: Request) -> Response:
    """A generated SVG picture for a product: its category colour and initials."""
    product = await services(request).catalog.get(request.path_params["sku"])
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
    Route("/healthz", healthz),
    Route("/readyz", readyz),
    Route("/metrics", metrics_endpoint),
    Route("/catalog/products", list_products),
    Route("/catalog/products/{sku}", get_product),
    Route("/catalog/images/{sku}.svg", product_image),
    Route("/catalog/stock/{sku}", put_stock, methods=["PUT"]),
]
