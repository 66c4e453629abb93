"""Set-up of the video tests: a served site with ``newretail media`` beside it on its own
RTMP port, and ffmpeg publishing a small test picture (320x180, 10 fps, a keyframe a
second, at low priority: the machine is shared)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from live.media.ingest import ffmpeg_exe
from tests.browser_support import ENV, Site, serve_site
from tests.utils import free_port


@dataclass
class VideoSite:
    site: Site
    rtmp_port: int
    media_dir: Path
    media: subprocess.Popen[bytes]

    def rtmp(self, key: str) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/live/{key}"


def wait_for(condition: object, seconds: float, what: str) -> None:
    """Poll ``condition()`` until it is true, or fail naming ``what``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {seconds} s: {what}")


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@contextmanager
def serve_video_site(store_url: str, var_dir: Path) -> Iterator[VideoSite]:
    rtmp_port = free_port()
    before = os.environ.get("NEWRETAIL_RTMP_PORT")
    os.environ["NEWRETAIL_RTMP_PORT"] = str(rtmp_port)   # the web process says this port
    try:
        with serve_site(store_url, var_dir) as site:
            env = {**os.environ, **ENV, "NEWRETAIL_REDIS_URL": store_url,
                   "NEWRETAIL_VAR_DIR": str(var_dir), "NEWRETAIL_LOG_LEVEL": "INFO"}
            log = open(var_dir / "media.log", "wb")   # noqa: SIM115 - closed below
            media = subprocess.Popen(
                [sys.executable, "-m", "live.web.cli", "media", "--port", str(rtmp_port)],
                env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_for(lambda: _listening(rtmp_port) or media.poll() is not None, 20,
                         "newretail media listens")
                assert media.poll() is None, (var_dir / "media.log").read_text()
                yield VideoSite(site, rtmp_port, var_dir / "media", media)
            finally:
                media.terminate()
                try:
                    media.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    media.kill()
                    media.wait()
                log.close()
    finally:
        if before is None:
            os.environ.pop("NEWRETAIL_RTMP_PORT", None)
        else:
            os.environ["NEWRETAIL_RTMP_PORT"] = before


def publish(url: str, seconds: float = 60, title: str = "test") -> subprocess.Popen[bytes]:
    """ffmpeg publishing a moving test picture to ``url`` in real time."""
    return subprocess.Popen(
        ["nice", "-n", "10", ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-re",
         "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=10", "-t", str(seconds),
         "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "10",
         "-pix_fmt", "yuv420p", "-metadata", f"title={title}", "-f", "flv", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stderr is not None:
        process.stderr.close()
