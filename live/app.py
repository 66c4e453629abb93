"""The app factory: one Starlette app wiring identity, recommender and live."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from identity.errors import IdentityError
from identity.routes import ROUTES as IDENTITY_ROUTES
from live.commerce_routes import ROUTES as COMMERCE_ROUTES
from live.config import Settings
from live.errors import LiveError, handle_error, handle_http_error, handle_unexpected
from live.metrics import RequestTimer
from live.offers import ROUTES as OFFER_ROUTES
from live.pages import page_routes
from live.routes import ROUTES
from live.services import open_services
from live.session_routes import LIVE_ROUTES
from live.ws import LiveSockets
from recommender.types import RecommenderError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(level: str) -> None:
    """One handler on the root; each package logs under ``newretail.<package>``."""
    logging.basicConfig(level=level, format=LOG_FORMAT)
    for name in ("newretail.live", "newretail.identity", "newretail.recommender"):
        logging.getLogger(name).setLevel(level)


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the app; the store is opened when the app starts (its lifespan).

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
            try:
                yield
            finally:
                expiry.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await expiry
                await services.commerce.close()
                await services.hub.stop()
                await services.identity.drain()
                await services.recommender.stop()

    # Offer routes before the session routes: /live/sessions/{id}/suggestions is theirs.
    routes: list[BaseRoute] = [
        *ROUTES, *IDENTITY_ROUTES, *OFFER_ROUTES, *LIVE_ROUTES, *COMMERCE_ROUTES,
        *page_routes(settings.static_dir),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(RequestTimer), Middleware(LiveSockets)],
        exception_handlers={
            LiveError: handle_error,
            IdentityError: handle_error,
            RecommenderError: handle_error,
            HTTPException: handle_http_error,
            Exception: handle_unexpected,
        },
    )
    app.state.settings = settings
    return app
