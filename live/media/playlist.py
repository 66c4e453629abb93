"""HLS playlists as plain functions: read what ffmpeg writes for one publish (a *part*),
and write the session's playlist over every part.

A publisher who drops and comes back gets a new ffmpeg and a new part; the session's
``index.m3u8`` is every part in order with ``EXT-X-DISCONTINUITY`` between them, each
segment with its own ``EXT-X-PROGRAM-DATE-TIME`` (the wall clock when it was made, which
the page compares with the events' ``ts``). While live it holds the last ``LIVE_WINDOW``
segments; when the session ends it holds them all, as a VOD with ``EXT-X-ENDLIST``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

LIVE_WINDOW = 12
PART_NAME = re.compile(r"^p(\d{4})\.m3u8$")


@dataclass(frozen=True)
class Segment:
    uri: str
    duration: float
    program_date_time: str | None


def parse_media_playlist(text: str) -> list[Segment]:
    """The segments of a media playlist, in order."""
    segments: list[Segment] = []
    duration: float | None = None
    pdt: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#EXTINF:"):
            duration = float(line[len("#EXTINF:"):].split(",", 1)[0])
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            pdt = line.split(":", 1)[1]
        elif line and not line.startswith("#"):
            if duration is None:
                raise ValueError(f"segment {line!r} has no #EXTINF")
            segments.append(Segment(line, duration, pdt))
            duration, pdt = None, None
    return segments


def anchored(segments: Sequence[Segment], started: float) -> list[Segment]:
    """The part's segments with program-date-times counted from ``started``, the wall
    clock when its first frame reached the ingest.

    ffmpeg dates the first segment when it starts writing, after reading a second or so
    to learn the streams: its times run late by that much, and a page would think it is
    closer to live than it is.
    """
    if not segments or not segments[0].program_date_time:
        return list(segments)
    first = datetime.strptime(segments[0].program_date_time, "%Y-%m-%dT%H:%M:%S.%f%z")
    shift = started - first.timestamp()
    out = []
    for seg in segments:
        if seg.program_date_time:
            at = datetime.strptime(seg.program_date_time, "%Y-%m-%dT%H:%M:%S.%f%z")
            when = datetime.fromtimestamp(at.timestamp() + shift, UTC)
            seg = replace(seg, program_date_time=when.isoformat(timespec="milliseconds"))
        out.append(seg)
    return out


def compose(parts: Sequence[Sequence[Segment]], ended: bool,
            window: int = LIVE_WINDOW) -> str:
    """The session's playlist over ``parts`` (oldest first).

    Args:
        parts: the segments of each publish, in order.
        ended: a VOD of everything with ``EXT-X-ENDLIST``; otherwise a live window.
        window: how many segments a live playlist holds.
    """
    flat: list[tuple[bool, Segment]] = []
    for part in parts:
        flat.extend((i == 0, seg) for i, seg in enumerate(part))
    start = 0 if ended else max(0, len(flat) - window)
    # Discontinuities before (and at) the first segment shown are counted, not tagged.
    disc = sum(1 for i, (first, _) in enumerate(flat[:start + 1]) if first and i > 0)
    target = max([1, *(math.ceil(seg.duration - 0.001) for _, seg in flat)])
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{target}",
             f"#EXT-X-MEDIA-SEQUENCE:{start}", f"#EXT-X-DISCONTINUITY-SEQUENCE:{disc}"]
    if ended:
        lines.append("#EXT-X-PLAYLIST-TYPE:VOD")
    lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
    for i, (first, seg) in enumerate(flat[start:], start):
        if first and i > start:
            lines.append("#EXT-X-DISCONTINUITY")
        if seg.program_date_time:
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{seg.program_date_time}")
        lines += [f"#EXTINF:{seg.duration:.3f},", seg.uri]
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def part_numbers(folder: Path) -> list[int]:
    """The parts written in ``folder``, in order."""
    if not folder.is_dir():
        return []
    found = (PART_NAME.match(p.name) for p in folder.iterdir())
    return sorted(int(m.group(1)) for m in found if m)


def part_path(folder: Path, number: int) -> Path:
    return folder / f"p{number:04d}.m3u8"


def start_path(folder: Path, number: int) -> Path:
    """Where the part's first-frame wall clock is kept (see ``anchored``)."""
    return folder / f"p{number:04d}.start"


def write_index(folder: Path, ended: bool) -> str:
    """Compose ``index.m3u8`` from the folder's parts and replace it atomically."""
    parts = []
    for n in part_numbers(folder):
        try:
            segments = parse_media_playlist(part_path(folder, n).read_text())
        except FileNotFoundError:
            continue
        try:
            segments = anchored(segments, float(start_path(folder, n).read_text()))
        except (FileNotFoundError, ValueError):
            pass
        parts.append(segments)
    text = compose(parts, ended)
    tmp = folder / "index.m3u8.tmp"
    tmp.write_text(text)
    os.replace(tmp, folder / "index.m3u8")
    return text


def is_ended(folder: Path) -> bool:
    """Whether the folder's playlist is final (the session's recording)."""
    try:
        with open(folder / "index.m3u8", "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 32))
            return b"#EXT-X-ENDLIST" in f.read()
    except FileNotFoundError:
        return False
