"""``newretail media``: the media process, the RTMP ingest and its ffmpeg processes, until
SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal

from live.db.client import connect
from live.hub.sessions import Sessions
from live.media.ingest import MediaServer, ffmpeg_exe
from live.web.settings import Settings


async def serve_media(settings: Settings, host: str, port: int) -> None:
    if settings.redis_url is None:
        raise ValueError("newretail media needs the datastore the web process uses: set "
                         "NEWRETAIL_REDIS_URL (newretail demo runs its own media server)")
    redis = connect(settings.redis_url, settings.db_timeout)
    server = MediaServer(redis, settings.media_dir, Sessions(redis).is_live,
                         ffmpeg_exe(settings.ffmpeg))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await server.start(host, port)
        print(f"newretail media: rtmp://{host}:{port}/live, HLS in {settings.media_dir}",
              flush=True)
        await stop.wait()
    finally:
        await server.stop()
        with contextlib.suppress(Exception):
            await redis.aclose()


def run_media_process(settings: Settings, host: str, port: int | None) -> int:
    asyncio.run(serve_media(settings, host, settings.rtmp_port if port is None else port))
    return 0
