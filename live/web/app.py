"""The app factory: one Starlette app wiring identity, recommender and live."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from identity.errors import IdentityError
from identity.routes import ROUTES as IDENTITY_ROUTES
from live.commerce.routes import ROUTES as COMMERCE_ROUTES
from live.db.client import bounded
from live.errors import STORE_ERRORS, LiveError, StoreOutageFilter
from live.hub.endpoint import LiveSockets
from live.hub.routes import ROUTES as SESSION_ROUTES
from live.media.routes import ROUTES as MEDIA_ROUTES
from live.offers.routes import ROUTES as OFFER_ROUTES
from live.payments.routes import ROUTES as PAYMENT_ROUTES
from live.web.compose import open_services
from live.web.errors import (
    handle_error,
    handle_http_error,
    handle_store_error,
    handle_unexpected,
)
from live.web.health import ROUTES
from live.web.limits import ConnectionLimiter
from live.web.metrics import RequestTimer
from live.web.openapi import ROUTE as OPENAPI_ROUTE
from live.web.pages import page_routes
from live.web.settings import Settings
from recommender.types import RecommenderError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(level: str) -> None:
    """One handler on the root; each package logs under ``newretail.<package>``."""
    logging.basicConfig(level=level, format=LOG_FORMAT)
    # httpx logs every request at INFO: the fake payment provider's webhooks, the demo's
    # scripted clients. Their failures still show.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for name in ("newretail.live", "newretail.identity", "newretail.recommender"):
        logging.getLogger(name).setLevel(level)
        if not any(isinstance(f, StoreOutageFilter) for f in logging.getLogger(name).filters):
            logging.getLogger(name).addFilter(StoreOutageFilter())


def tune_gc() -> None:
    """Keep the cycle collector from stalling the event loop.

    A full collection walks every tracked object: with a few thousand sockets connected
    that took 0.15 s of CPU, during which no connection is served (seen in the middle of
    the checkout benchmark's burst). Objects made at start-up (modules, the app, the model)
    live as long as the process, so they are frozen out of collections (once per
    process), and full collections run a tenth as often.
    """
    global _GC_TUNED
    if not _GC_TUNED:
        gc.freeze()
        _GC_TUNED = True
    gc.set_threshold(700, 10, 100)


_GC_TUNED = False


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the app; the datastore is opened when the app starts (its lifespan).

    Args:
        settings: defaults to ``Settings.from_env()``.
    """
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_services(settings) as services:
            app.state.services = services
            app.state.keyring = services.keyring
            await services.recommender.refresh()
            services.recommender.start()
            await services.hub.start()
            expiry = asyncio.create_task(services.commerce.run_expiry())
            if services.payment_parts.delivery is not None:
                services.payment_parts.delivery.start()
            tune_gc()
            try:
                yield
            finally:
                expiry.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await bounded(expiry, "flash sale sweep")
                await bounded(services.payment_parts.close(), "payments")
                await bounded(services.commerce.close(), "commerce")
                await bounded(services.hub.stop(), "hub")
                await bounded(services.identity.drain(), "identity")
                await bounded(services.recommender.stop(), "recommender")

    # Offer routes before the session routes: /live/sessions/{id}/suggestions is theirs.
    routes: list[BaseRoute] = [
        *ROUTES, *IDENTITY_ROUTES, *OFFER_ROUTES, *SESSION_ROUTES, *COMMERCE_ROUTES,
        *MEDIA_ROUTES, *PAYMENT_ROUTES, OPENAPI_ROUTE, *page_routes(settings.static_dir),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(RequestTimer), Middleware(ConnectionLimiter),
                    Middleware(LiveSockets)],
        exception_handlers={
            LiveError: handle_error,
            IdentityError: handle_error,
            RecommenderError: handle_error,
            HTTPException: handle_http_error,
            **{store_error: handle_store_error for store_error in STORE_ERRORS},
            Exception: handle_unexpected,
        },
    )
    app.state.settings = settings
    return app
