"""Set-up shared by the payment tests: the real app served by uvicorn in the test's own
event loop (so a test reaches its services and its HTTP side alike), and a local stand-in
of the Stripe API at the HTTP boundary (idempotency keys replayed as Stripe does)."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from live.web.app import create_app
from live.web.compose import Services
from live.web.settings import Settings
from tests.utils import free_port, uvicorn_in_loop

FAKE_SECRET = "fake-provider-secret-of-the-tests"


@dataclass
class Running:
    url: str
    services: Services


@asynccontextmanager
async def running_service(settings: Settings, deliver: bool = True,
                          **overrides: Any) -> AsyncIterator[Running]:
    """The app on 127.0.0.1 in this loop; with ``deliver`` the fake provider's webhooks
    go to it (``NEWRETAIL_PUBLIC_URL``), without, a test sends them itself."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = dataclasses.replace(settings, fake_pay_secret=FAKE_SECRET,
                                   public_url=url if deliver else None, **overrides)
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on",
                            log_level="warning")
    async with uvicorn_in_loop(config):
        yield Running(url, app.state.services)


@dataclass
class StripeStandIn:
    """The few endpoints of Stripe's API the provider uses, with Stripe's idempotency:
    a repeated ``Idempotency-Key`` replays the first answer (other parameters: 400)."""

    requests: list[tuple[str, str, str | None, dict[str, str]]] = field(default_factory=list)
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    answers: dict[str, tuple[dict[str, str], int, dict[str, Any]]] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v1/payment_intents", self.endpoint, methods=["POST"]),
            Route("/v1/payment_intents/{id}", self.endpoint, methods=["GET"]),
            Route("/v1/payment_intents/{id}/{action}", self.endpoint, methods=["POST"]),
            Route("/v1/refunds", self.endpoint, methods=["POST"]),
        ])

    async def endpoint(self, request: Request) -> Response:
        params = dict(parse_qsl((await request.body()).decode()))
        key = request.headers.get("idempotency-key")
        self.requests.append((request.method, request.url.path, key, params))
        if key is not None and key in self.answers:
            first, status, body = self.answers[key]
            if first != params:
                return JSONResponse({"error": {"type": "idempotency_error", "message":
                                               "Keys for idempotent requests can only be "
                                               "used with the same parameters"}}, 400)
            return JSONResponse(body, status, headers={"idempotent-replayed": "true"})
        status, body = self.answer(request, params)
        if key is not None and request.method == "POST":
            self.answers[key] = (params, status, body)
        return JSONResponse(body, status)

    def answer(self, request: Request, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        path = request.url.path
        if path == "/v1/payment_intents":
            pid = f"pi_{next(self.ids):06d}"
            self.intents[pid] = {
                "id": pid, "object": "payment_intent", "amount": int(params["amount"]),
                "currency": params["currency"], "status": "requires_payment_method",
                "client_secret": f"{pid}_secret_x",
                "metadata": {"order_id": params.get("metadata[order_id]", "")}}
            return 200, self.intents[pid]
        if path == "/v1/refunds":
            intent = self.intents.get(params.get("payment_intent", ""))
            if intent is None:
                return 404, {"error": {"type": "invalid_request_error",
                                       "message": "No such payment_intent"}}
            return 200, {"id": f"re_{next(self.ids):06d}", "object": "refund",
                         "amount": int(params["amount"]), "currency": intent["currency"],
                         "payment_intent": intent["id"], "status": "succeeded"}
        intent = self.intents.get(request.path_params["id"])
        if intent is None:
            return 404, {"error": {"type": "invalid_request_error", "message": "No such intent"}}
        action = request.path_params.get("action")
        if action == "cancel":
            intent["status"] = "canceled"
        elif action == "capture":
            intent["status"] = "succeeded"
        return 200, intent


@asynccontextmanager
async def stripe_stand_in() -> AsyncIterator[tuple[StripeStandIn, str]]:
    stand_in = StripeStandIn()
    config = uvicorn.Config(stand_in.app(), host="127.0.0.1", port=0, lifespan="off",
                            log_level="warning")
    async with uvicorn_in_loop(config) as port:
        yield stand_in, f"http://127.0.0.1:{port}"
