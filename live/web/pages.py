"""The four pages and their static files, served as they are (no build step).

Listed after the API routes: ``/live/sessions`` is an API route, every other
``/live/{id}`` is the viewer page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

# Pages must not be framed by other sites, and run only our own scripts.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data: blob:; media-src 'self' https: blob:; "
        "style-src 'self' 'unsafe-inline'; script-src 'self'; connect-src 'self'; "
        "frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


def page_routes(static_dir: Path) -> list[BaseRoute]:
    """Routes for ``/live/{id}``, ``/host/{id}``, ``/screen/{id}``, ``/me``, ``/static``
    and ``/favicon.ico`` (browsers ask for it whatever the page says)."""

    def page(name: str) -> Callable[[Request], Awaitable[Response]]:
        path = static_dir / name

        async def endpoint(request: Request) -> Response:
            return FileResponse(path, headers=SECURITY_HEADERS)

        return endpoint

    async def favicon(request: Request) -> Response:
        return FileResponse(static_dir / "favicon.svg", media_type="image/svg+xml",
                            headers={"cache-control": "public, max-age=86400"})

    return [
        Route("/favicon.ico", favicon),
        Route("/live/{session_id}", page("live.html")),
        Route("/host/{session_id}", page("host.html")),
        Route("/screen/{screen_id}", page("screen.html")),
        Route("/me", page("me.html")),
        Mount("/static", StaticFiles(directory=static_dir), name="static"),
    ]
