"""Fixtures: a clean store per test (the embedded server, or ``REDIS_URL`` when set),
the app under Starlette's TestClient, and real servers for real-client tests."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import redis as redis_sync
import redis.asyncio as aredis
from starlette.testclient import TestClient

from live.db.client import connect
from live.db.server import EmbeddedValkey
from live.web.app import create_app
from live.web.settings import Settings

STORE_FIXTURES = {"store_url", "redis", "sync_redis", "settings", "client"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the store are marked ``store`` (CI reruns them on a real Redis)."""
    for item in items:
        if STORE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.store)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Garbage still uncollected at the end (the in-process app freezes the collector's
    generations, as a server does, so cycles from earlier tests' closed event loops can
    outlive them) is collected here and reported, not failed on: it belongs to no test,
    and a test that leaks while it runs still fails."""
    found: list[str] = []
    previous = sys.unraisablehook
    sys.unraisablehook = lambda u: found.append(f"{u.exc_value!r} in {u.object!r}")
    try:
        gc.unfreeze()
        gc.collect()
    finally:
        sys.unraisablehook = previous
    for line in found:
        print(f"\nleft at exit: {line}", file=sys.stderr)


@pytest.fixture(scope="session")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The store for this test run: ``REDIS_URL`` (never database 0) or an embedded one."""
    url = os.environ.get("REDIS_URL")
    if url:
        db = (urlparse(url).path or "/0").strip("/") or "0"
        if db == "0":
            raise pytest.UsageError("REDIS_URL must name a database of its own, not db 0")
        yield url
        return
    embedded = EmbeddedValkey(tmp_path_factory.mktemp("store"))
    url = embedded.start()
    try:
        yield url
    finally:
        embedded.stop()


@pytest.fixture
def sync_redis(store_url: str) -> Iterator[redis_sync.Redis]:
    """A synchronous client on a flushed store."""
    client = redis_sync.Redis.from_url(store_url)
    client.flushdb()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
async def redis(store_url: str, sync_redis: redis_sync.Redis) -> AsyncIterator[aredis.Redis]:
    """An async client on a flushed store."""
    client = connect(store_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def settings(store_url: str, sync_redis: redis_sync.Redis, tmp_path: Path) -> Settings:
    return Settings(redis_url=store_url, var_dir=tmp_path / "var", log_level="WARNING")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The app under TestClient (lifespan run), on a flushed store."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    """Debian's Chromium under Playwright (``make test`` installs it as root).

    One per module: Playwright's sync API keeps an event loop running on the main
    thread while it is open, which would break every later test that runs one."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"browser tests need chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
