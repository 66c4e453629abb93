"""Model versions hot-swapped in a running server while clients keep asking for offers,
and the trainer's watch loop retraining on new events."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis as redis_sync

from identity.members import Members
from identity.tokens import KeyRing
from live.db.client import connect
from live.web.settings import Settings
from recommender.events import EventLog
from recommender.model import current_version, read_version
from recommender.service import Recommender
from recommender.train import AlsParams
from recommender.trainer import train_from_log, watch_and_train
from recommender.types import Event
from tests.rec_support import PARAMS, seed, sku
from tests.utils import run_server, wait_until, wait_until_sync


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
                await asyncio.sleep(0.3)  # versions apart in time, as retrains come: the scenario
            await redis.aclose()
            return latest

        try:
            latest = asyncio.run(retrain())
            wait_until_sync(lambda: latest in versions,
                            f"the server serving {latest} (it kept {versions})", 15, 0.05)
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
        await wait_until(lambda: bool(runs), "the first training run", 20, 0.02)
        from recommender.service import Recommender

        async def no(users: object) -> set[str]:
            return set()
        rec = Recommender(redis, model_dir, no)
        await rec.record([Event(f"new{i}", "0001", "view", time.time()) for i in range(10)])
        # Nothing should happen: let six of the watcher's 0.05 s polls pass, then look.
        await asyncio.sleep(0.3)
        assert len(runs) == 1, "ten events are below the threshold"
        await rec.record([Event(f"new{i}", "0002", "click", time.time()) for i in range(60)])
        await wait_until(lambda: len(runs) >= 2, "the second training run", 20, 0.02)
        assert current_version(model_dir) == runs[-1]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await redis.aclose()


def _gauge(server_url: str, name: str) -> float:
    for line in httpx.get(f"{server_url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def _until(check: Callable[[], bool], what: str, seconds: float = 15) -> None:
    wait_until_sync(check, what, seconds, 0.05)


def test_erasure_reaches_every_web_process(settings: Settings,
                                           sync_redis: redis_sync.Redis) -> None:
    """Two web processes serve a member's personal offers; the member is erased through
    one: the other drops their factors, refuses their late event, and the next model has
    nothing of them."""
    assert settings.redis_url is not None
    url, model_dir = settings.redis_url, settings.model_dir

    async def prepare() -> str:
        redis = connect(url)
        await seed(redis, time.time())
        m = await Members(redis, b"unused-pepper-0123456789abcdef").create(
            "Eve Gone", consent={"personalization": True})
        rec = Recommender(redis, model_dir, _never)
        await rec.record([Event(m.id, sku(2, i), "purchase", time.time() - 3600)
                          for i in range(5)])
        await train_from_log(redis, model_dir, PARAMS)
        await redis.aclose()
        return str(m.id)

    mid = asyncio.run(prepare())
    ring = KeyRing.load_or_create(settings.var_dir / "secrets" / "jwt-keys.json")
    admin = {"authorization": f"Bearer {ring.issue('root', 'admin', ttl=600)}"}
    with run_server(url, settings.var_dir) as one, run_server(url, settings.var_dir) as two:
        users = _gauge(two.url, "newretail_rec_model_users")
        body = httpx.get(f"{two.url}/offers", params={"member_id": mid, "n": 5},
                         headers=admin).json()
        assert body["personalized"] is True and body["offers"][0]["reason"] == "buy_again"
        r = httpx.delete(f"{one.url}/identity/members/{mid}", headers=admin, timeout=10)
        assert r.status_code == 200, r.text
        _until(lambda: _gauge(two.url, "newretail_rec_model_users") == users - 1,
               "the second process kept the erased member's factors")
        assert _gauge(one.url, "newretail_rec_model_users") == users - 1
        late = httpx.post(f"{two.url}/events", headers=admin,
                          json=[{"member_id": mid, "sku": sku(2, 1), "kind": "view"}])
        assert late.status_code == 202 and late.json() == {"recorded": 0, "refused": 1}
        assert httpx.get(f"{two.url}/offers", params={"member_id": mid},
                         headers=admin).status_code == 404

    async def after() -> tuple[list[str], list[str]]:
        redis = connect(url)
        users_in_log = [e.user async for _, e in EventLog(redis).read()]
        version = (await train_from_log(redis, model_dir, PARAMS)).version
        await redis.aclose()
        return users_in_log, read_version(model_dir, version).user_ids

    in_log, in_model = asyncio.run(after())
    assert mid not in in_log and mid not in in_model and "u2-0" in in_model
    assert not sync_redis.exists(f"nr:rec:hist:{mid}", f"nr:rec:ev:{mid}")


@pytest.mark.parametrize("damage", ["truncate index", "remove factors"])
def test_unreadable_version_keeps_previous_serving(settings: Settings,
                                                   sync_redis: redis_sync.Redis,
                                                   damage: str) -> None:
    """A new version whose files are damaged or missing is refused: the server goes on
    serving the previous one and readiness says why; the next good version is taken."""
    assert settings.redis_url is not None
    url, model_dir = settings.redis_url, settings.model_dir

    async def train() -> str:
        redis = connect(url)
        if not await redis.exists("nr:events"):
            await seed(redis, time.time())
        version = (await train_from_log(redis, model_dir, PARAMS)).version
        await redis.aclose()
        return version

    first = asyncio.run(train())
    ring = KeyRing.load_or_create(settings.var_dir / "secrets" / "jwt-keys.json")
    host = {"authorization": f"Bearer {ring.issue('h', 'host', ttl=600)}"}
    with run_server(url, settings.var_dir) as server:
        assert httpx.get(f"{server.url}/readyz").json()["checks"]["model"] == first
        staging = settings.var_dir / "staging"
        bad = asyncio.run(_train_into(url, staging))
        if damage == "truncate index":
            index = staging / bad / "items.faiss"
            index.write_bytes(index.read_bytes()[:100])
        else:
            (staging / bad / "user_factors.npy").unlink()
        shutil.move(staging / bad, model_dir / bad)
        (model_dir / "current").write_text(bad)
        sync_redis.publish("nr:rec:notice", b'{"model": "%s"}' % bad.encode())
        _until(lambda: bad in str(httpx.get(f"{server.url}/readyz").json()["checks"]),
               "readiness does not report the unreadable version")
        ready = httpx.get(f"{server.url}/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"]["model"] == first
        for _ in range(5):
            r = httpx.get(f"{server.url}/offers", params={"n": 3}, headers=host)
            assert r.status_code == 200 and r.json()["model_version"] == first
            assert len(r.json()["offers"]) == 3
        good = asyncio.run(train())
        _until(lambda: httpx.get(f"{server.url}/readyz").json()["checks"].get("model") == good,
               "the next good version was not loaded")
        assert "model_error" not in httpx.get(f"{server.url}/readyz").json()["checks"]


async def _train_into(url: str, model_dir: Path) -> str:
    """A version written to a directory no server watches (to damage it before it goes
    live)."""
    redis = connect(url)
    try:
        return (await train_from_log(redis, model_dir, PARAMS)).version
    finally:
        await redis.aclose()


async def _never(users: object) -> set[str]:
    return set()
