"""The media core without sockets: AMF0, the RTMP server's handshake and commands, and the
session playlist over parts."""

from __future__ import annotations

from pathlib import Path

import pytest

from live.media import amf0
from live.media.playlist import Segment, compose, parse_media_playlist
from live.media.routes import media_file
from live.media.rtmp import (
    HANDSHAKE_SIZE,
    VIDEO,
    MediaTag,
    PublishRequested,
    RtmpError,
    RtmpServer,
    State,
    chunk,
    command,
)


def test_amf0_round_trip() -> None:
    """What we encode decodes to the same values."""
    values = ["connect", 1.0, {"app": "live", "n": 2.0, "ok": True}, None]
    assert amf0.decode_all(amf0.encode(*values)) == values


def _publisher_bytes(key: str) -> bytes:
    return (b"\x03" + bytes(HANDSHAKE_SIZE) + bytes(HANDSHAKE_SIZE)
            + command("connect", 1, {"app": "live"})
            + command("createStream", 2, None)
            + command("publish", 3, None, key, "live", stream_id=1))


def test_rtmp_publish_is_asked_then_media_become_flv_tags() -> None:
    """Handshake, connect, createStream and publish ask for the key; once accepted,
    a video message comes out as an FLV tag after the FLV header."""
    server = RtmpServer()
    events = server.receive(_publisher_bytes("sabc-secret"))
    assert events == [PublishRequested("live", "sabc-secret")]
    assert server.outgoing()[:1] == b"\x03"
    server.accept()
    assert b"NetStream.Publish.Start" in server.outgoing()
    frame = bytes(300)   # longer than the 128-byte default chunk: three chunks
    (tag,) = server.receive(chunk(6, VIDEO, frame, stream_id=1, chunk_size=128, timestamp=40))
    assert isinstance(tag, MediaTag) and tag.payload == 300
    assert tag.flv.startswith(b"FLV\x01") and tag.flv[13] == VIDEO


def test_rtmp_refuse_and_bad_version() -> None:
    """A refused publish says why and closes; a wrong version is an error."""
    server = RtmpServer()
    server.receive(_publisher_bytes("wrong"))
    server.refuse("NetStream.Publish.BadName", "wrong stream key")
    assert b"wrong stream key" in server.outgoing() and server.state is State.CLOSED
    with pytest.raises(RtmpError, match="version 3"):
        RtmpServer().receive(b"\x06" + bytes(HANDSHAKE_SIZE))


def _segs(prefix: str, n: int) -> list[Segment]:
    return [Segment(f"{prefix}-{i:05d}.ts", 1.0, f"2026-12-08T03:00:{i:02d}.000+00:00")
            for i in range(n)]


def test_live_window_counts_sequence_and_discontinuities() -> None:
    """A live playlist holds the last segments, with the media and discontinuity
    sequences of what it dropped; the ended one holds all with ENDLIST."""
    parts = [_segs("p0001", 10), _segs("p0002", 5)]
    live = compose(parts, ended=False, window=8)
    assert "#EXT-X-MEDIA-SEQUENCE:7" in live and "#EXT-X-DISCONTINUITY-SEQUENCE:0" in live
    assert live.count("#EXT-X-DISCONTINUITY\n") == 1 and "ENDLIST" not in live
    assert len(parse_media_playlist(live)) == 8
    later = compose(parts, ended=False, window=4)
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:1" in later and "#EXT-X-DISCONTINUITY\n" not in later
    vod = compose(parts, ended=True)
    assert vod.rstrip().endswith("#EXT-X-ENDLIST") and "#EXT-X-PLAYLIST-TYPE:VOD" in vod
    assert len(parse_media_playlist(vod)) == 15


@pytest.mark.parametrize("sid,name", [
    ("..", "index.m3u8"), ("s1", "../index.m3u8"), ("s1", "p0001.m3u8"), ("s1", "title.txt"),
    ("s1", "p0001-00000.ts/.."),
])
def test_media_file_names_only_playlists_and_segments(
    tmp_path: Path, sid: str, name: str,
) -> None:
    """Names outside the session's playlist and segments are never files."""
    (tmp_path / "s1").mkdir()
    (tmp_path / "s1" / "title.txt").write_text("x")
    assert media_file(tmp_path, sid, name) is None
