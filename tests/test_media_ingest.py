"""Live video against real servers: ffmpeg publishes over RTMP to ``newretail media`` with
the session's key, the web process serves the HLS it writes, wrong keys and second
publishers are refused, a returning publisher continues the playlist, the end makes a VOD."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from live.db.client import connect
from live.hub.sessions import Sessions
from live.media.playlist import parse_media_playlist
from tests.browser_support import HOST, LINEUP, json_of
from tests.media_support import VideoSite, publish, serve_video_site, stop, wait_for

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def video(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VideoSite]:
    with serve_video_site(store_url, tmp_path_factory.mktemp("media-ingest")) as served:
        yield served


def _open(video: VideoSite, title: str) -> dict[str, object]:
    with video.site.http("host", HOST) as http:
        made: dict[str, object] = json_of(http.post(
            "/live/sessions", json={"title": title, "products": LINEUP}))
    return made


def _playlist(video: VideoSite, sid: str) -> str:
    r = httpx.get(f"{video.site.url}/media/{sid}/index.m3u8", timeout=5)
    return r.text if r.status_code == 200 else ""


def test_publish_with_the_key_makes_hls_and_wrong_keys_are_refused(video: VideoSite) -> None:
    """The session's key publishes: the playlist appears with segments, each with a
    program-date-time, the stream is live with a bitrate; a wrong key and a second
    publisher are refused while it runs."""
    made = _open(video, "Ingest test")
    sid = str(made["session_id"])
    ingest = made["ingest"]
    assert isinstance(ingest, dict)
    assert ingest["url"] == f"rtmp://127.0.0.1:{video.rtmp_port}/live"
    assert made["playback"] == {"hls": f"/media/{sid}/index.m3u8"}
    with httpx.Client(base_url=video.site.url, timeout=5) as anyone:
        seen = json_of(anyone.get(f"/live/sessions/{sid}"))
        assert seen["stream"] == {"state": "offline"} and "ingest" not in seen
        assert anyone.get(f"/live/sessions/{sid}/ingest").status_code == 401

    publisher = publish(video.rtmp(str(ingest["key"])))
    try:
        wait_for(lambda: len(parse_media_playlist(_playlist(video, sid))) >= 3, 30,
                 "three segments in the playlist")
        text = _playlist(video, sid)
        segments = parse_media_playlist(text)
        assert all(s.program_date_time for s in segments)
        assert "#EXT-X-ENDLIST" not in text
        r = httpx.get(f"{video.site.url}/media/{sid}/index.m3u8")
        assert r.headers["content-type"] == "application/vnd.apple.mpegurl"
        assert r.headers["cache-control"] == "public, max-age=1"
        seg = httpx.get(f"{video.site.url}/media/{sid}/{segments[0].uri}")
        assert seg.status_code == 200 and seg.headers["content-type"] == "video/mp2t"
        assert seg.content[:1] == b"\x47"   # an MPEG-TS sync byte
        assert "immutable" in seg.headers["cache-control"]
        wait_for(lambda: json_of(httpx.get(f"{video.site.url}/live/sessions/{sid}"))
                 ["stream"].get("bitrate", 0) > 10_000, 10, "a bitrate")

        wrong = publish(video.rtmp(f"{sid}-not-the-key"), seconds=5)
        second = publish(video.rtmp(str(ingest["key"])), seconds=5)
        try:
            assert wrong.wait(timeout=20) != 0
            assert second.wait(timeout=20) != 0
            assert wrong.stderr is not None and b"wrong stream key" in wrong.stderr.read()
            assert second.stderr is not None and b"already publishes" in second.stderr.read()
        finally:
            stop(wrong)
            stop(second)
        assert publisher.poll() is None, "the first publisher kept going"
    finally:
        stop(publisher)


def test_returning_publisher_continues_and_the_end_leaves_a_vod(
    video: VideoSite, store_url: str,
) -> None:
    """A publisher who drops and comes back continues the same playlist after a
    discontinuity; when the session ends the playlist becomes a VOD with every segment."""
    made = _open(video, "Comeback")
    sid, key = str(made["session_id"]), str(made["ingest"]["key"])  # type: ignore[index]
    first = publish(video.rtmp(key), seconds=3)
    try:
        assert first.wait(timeout=30) == 0
    finally:
        stop(first)
    wait_for(lambda: json_of(httpx.get(f"{video.site.url}/live/sessions/{sid}"))
             ["stream"]["state"] == "offline", 15, "offline after the publisher left")
    before = len(parse_media_playlist(_playlist(video, sid)))
    assert before >= 2
    again = publish(video.rtmp(key), seconds=60)
    try:
        wait_for(lambda: len(parse_media_playlist(_playlist(video, sid))) >= before + 2, 30,
                 "new segments after the return")
        assert "#EXT-X-DISCONTINUITY\n" in _playlist(video, sid)
        asyncio.run(_end(store_url, sid))   # what the host's `end` op does
        wait_for(lambda: "#EXT-X-ENDLIST" in _playlist(video, sid), 20, "the VOD playlist")
        assert again.wait(timeout=20) is not None   # let go by the media process
    finally:
        stop(again)
    text = _playlist(video, sid)
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in text
    segments = parse_media_playlist(text)
    assert segments[0].uri.startswith("p0001-") and segments[-1].uri.startswith("p0002-")
    r = httpx.get(f"{video.site.url}/media/{sid}/index.m3u8")
    assert r.headers["cache-control"] == "public, max-age=3600"


async def _end(store_url: str, sid: str) -> None:
    redis = connect(store_url)
    try:
        await Sessions(redis).end(sid)
    finally:
        await redis.aclose()


@pytest.mark.parametrize("path", [
    "/media/..%2f..%2fetc/passwd", "/media/s1/..%2f..%2fpyproject.toml",
    "/media/s1/p0001-00000.ts%00", "/media/s1/other.m3u8", "/media/%2e%2e/index.m3u8",
])
def test_no_path_traversal(video: VideoSite, path: str) -> None:
    """Only a session's playlist and segments are served, whatever the path says."""
    r = httpx.get(video.site.url + path, timeout=5)
    assert r.status_code == 404
