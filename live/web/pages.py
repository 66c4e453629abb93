"""The pages and their static files, served as they are (no build step): the home of
lives at ``/``, the viewer page, the presenter console, the store screen, the member page,
and a page for a live nobody knows (404).

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

from live.errors import LiveError

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
    """Routes for ``/``, ``/live/{id}``, ``/host/{id}``, ``/screen/{id}``, ``/me``, ``/static``
    and ``/favicon.ico`` (browsers ask for it whatever the page says)."""

    def page(name: str) -> Callable[[Request], Awaitable[Response]]:
        path = static_dir / name

        async def endpoint(request: Request) -> Response:
            return FileResponse(path, headers=SECURITY_HEADERS)

        return endpoint

    def session_page(name: str) -> Callable[[Request], Awaitable[Response]]:
        """A page of one live session: the 404 page when there is no such session."""
        path = static_dir / name

        async def endpoint(request: Request) -> Response:
            sessions = request.app.state.services.hub.sessions
            try:
                await sessions.get(request.path_params["session_id"])
            except LiveError as exc:
                if exc.status != 404:
                    raise
                return FileResponse(static_dir / "404.html", status_code=404,
                                    headers=SECURITY_HEADERS)
            return FileResponse(path, headers=SECURITY_HEADERS)

        return endpoint

    async def favicon(request: Request) -> Response:
        return FileResponse(static_dir / "favicon.svg", media_type="image/svg+xml",
                            headers={"cache-control": "public, max-age=86400"})

    return [
        Route("/favicon.ico", favicon),
        Route("/", page("index.html")),
        Route("/live/{session_id}", session_page("live.html")),
        Route("/host/{session_id}", session_page("host.html")),
        Route("/screen/{screen_id}", page("screen.html")),
        Route("/me", page("me.html")),
        Mount("/static", StaticFiles(directory=static_dir), name="static"),
    ]
