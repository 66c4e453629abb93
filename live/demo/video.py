"""The demo's video: the media server in a thread of the demo process, and ffmpeg pushing
a generated picture (a test pattern, a clock and the session's title) into its ingest
with the session's key, so a newcomer sees moving video and pins that land with it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import threading
from pathlib import Path
from typing import Any

from live.db.client import connect, text
from live.hub.keys import session_key
from live.hub.sessions import Sessions
from live.media.ingest import MediaServer, ffmpeg_exe
from live.media.streams import Streams

log = logging.getLogger("newretail.live")


def publisher_args(exe: str, url: str, title_file: Path | None) -> list[str]:
    """A small, cheap picture: 320x180 at 15 fps, a keyframe a second, ultrafast."""
    text_filters = ""
    if title_file is not None:
        text_filters = (
            f",drawtext=textfile={title_file}:fontcolor=white:fontsize=16:x=10:y=10"
            ":box=1:boxcolor=black@0.5:boxborderw=4"
            ",drawtext=text='%{localtime\\:%T}':fontcolor=white:fontsize=24"
            ":x=(w-tw)/2:y=h-th-12:box=1:boxcolor=black@0.5:boxborderw=4")
    return ["nice", "-n", "10", exe, "-hide_banner", "-loglevel", "error", "-re",
            "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=15" + text_filters,
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "15",
            "-pix_fmt", "yuv420p", "-f", "flv", url]


class DemoVideo:
    """Media server and publisher for ``newretail demo``."""

    def __init__(self, redis_url: str, rtmp_port: int, media_dir: Path) -> None:
        self.redis_url = redis_url
        self.media_dir = media_dir
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = rtmp_port
        self._thread = threading.Thread(target=self._run, name="demo-media", daemon=True)
        self._publisher: subprocess.Popen[bytes] | None = None
        self._stopped = False

    def start(self) -> None:
        self._thread.start()
        if not self.ready.wait(15):
            raise RuntimeError("the demo's media server did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.redis = connect(self.redis_url)
        self.server = MediaServer(self.redis, self.media_dir, Sessions(self.redis).is_live)
        self.port = self.loop.run_until_complete(self.server.start("127.0.0.1", self.port))
        self.ready.set()
        self.loop.run_forever()


    def publish(self, sid: str) -> None:
        """Start pushing the generated picture into session ``sid``'s ingest."""
        asyncio.run_coroutine_threadsafe(self._publish(sid), self.loop)

    async def _publish(self, sid: str) -> None:
        key = await Streams(self.redis).issue_key(sid)
        raw: Any = await self.redis.hget(session_key(sid), "title")
        folder = self.media_dir / sid   # never served: not a segment's name
        folder.mkdir(parents=True, exist_ok=True)
        title_file = folder / "title.txt"
        title_file.write_text(text(raw) if raw else sid)
        url = f"rtmp://127.0.0.1:{self.port}/live/{key}"
        exe = ffmpeg_exe()
        with_text: Path | None = title_file
        while not self._stopped:
            self._publisher = subprocess.Popen(
                publisher_args(exe, url, with_text), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            code = await asyncio.to_thread(self._publisher.wait)
            err = self._publisher.stderr.read() if self._publisher.stderr else b""
            if self.stopping():
                return
            log.warning("demo video: ffmpeg exited (%s): %s", code,
                        err.decode(errors="replace")[-300:])
            if b"drawtext" in err.lower() or b"font" in err.lower():
                with_text = None   # no fonts here: the pattern alone
            await asyncio.sleep(2)

    def stopping(self) -> bool:
        return self._stopped

    def stop(self) -> None:
        self._stopped = True
        if self._publisher is not None and self._publisher.poll() is None:
            self._publisher.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._publisher.wait(timeout=5)
        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(timeout=15)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
