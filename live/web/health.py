"""Operations routes: liveness, readiness and the Prometheus endpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from live.http import json_response
from live.web.metrics import metrics_endpoint

if TYPE_CHECKING:
    from live.web.compose import Services


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    svc = services(request)
    checks: dict[str, Any] = {}
    try:
        await svc.redis.ping()
        checks["store"] = "ok"
    except Exception as exc:  # any datastore failure means not ready
        checks["store"] = f"down: {type(exc).__name__}"
    # Offers fall back to trending until a model is trained, so no model is not "not ready".
    checks["model"] = svc.recommender.model_version or "none"
    if svc.recommender.load_error:  # the newest version is unreadable; the previous serves
        checks["model_error"] = svc.recommender.load_error
    ready = checks["store"] == "ok"
    return json_response({"ready": ready, "checks": checks}, 200 if ready else 503)


ROUTES = [
    Route("/healthz", healthz),
    Route("/readyz", readyz),
    Route("/metrics", metrics_endpoint),
]
