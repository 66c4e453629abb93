"""The media process: an RTMP front that checks stream keys, and one ffmpeg per
publishing session that writes HLS.

Each connection is pumped through the sans-I/O ``RtmpServer``. A publish is accepted when
the key is the session's, the session is live and nobody else publishes it (a claim in
the datastore, refreshed with the bitrate while media flows); the audio and video then go to
ffmpeg as FLV on its standard input, copied (not re-encoded) into ~1 s segments, so the
segment length follows the publisher's keyframe interval (1 s in OBS is right).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aredis

from live.media import playlist
from live.media.rtmp import MediaTag, PublishRequested, RtmpError, RtmpServer, Unpublished
from live.media.streams import CLAIM_TTL, Streams

log = logging.getLogger("newretail.live")

APP = "live"
IDLE_SECONDS = 30.0          # a connection silent this long is closed
HEARTBEAT = 1.0
BITRATE_WINDOW = 3.0
SEGMENT_SECONDS = 1


def ffmpeg_exe(override: str = "") -> str:
    """The ffmpeg that the imageio-ffmpeg wheel ships, unless ``override`` names another
    (``NEWRETAIL_FFMPEG``)."""
    if override:
        return override
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def hls_args(exe: str, folder: Path, part: int) -> list[str]:
    """ffmpeg reading FLV on stdin and writing one part of the session's HLS, at low
    priority (``nice``): it copies, so it needs little CPU, but the web process comes first."""
    return [
        "nice", "-n", "10", exe, "-hide_banner", "-loglevel", "error",
        "-analyzeduration", "1000000", "-f", "flv", "-i", "pipe:0",
        "-map", "0", "-c", "copy",
        "-f", "hls", "-hls_time", str(SEGMENT_SECONDS), "-hls_list_size", "0",
        "-hls_flags", "program_date_time+independent_segments+omit_endlist+temp_file",
        "-hls_segment_filename", str(folder / f"p{part:04d}-%05d.ts"),
        str(playlist.part_path(folder, part)),
    ]


class Refused(Exception):
    """A publish that is not allowed; ``code`` is the RTMP status code sent back."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Publisher:
    """One accepted publish: its ffmpeg, its claim, its bitrate and the playlist."""

    def __init__(self, server: MediaServer, sid: str, owner: str, conn: str) -> None:
        self.server = server
        self.sid = sid
        self.owner = owner
        self.conn = conn
        self.folder = server.media_dir / sid
        self.since = time.time()
        self._t0 = time.monotonic()
        self.session_ended = False
        self._bytes: deque[tuple[float, int]] = deque()
        self._proc: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    @property
    def stopping(self) -> asyncio.Event:
        return self._stop

    async def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        part = max(playlist.part_numbers(self.folder), default=0) + 1
        self._part_path = playlist.part_path(self.folder, part)
        self._start_path = playlist.start_path(self.folder, part)
        self._first_seen = False
        self._proc = await asyncio.create_subprocess_exec(
            *hls_args(self.server.ffmpeg, self.folder, part),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        log.info("conn %s: session %s publishes, part %d (ffmpeg %d)", self.conn, self.sid,
                 part, self._proc.pid)
        self._tasks = [asyncio.create_task(self._heartbeat()),
                       asyncio.create_task(self._playlist()),
                       asyncio.create_task(self._ffmpeg_errors())]

    async def write(self, tag: MediaTag) -> None:
        if self._proc is None or self._proc.stdin is None:
            return
        if not self._first_seen and tag.payload:
            self._first_seen = True
            self._start_path.write_text(repr(time.time()))
        self._bytes.append((time.monotonic(), tag.payload))
        self._proc.stdin.write(tag.flv)
        await self._proc.stdin.drain()

    def bitrate(self) -> int:
        now = time.monotonic()
        while self._bytes and self._bytes[0][0] < now - BITRATE_WINDOW:
            self._bytes.popleft()
        span = min(BITRATE_WINDOW, max(0.5, now - self._t0))
        return int(sum(n for _, n in self._bytes) * 8 / span)

    async def _heartbeat(self) -> None:
        streams = self.server.streams
        while True:
            await asyncio.sleep(HEARTBEAT)
            try:
                if not await streams.refresh(self.sid, self.owner, self.bitrate(), self.since):
                    if not await streams.claim(self.sid, self.owner):
                        log.warning("conn %s: session %s is published by someone else now",
                                    self.conn, self.sid)
                        self._stop.set()
                        return
                if not await self.server.session_live(self.sid):
                    log.info("conn %s: session %s ended; the publisher is let go",
                             self.conn, self.sid)
                    self.session_ended = True
                    self._stop.set()
                    return
            except Exception as exc:   # the datastore is away: keep streaming, say it
                log.warning("conn %s: stream heartbeat failed: %s", self.conn, exc)

    async def _playlist(self) -> None:
        seen = 0.0
        while True:
            await asyncio.sleep(0.25)
            try:
                mtime = self._part_path.stat().st_mtime
            except FileNotFoundError:
                continue
            if mtime != seen:
                seen = mtime
                await asyncio.to_thread(playlist.write_index, self.folder, False)

    async def _ffmpeg_errors(self) -> None:
        if self._proc is None or self._proc.stderr is None:
            return
        async for line in self._proc.stderr:
            log.warning("conn %s: ffmpeg: %s", self.conn, line.decode(errors="replace").rstrip())

    async def finish(self) -> None:
        """Let ffmpeg write its last segment, then update the playlist and the claim."""
        if self._proc is not None:
            if self._proc.stdin is not None:
                with contextlib.suppress(ConnectionError):
                    self._proc.stdin.close()
            try:
                await asyncio.wait_for(self._proc.wait(), 10)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        ended = self.session_ended or not await self.server.session_live(self.sid)
        await asyncio.to_thread(playlist.write_index, self.folder, ended)
        with contextlib.suppress(Exception):
            await self.server.streams.release(self.sid, self.owner)
        log.info("conn %s: session %s stops publishing%s", self.conn, self.sid,
                 "; its recording is final" if ended else "")


class MediaServer:
    """The RTMP front and its publishers.

    Args:
        redis: the datastore, shared with the web process.
        media_dir: where each session's HLS is written (``<media_dir>/<session id>/``).
    """

    def __init__(
        self, redis: aredis.Redis, media_dir: Path,
        session_live: Callable[[str], Awaitable[bool]], ffmpeg: str | None = None,
    ) -> None:
        """Args:
            session_live: whether a session is live (``live.hub.sessions`` knows); a
                publish to an ended session is refused, and a live one ends with it.
        """
        self.redis = redis
        self.session_live = session_live
        self.streams = Streams(redis)
        self.media_dir = media_dir
        self.ffmpeg = ffmpeg or ffmpeg_exe()
        self.publishers: dict[str, Publisher] = {}
        self.instance = secrets.token_hex(4)
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the port (``port`` 0 picks one)."""
        self.media_dir.mkdir(parents=True, exist_ok=True)
        self._server = await asyncio.start_server(self._serve, host, port)
        self._sweeper = asyncio.create_task(self._sweep())
        bound = int(self._server.sockets[0].getsockname()[1])
        log.info("media: RTMP ingest on rtmp://%s:%d/%s, HLS under %s", host, bound, APP,
                 self.media_dir)
        return bound

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _decide(self, request: PublishRequested) -> str:
        if request.app != APP:
            raise Refused("NetStream.Publish.BadName", f"publish to /{APP}, not /{request.app}")
        sid = await self.streams.key_matches(request.key)
        if sid is None:
            raise Refused("NetStream.Publish.BadName", "wrong stream key")
        if not await self.session_live(sid):
            raise Refused("NetStream.Publish.BadName", "the session has ended")
        if sid in self.publishers:
            raise Refused("NetStream.Publish.BadName", "someone already publishes this session")
        return sid

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        conn = secrets.token_hex(4)
        rtmp = RtmpServer()
        publisher: Publisher | None = None
        try:
            while True:
                read = asyncio.ensure_future(reader.read(65536))
                waits: set[asyncio.Future[Any]] = {read}
                stop = None
                if publisher is not None:
                    stop = asyncio.ensure_future(publisher.stopping.wait())
                    waits.add(stop)
                done, _ = await asyncio.wait(waits, timeout=IDLE_SECONDS,
                                             return_when=asyncio.FIRST_COMPLETED)
                if stop is not None and not stop.done():
                    stop.cancel()
                if read not in done:
                    read.cancel()
                    break   # silent too long, or the session ended
                data = read.result()
                if not data:
                    break
                events = rtmp.receive(data)
                for event in events:
                    if isinstance(event, PublishRequested):
                        publisher = await self._publish(conn, rtmp, event)
                    elif isinstance(event, MediaTag) and publisher is not None:
                        await publisher.write(event)
                    elif isinstance(event, Unpublished):
                        break
                out = rtmp.outgoing()
                if out:
                    writer.write(out)
                    await writer.drain()
                if publisher is None and rtmp.state.value == "closed":
                    break
                if any(isinstance(e, Unpublished) for e in events):
                    break
        except Refused as exc:
            log.warning("conn %s: publish refused: %s", conn, exc.reason)
            rtmp.refuse(exc.code, exc.reason)
            with contextlib.suppress(ConnectionError):
                writer.write(rtmp.outgoing())
                await writer.drain()
        except RtmpError as exc:
            log.warning("conn %s: RTMP: %s", conn, exc)
        except (ConnectionError, BrokenPipeError) as exc:
            log.info("conn %s: connection lost: %s", conn, exc)
        finally:
            if publisher is not None:
                self.publishers.pop(publisher.sid, None)
                await publisher.finish()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._connections.discard(task)

    async def _publish(self, conn: str, rtmp: RtmpServer, request: PublishRequested) -> Publisher:
        sid = await self._decide(request)
        owner = f"{self.instance}:{conn}"
        # A claim left by a publisher this process lost (no refresh) lapses within
        # CLAIM_TTL; anyone else's is a second publisher.
        if not await self.streams.claim(sid, owner):
            raise Refused("NetStream.Publish.BadName", "someone already publishes this session")
        publisher = Publisher(self, sid, owner, conn)
        self.publishers[sid] = publisher
        try:
            await publisher.start()
        except Exception:
            self.publishers.pop(sid, None)
            await self.streams.release(sid, owner)
            raise
        rtmp.accept()
        return publisher

    async def _sweep(self) -> None:
        """Make the playlists of ended sessions final when nobody publishes them."""
        while True:
            await asyncio.sleep(2 * HEARTBEAT)
            try:
                for folder in self.media_dir.iterdir():
                    sid = folder.name
                    if (sid in self.publishers or not folder.is_dir()
                            or playlist.is_ended(folder) or not playlist.part_numbers(folder)):
                        continue
                    if not await self.session_live(sid):
                        await asyncio.to_thread(playlist.write_index, folder, True)
                        log.info("media: session %s ended; its recording is final", sid)
            except Exception as exc:
                log.warning("media: sweep failed: %s", exc)


__all__ = ["CLAIM_TTL", "MediaServer", "Refused", "hls_args"]
