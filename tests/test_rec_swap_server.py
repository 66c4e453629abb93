"""Model versions hot-swapped in a running server while clients keep asking for offers,
and the trainer's watch loop retraining on new events."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import redis as redis_sync

from identity.tokens import KeyRing
from live.config import Settings
from live.store import connect
from recommender.model import current_version
from recommender.train import AlsParams
from recommender.trainer import train_from_log, watch_and_train
from recommender.types import Event
from tests.test_rec_service import PARAMS, seed
from tests.utils import run_server


def test_swap_in_running_server(settings: Settings, sync_redis: redis_sync.Redis) -> None:
    """A server picks up each new version (by notice) while 4 clients get offers: every
    request answers 200 and the served version moves on."""
    assert settings.redis_url is not None
    url, model_dir = settings.redis_url, settings.model_dir

    async def prepare() -> str:
        redis = connect(url)
        await seed(redis, time.time())
        version = (await train_from_log(redis, model_dir, PARAMS)).version
        await redis.aclose()
        return version

    first = asyncio.run(prepare())
    ring = KeyRing.load_or_create(settings.var_dir / "secrets" / "jwt-keys.json")
    host = {"authorization": f"Bearer {ring.issue('h', 'host', ttl=600)}"}
    with run_server(url, settings.var_dir) as server:
        statuses: list[int] = []
        versions: set[str] = set()
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(base_url=server.url, headers=host, timeout=10) as http:
                while not stop.is_set():
                    r = http.get("/offers", params={"n": 5})
                    statuses.append(r.status_code)
                    if r.status_code == 200:
                        versions.add(r.json()["model_version"])

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()

        async def retrain() -> str:
            redis = connect(url)
            latest = ""
            for _ in range(3):
                latest = (await train_from_log(redis, model_dir, PARAMS)).version
                await asyncio.sleep(0.3)
            await redis.aclose()
            return latest

        try:
            latest = asyncio.run(retrain())
            deadline = time.monotonic() + 15
            while latest not in versions:
                assert time.monotonic() < deadline, f"server kept {versions}"
                time.sleep(0.05)
        finally:
            stop.set()
            for t in threads:
                t.join()
    assert statuses and set(statuses) == {200}
    assert first in versions or len(versions) >= 2


async def test_watch_retrains_on_new_events(tmp_path: Path, store_url: str,
                                            sync_redis: redis_sync.Redis) -> None:
    """The watch loop trains at start, then again once enough new events arrived."""
    redis = connect(store_url)
    await seed(redis, time.time())
    model_dir = tmp_path / "models"
    runs: list[str] = []

    async def train() -> None:
        runs.append((await train_from_log(redis, model_dir, AlsParams(factors=4,
                                                                      iterations=2))).version)

    task = asyncio.create_task(watch_and_train(redis, model_dir, 50, 0.05, train))
    try:
        deadline = time.monotonic() + 20
        while not runs:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        from recommender.service import Recommender

        async def no(user: str) -> bool:
            return False
        rec = Recommender(redis, model_dir, no)
        await rec.record([Event(f"new{i}", "0001", "view", time.time()) for i in range(10)])
        await asyncio.sleep(0.3)
        assert len(runs) == 1, "ten events are below the threshold"
        await rec.record([Event(f"new{i}", "0002", "click", time.time()) for i in range(60)])
        while len(runs) < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert current_version(model_dir) == runs[-1]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await redis.aclose()
