"""A live stream for the load test without a publisher: HLS segments written into the
session's media folder at a fixed bitrate, one a segment duration, with the playlist the
media process would compose (``live.media.playlist``).

Why not ``newretail media`` and ffmpeg: what the load test measures is the web process
serving the playlist and segments while the sale runs. An encoder (ffmpeg with x264) and
the RTMP ingest would take a share of the same two cores that the service and Locust
need, and their cost would show as the web process's. The web process serves files from
``var/media/{session_id}/`` whatever wrote them, so synthetic segments of the right size
and a playlist of the right shape cost it what real ones do. The bytes are MPEG-TS
packets (188 bytes, sync byte 0x47) of padding: a player would not decode them, Locust
does not try.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

from live.media.playlist import Segment, compose

TS_PACKET = 188
# A null packet (PID 0x1FFF): the padding a multiplexer writes.
NULL_PACKET = bytes((0x47, 0x1F, 0xFF, 0x10)) + b"\xff" * (TS_PACKET - 4)
DEFAULT_KBIT = 500


def segment_bytes(kbit_per_s: int, seconds: float) -> bytes:
    """One segment of ``seconds`` at ``kbit_per_s``, whole TS packets (pure)."""
    packets = max(1, round(kbit_per_s * 1000 / 8 * seconds / TS_PACKET))
    return NULL_PACKET * packets


def segment_name(number: int) -> str:
    """The name the media process gives the ``number``-th segment of the first publish."""
    return f"p0001-{number:05d}.ts"


def live_playlist(first: int, last: int, seconds: float, started: float) -> str:
    """The live playlist of segments ``first``..``last`` (pure): the media process's
    composition, program-date-times a segment apart from ``started``."""
    from datetime import UTC, datetime

    segments = [
        Segment(segment_name(n), seconds,
                datetime.fromtimestamp(started + n * seconds, UTC).isoformat(
                    timespec="milliseconds"))
        for n in range(first, last + 1)]
    text = compose([segments], ended=False, window=len(segments))
    # compose counts the sequence from the segments it is given: these start at ``first``.
    return text.replace("#EXT-X-MEDIA-SEQUENCE:0\n", f"#EXT-X-MEDIA-SEQUENCE:{first}\n", 1)


class SyntheticStream:
    """Writes a segment every ``seconds`` into ``folder`` and the playlist after it (the
    last ``window`` segments), deleting older ones; a thread of the runner's process."""

    def __init__(self, folder: Path, kbit_per_s: int = DEFAULT_KBIT, seconds: float = 1.0,
                 window: int = 12, keep: int = 30) -> None:
        self.folder = folder
        self.seconds = seconds
        self.window = window
        self.keep = keep
        self.payload = segment_bytes(kbit_per_s, seconds)
        self.written = 0
        self.started = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def write_next(self) -> None:
        """One more segment, then the playlist that lists it."""
        n = self.written
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{segment_name(n)}.tmp"
        tmp.write_bytes(self.payload)
        os.replace(tmp, self.folder / segment_name(n))
        text = live_playlist(max(0, n - self.window + 1), n, self.seconds, self.started)
        tmp = self.folder / "index.m3u8.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.folder / "index.m3u8")
        if n >= self.keep:
            with contextlib.suppress(FileNotFoundError):
                (self.folder / segment_name(n - self.keep)).unlink()
        self.written = n + 1

    def _run(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            self.write_next()
            due += self.seconds
            self._stop.wait(max(0.0, due - time.monotonic()))

    def start(self, preroll: int = 3) -> None:
        """``preroll`` segments at once (a player starts three from the live edge), then
        one a segment duration."""
        for _ in range(preroll):
            self.write_next()
        self._thread = threading.Thread(target=self._run, name="synthetic-hls", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
