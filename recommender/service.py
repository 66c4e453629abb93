"""The recommender service of one process: records events, serves candidates from the
current model with real-time fold-in, swaps models, forgets erased users everywhere."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from recommender.evaluate import BlendParams
from recommender.events import HISTORY_LEN, EventLog, erased_tag, history_key, parse_history
from recommender.keys import ALIASES, ERASED, NOTICES
from recommender.model import Model, current_version, read_version
from recommender.serving import TASTE_SECONDS, Ranking, _Taste
from recommender.train import FoldIn
from recommender.types import EVENT_KINDS, Event, History, RecommenderError

__all__ = ["ALIASES", "ERASED", "NOTICES", "Recommender", "history_key", "parse_history"]

log = logging.getLogger("newretail.recommender")

POLL_SECONDS = 2.0


ErasedAmong = Callable[[Sequence[str]], Awaitable[set[str]]]


class Recommender(Ranking):
    """Events in, candidates out.

    Args:
        erased_among: the user ids of those given that were erased (one datastore round trip
            for a batch); their events are refused.
    """

    def __init__(self, redis: aredis.Redis, model_dir: Path, erased_among: ErasedAmong,
                 blend: BlendParams | None = None) -> None:
        self.redis = redis
        self.model_dir = model_dir
        self.erased_among = erased_among
        self.blend = blend or BlendParams()
        self.events = EventLog(redis)
        self.model: Model | None = None
        self._fold: FoldIn | None = None
        self._erased: set[str] = set()
        self._erased_tags: set[str] = set()
        self._watcher: asyncio.Task[None] | None = None
        self.load_error: str | None = None  # why the newest version is not the one served
        self._failed: str | None = None
        self._erased_seen = -1
        self._tastes: OrderedDict[str, _Taste] = OrderedDict()
        self._discoveries: OrderedDict[str, _Taste] = OrderedDict()  # slate=discover's
        self.taste_seconds = TASTE_SECONDS  # 0: every request computes the taste afresh

    # events -------------------------------------------------------------------------------

    async def record(self, events: Sequence[Event]) -> int:
        """Append events (durably, to the log, with each user's recent history); events of
        erased users are refused (here by the identity service's word, and inside the
        append script by the erased set, so a late event cannot slip past an erasure).
        Returns how many were recorded."""
        for e in events:
            if e.kind not in EVENT_KINDS or not e.user or (not e.sku and e.kind != "checkin"):
                raise RecommenderError("bad_request", f"invalid event {e!r}")
        users = sorted({e.user for e in events})
        refused = {u for u in users if u in self._erased}
        ask = [u for u in users if u not in refused]
        for start in range(0, len(ask), 1000):  # a bulk import names thousands of users
            refused |= await self.erased_among(ask[start:start + 1000])
        if refused:
            self.forget(refused)
        kept = [e for e in events if e.user not in refused]
        if not kept:
            return 0
        return await self.events.append(kept)

    async def history(self, user: str) -> History:
        raw: Any = await self.redis.lrange(history_key(user), 0, -1)
        return parse_history(raw)

    # erasure and stitching ----------------------------------------------------------------

    async def erase_user(self, user_ids: list[str]) -> None:
        """Remove the users' events, histories and factors, here and in every process."""
        ids = set(user_ids)
        if not ids:
            return
        # the erased set first: from then on the append script refuses their events, so
        # the per-user indexes read next hold every event of theirs there will ever be
        await self.redis.sadd(ERASED, *(erased_tag(u) for u in ids))
        await self.events.delete_users(ids)
        await self.redis.delete(*(history_key(u) for u in ids))
        await self.redis.hdel(ALIASES, *ids)
        self.forget(ids)
        await self.redis.publish(NOTICES, orjson.dumps({"erase": sorted(ids)}))

    def forget(self, ids: Iterable[str]) -> None:
        """Drop erased users from this process: their factors, and any use of them."""
        gone = set(ids)
        self._erased |= gone
        for user in gone:
            self._tastes.pop(user, None)
            self._discoveries.pop(user, None)
        if self.model is not None:
            self.model.forget_users(gone)

    async def stitch(self, anon_id: str, member_id: str) -> None:
        """The anonymous viewer's history follows the member (and trains as theirs)."""
        raw: Any = await self.redis.lrange(history_key(anon_id), 0, -1)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(ALIASES, anon_id, member_id)
        if raw:
            pipe.rpush(history_key(member_id), *raw)
            pipe.ltrim(history_key(member_id), 0, HISTORY_LEN - 1)
            pipe.delete(history_key(anon_id))
        await pipe.execute()

    # models -------------------------------------------------------------------------------

    def load(self, version: str) -> bool:
        """Swap in ``version``; a missing or corrupt version keeps the current model (and
        ``load_error`` says why, for readiness)."""
        try:
            model = read_version(self.model_dir, version)
        except RecommenderError as exc:
            log.warning("model not loaded, keeping %s: %s", self.model_version, exc.message)
            self.load_error, self._failed = exc.message, version
            return False
        model.forget_users(self._erased | {
            u for u in model.user_pos if erased_tag(u) in self._erased_tags})
        self.load_error, self._failed = None, None
        self._fold = FoldIn(model.item_factors, model.params)
        self.model = model  # one reference swap: a request in flight keeps the old model
        log.info("model %s loaded (%d items, %s index)", version, len(model.item_ids),
                 model.index.kind)
        return True

    @property
    def model_version(self) -> str | None:
        return self.model.version if self.model else None

    def user_count(self) -> int:
        """Users whose trained factors this process holds (erased ones are dropped)."""
        return len(self.model.user_pos) if self.model else 0

    async def refresh(self) -> None:
        """Load the current version when it differs from the one served."""
        # the whole erased set only when it grew (notices normally carry each erasure)
        count = int(await self.redis.scard(ERASED))
        if count != self._erased_seen:
            erased: Any = await self.redis.smembers(ERASED)
            self._erased_tags |= {m.decode() for m in erased}
            if self.model is not None:
                self.model.forget_users({u for u in self.model.user_pos
                                         if erased_tag(u) in self._erased_tags})
            self._erased_seen = count
        version = current_version(self.model_dir)
        if version and version not in (self.model_version, self._failed):
            await asyncio.to_thread(self.load, version)

    async def announce(self, version: str) -> None:
        await self.redis.publish(NOTICES, orjson.dumps({"model": version}))

    async def watch(self) -> None:
        """Follow notices (new model, erasures) and poll the pointer as a fallback."""
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(NOTICES)
        try:
            await self.refresh()
            while True:
                msg = await pubsub.get_message(ignore_subscribe_messages=True,
                                               timeout=POLL_SECONDS)
                if msg is not None:
                    notice = orjson.loads(msg["data"])
                    if "erase" in notice:
                        self.forget(notice["erase"])
                await self.refresh()
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    def start(self) -> None:
        self._watcher = asyncio.create_task(self._watch_through_outages())

    async def _watch_through_outages(self) -> None:
        """``watch`` again after the datastore went away (down or restarting), so notices and
        the polling fallback resume once it is back."""
        while True:
            try:
                await self.watch()
            except (RedisConnectionError, RedisTimeoutError) as exc:
                log.warning("model watcher: store unavailable (%s); retrying",
                            type(exc).__name__)
                await asyncio.sleep(POLL_SECONDS)

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    # serving ------------------------------------------------------------------------------

