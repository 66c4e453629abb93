"""The web process's side of video: the playlist and segments under ``/media``, and the
stream's ingest, playback and state in the session's answers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from live.errors import not_found
from live.http import json_response, require_session_host
from live.media.streams import Streams, StreamView
from live.types import HostedSession, SessionDirectory

SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SEGMENT = re.compile(r"^p\d{4}-\d{5}\.ts$")
PLAYLIST = "index.m3u8"
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_TYPE = "video/mp2t"
# A live playlist changes every segment; a CDN may keep it a second. Segments never change.
LIVE_PLAYLIST_CACHE = "public, max-age=1"
ENDED_PLAYLIST_CACHE = "public, max-age=3600"
SEGMENT_CACHE = "public, max-age=31536000, immutable"


def playback(sid: str) -> dict[str, str]:
    return {"hls": f"/media/{sid}/{PLAYLIST}"}


def _streams(request: Request) -> Streams:
    state = request.app.state
    found: Streams | None = getattr(state, "media_streams", None)
    if found is None:
        found = Streams(request.app.state.services.redis)
        state.media_streams = found
    return found


def ingest_url(request: Request) -> str:
    """Where a host points OBS: ``NEWRETAIL_RTMP_URL``, or this host's RTMP port."""
    settings = request.app.state.settings
    if settings.rtmp_url:
        return str(settings.rtmp_url)
    return f"rtmp://{request.url.hostname or '127.0.0.1'}:{settings.rtmp_port}/live"


async def ingest(request: Request, sid: str) -> dict[str, str]:
    """The ingest URL and the session's stream key (for its host only)."""
    return {"url": ingest_url(request), "key": await _streams(request).issue_key(sid)}


async def stream_view(request: Request, sid: str) -> StreamView:
    return await _streams(request).view(sid)


async def session_video(request: Request, sid: str) -> dict[str, Any]:
    """What ``GET /live/sessions/{id}`` adds: playback for everyone and the stream state."""
    return {"playback": playback(sid), "stream": await stream_view(request, sid)}


async def get_ingest(request: Request) -> Response:
    sessions: SessionDirectory[HostedSession] = request.app.state.services.hub.sessions
    _, info = await require_session_host(request, "read the stream key of", sessions)
    return json_response({"ingest": await ingest(request, info.id),
                          "playback": playback(info.id),
                          "stream": await stream_view(request, info.id)})


def media_file(media_dir: Path, sid: str, name: str) -> Path | None:
    """The file ``/media/{sid}/{name}`` names, or None: only a session's playlist and its
    segments, never a path of the caller's making."""
    if not SESSION_ID.match(sid) or not (name == PLAYLIST or SEGMENT.match(name)):
        return None
    path = media_dir / sid / name
    return path if path.is_file() else None


async def get_media(request: Request) -> Response:
    settings = request.app.state.settings
    sid, name = request.path_params["session_id"], request.path_params["name"]
    path = media_file(settings.media_dir, sid, name)
    if path is None:
        raise not_found(f"media {sid}/{name}")
    if name == PLAYLIST:
        body = path.read_bytes()
        cache = ENDED_PLAYLIST_CACHE if b"#EXT-X-ENDLIST" in body[-64:] else LIVE_PLAYLIST_CACHE
        return Response(body, media_type=PLAYLIST_TYPE, headers={"cache-control": cache})
    return FileResponse(path, media_type=SEGMENT_TYPE, headers={"cache-control": SEGMENT_CACHE})


ROUTES = [
    Route("/live/sessions/{session_id}/ingest", get_ingest, methods=["GET"]),
    Route("/media/{session_id}/{name}", get_media, methods=["GET"]),
]
