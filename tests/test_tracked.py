"""The process's copy of store values (``live.tracked``) against a real store: what the
store announces is dropped, a read that raced a write keeps nothing, and nothing is kept
while the announcements are down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aredis

from live.db.tracked import CLIENT_NAME, MISSING, Tracked


async def until(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Wait for ``check`` to hold (the store's announcement to arrive), at most ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.002)


@pytest.fixture
async def copy(store_url: str, redis: aredis.Redis) -> AsyncIterator[Tracked]:
    tracked = Tracked(store_url, ["tt:a:", "tt:b:"], max_keys=3)
    await tracked.start(wait=5.0)
    assert tracked.live
    try:
        yield tracked
    finally:
        await tracked.stop()


def keep(copy: Tracked, key: str, value: object) -> None:
    copy.end([key], copy.begin([key]), {key: value})


async def test_a_write_to_a_held_key_drops_it(copy: Tracked, redis: aredis.Redis) -> None:
    keep(copy, "tt:a:1", "old")
    keep(copy, "tt:b:1", "other")
    assert copy.get("tt:a:1") == "old"
    await redis.set("tt:a:1", "new")
    await until(lambda: copy.get("tt:a:1") is MISSING, "tt:a:1 dropped")
    assert copy.get("tt:b:1") == "other"


async def test_a_script_write_and_a_hash_write_drop_too(copy: Tracked,
                                                        redis: aredis.Redis) -> None:
    keep(copy, "tt:a:1", 1)
    keep(copy, "tt:b:2", 2)
    await redis.eval("redis.call('HINCRBY', KEYS[1], 'f', 1)", 1, "tt:a:1")  # type: ignore[misc]
    await redis.hset("tt:b:2", "f", "1")
    await until(lambda: len(copy) == 0, "both dropped")


async def test_writes_outside_the_prefixes_drop_nothing(copy: Tracked,
                                                        redis: aredis.Redis) -> None:
    keep(copy, "tt:a:1", "kept")
    seen = copy.announced
    await redis.set("tt:c:1", "x")  # not announced
    await redis.set("tt:b:9", "x")  # announced after it: once this arrives, so has any other
    await until(lambda: copy.announced > seen, "tt:b:9 announced")
    assert copy.announced == seen + 1
    assert copy.get("tt:a:1") == "kept"


async def test_a_read_that_raced_a_write_keeps_nothing(copy: Tracked,
                                                       redis: aredis.Redis) -> None:
    began = copy.begin(["tt:a:1"])
    seen = copy.announced
    await redis.set("tt:a:1", "new")  # written while the read of the old value is under way
    await until(lambda: copy.announced > seen, "tt:a:1 announced")
    copy.end(["tt:a:1"], began, {"tt:a:1": "old"})
    assert copy.get("tt:a:1") is MISSING
    keep(copy, "tt:a:1", "new")  # a read begun after the write keeps what it read
    assert copy.get("tt:a:1") == "new"


async def test_a_failed_read_leaves_nothing_behind(copy: Tracked) -> None:
    began = copy.begin(["tt:a:1", "tt:a:1"])
    copy.end(["tt:a:1", "tt:a:1"], began, {})
    assert copy.get("tt:a:1") is MISSING
    keep(copy, "tt:a:1", "v")
    assert copy.get("tt:a:1") == "v"


async def test_a_flush_drops_everything(copy: Tracked, redis: aredis.Redis) -> None:
    keep(copy, "tt:a:1", 1)
    keep(copy, "tt:b:1", 2)
    began = copy.begin(["tt:a:2"])
    await redis.flushdb()
    await until(lambda: len(copy) == 0, "the copy dropped")
    copy.end(["tt:a:2"], began, {"tt:a:2": "read before the flush"})
    assert copy.get("tt:a:2") is MISSING


async def test_the_oldest_keys_go_beyond_the_limit(copy: Tracked) -> None:
    for i in range(5):
        keep(copy, f"tt:a:{i}", i)
    assert len(copy) == 3
    assert [copy.get(f"tt:a:{i}") for i in range(5)] == [MISSING, MISSING, 2, 3, 4]


async def test_nothing_is_kept_while_the_announcements_are_down(
        copy: Tracked, redis: aredis.Redis) -> None:
    keep(copy, "tt:a:1", "held")
    before = copy.begin(["tt:a:2"])
    clients = await redis.client_list()
    ours = [c["id"] for c in clients if c.get("name") == CLIENT_NAME]
    assert ours, clients
    for client_id in ours:
        await redis.client_kill_filter(_id=client_id)
    await until(lambda: not copy.live, "the copy knows its connection is gone")
    assert len(copy) == 0
    keep(copy, "tt:a:3", "read while down")
    assert copy.get("tt:a:3") is MISSING
    await until(lambda: copy.live, "announcements back", timeout=10.0)
    # a read begun before the connection came back may have missed a write: not kept
    copy.end(["tt:a:2"], before, {"tt:a:2": "read before"})
    assert copy.get("tt:a:2") is MISSING
    keep(copy, "tt:a:1", "again")
    seen = copy.announced
    await redis.set("tt:a:1", "new")
    await until(lambda: copy.announced > seen, "announced on the new connection")
    assert copy.get("tt:a:1") is MISSING


async def test_a_store_that_refuses_leaves_the_copy_empty(store_url: str,
                                                          redis: aredis.Redis) -> None:
    """Overlapping prefixes are refused by the store: the copy stays down and every read
    goes to the store."""
    tracked = Tracked(store_url, ["tt:", "tt:a:"])
    try:
        await tracked.start(wait=0.5)
        assert not tracked.live
        keep(tracked, "tt:a:1", "v")
        assert tracked.get("tt:a:1") is MISSING
    finally:
        await tracked.stop()


async def test_fields_gather_in_one_entry_unless_announced(copy: Tracked,
                                                           redis: aredis.Redis) -> None:
    """Hash-like entries are filled a field at a time; a field read while its key was
    written is not added."""
    copy.end(["tt:b:s"], copy.begin(["tt:b:s"]), {}, [("tt:b:s", "shop-1", 3)])
    copy.end(["tt:b:s"], copy.begin(["tt:b:s"]), {}, [("tt:b:s", "shop-2", 0)])
    assert copy.get("tt:b:s") == {"shop-1": 3, "shop-2": 0}
    began = copy.begin(["tt:b:s"])
    seen = copy.announced
    await redis.hset("tt:b:s", "shop-3", "5")
    await until(lambda: copy.announced > seen, "tt:b:s announced")
    copy.end(["tt:b:s"], began, {}, [("tt:b:s", "shop-3", 4)])
    assert copy.get("tt:b:s") is MISSING
