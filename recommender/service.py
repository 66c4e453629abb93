"""The recommender service of one process: records events, serves candidates from the
current model with real-time fold-in, swaps models, forgets erased users everywhere."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import redis.asyncio as aredis

from recommender.evaluate import BlendParams
from recommender.events import EventLog
from recommender.model import Model, current_version, read_version
from recommender.rank import Candidate, is_offerable
from recommender.train import DAY, FoldIn, event_weight
from recommender.types import EVENT_KINDS, Event, RecommenderError

log = logging.getLogger("newretail.recommender")

HISTORY = "nr:rec:hist:{user}"  # list of recent events, newest first: "sku\tkind\tts\tqty"
HISTORY_LEN = 200
TRENDING = "nr:rec:trending"  # zset sku -> decayed weight (cold start before any model)
ERASED = "nr:rec:erased"  # set of erased user ids
ALIASES = "nr:rec:alias"  # hash anon id -> member id
NOTICES = "nr:rec:notice"  # pub/sub: {"model": version} or {"erase": [ids]}
POLL_SECONDS = 2.0

IsErased = Callable[[str], Awaitable[bool]]


def history_key(user: str) -> str:
    return HISTORY.format(user=user)


def _hist_entry(e: Event) -> str:
    return f"{e.sku}\t{e.kind}\t{e.ts:.3f}\t{e.qty}"


class Recommender:
    """Events in, candidates out.

    Args:
        is_erased: tells whether a user id was erased; their events are refused.
    """

    def __init__(self, redis: aredis.Redis, model_dir: Path, is_erased: IsErased,
                 blend: BlendParams | None = None) -> None:
        self.redis = redis
        self.model_dir = model_dir
        self.is_erased = is_erased
        self.blend = blend or BlendParams()
        self.events = EventLog(redis)
        self.model: Model | None = None
        self._fold: FoldIn | None = None
        self._erased: set[str] = set()
        self._watcher: asyncio.Task[None] | None = None

    # events -------------------------------------------------------------------------------

    async def record(self, events: Sequence[Event]) -> int:
        """Append events (durably, to the log) and to each user's recent history; events of
        erased users are refused. Returns how many were recorded."""
        for e in events:
            if e.kind not in EVENT_KINDS or not e.sku or not e.user:
                raise RecommenderError("bad_request", f"invalid event {e!r}")
        users = sorted({e.user for e in events})
        if not users:
            return 0
        listed: Any = await self.redis.smismember(ERASED, users)
        refused = {u for u, gone in zip(users, listed, strict=True) if gone}
        for user in users:
            if user not in refused and await self.is_erased(user):
                refused.add(user)
        self._erased |= refused
        kept = [e for e in events if e.user not in refused]
        if not kept:
            return 0
        await self.events.append(kept)
        pipe = self.redis.pipeline(transaction=False)
        for pos, e in enumerate(kept, 1):
            if pos % 2000 == 0:
                await pipe.execute()
            key = history_key(e.user)
            pipe.lpush(key, _hist_entry(e))
            pipe.ltrim(key, 0, HISTORY_LEN - 1)
            weight = event_weight(e.kind, e.ts, e.ts, e.qty)
            if weight > 0:
                pipe.zincrby(TRENDING, weight, e.sku)
        await pipe.execute()
        return len(kept)

    async def history(self, user: str) -> list[tuple[str, str, float, int]]:
        raw: Any = await self.redis.lrange(history_key(user), 0, -1)
        out = []
        for line in raw:
            sku, kind, ts, qty = line.decode().split("\t")
            out.append((sku, kind, float(ts), int(qty)))
        return out

    # erasure and stitching ----------------------------------------------------------------

    async def erase_user(self, user_ids: list[str]) -> None:
        """Remove the users' events, histories and factors, here and in every process."""
        ids = set(user_ids)
        if not ids:
            return
        await self.redis.sadd(ERASED, *ids)
        await self.events.delete_users(ids)
        await self.redis.delete(*(history_key(u) for u in ids))
        await self.redis.hdel(ALIASES, *ids)
        self._forget(ids)
        await self.redis.publish(NOTICES, orjson.dumps({"erase": sorted(ids)}))

    def _forget(self, ids: set[str]) -> None:
        self._erased |= ids
        if self.model is not None:
            self.model.forget_users(ids)

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
        """Swap in ``version``; a missing or corrupt version keeps the current model."""
        try:
            model = read_version(self.model_dir, version)
        except RecommenderError as exc:
            log.warning("model not loaded, keeping %s: %s", self.model_version, exc.message)
            return False
        model.forget_users(self._erased)
        self._fold = FoldIn(model.item_factors, model.params)
        self.model = model  # one reference swap: a request in flight keeps the old model
        log.info("model %s loaded (%d items, %s index)", version, len(model.item_ids),
                 model.index.kind)
        return True

    @property
    def model_version(self) -> str | None:
        return self.model.version if self.model else None

    async def refresh(self) -> None:
        """Load the current version when it differs from the one served."""
        erased: Any = await self.redis.smembers(ERASED)
        self._erased |= {m.decode() for m in erased}
        version = current_version(self.model_dir)
        if version and version != self.model_version:
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
                        self._forget(set(notice["erase"]))
                await self.refresh()
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    def start(self) -> None:
        self._watcher = asyncio.create_task(self.watch())

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    # serving ------------------------------------------------------------------------------

    async def user_vector(
        self, user: str, hist: list[tuple[str, str, float, int]] | None = None,
    ) -> np.ndarray[Any, np.dtype[np.float32]] | None:
        """Fresh from the user's recent events (fold-in), else the trained one, else none."""
        model, fold = self.model, self._fold
        if model is None or fold is None or user in self._erased:
            return None
        if hist is None:
            hist = await self.history(user)
        now = time.time()
        weights: dict[int, float] = {}
        for sku, kind, ts, qty in hist:
            pos = model.item_pos.get(sku)
            if pos is not None:
                weights[pos] = weights.get(pos, 0.0) + event_weight(kind, ts, now, qty)
        weights = {i: w for i, w in weights.items() if w > 0}
        if weights:
            return fold.user_vector(list(weights), list(weights.values()))
        pos = model.user_pos.get(user)
        return model.user_factors[pos] if pos is not None else None

    async def trending(self, k: int) -> list[Candidate]:
        model = self.model
        if model is not None and model.trending:
            return [Candidate(s, v, "trending") for s, v in model.trending[: k * 2]
                    if is_offerable(s)][:k]
        raw: Any = await self.redis.zrevrange(TRENDING, 0, k - 1, withscores=True)
        top = float(raw[0][1]) if raw else 1.0
        return [Candidate(s.decode(), float(w) / top, "trending") for s, w in raw]

    async def personal(self, user: str, k: int, excluded: set[str] | None = None
                       ) -> list[Candidate]:
        """buy_again and for_you candidates, best first (the engine's blend)."""
        excluded = excluded or set()
        model = self.model
        hist = await self.history(user)
        vec = await self.user_vector(user, hist)
        days: dict[str, set[int]] = {}
        recent: dict[str, float] = {}
        now = time.time()
        for sku, kind, ts, _qty in hist:
            if kind == "purchase":
                days.setdefault(sku, set()).add(int(ts // DAY))
                recent[sku] = recent.get(sku, 0.0) + 0.5 ** ((now - ts) / DAY
                                                              / self.blend.half_life_days)
        scores: dict[str, tuple[float, str]] = {}
        pop_top = float(model.popularity.max()) if model is not None and len(
            model.popularity) else 1.0
        if model is not None and vec is not None:
            ex = [model.item_pos[s] for s in excluded if s in model.item_pos]
            found = model.index.search(vec, k, excluded=ex)
            top = max((abs(s) for _, s in found), default=1.0) or 1.0
            for i, s in found:
                scores[model.item_ids[i]] = (
                    self.blend.als_weight * s / top
                    + self.blend.pop_weight * float(model.popularity[i]) / (pop_top or 1.0),
                    "for_you")
        for sku, dset in days.items():
            if sku in excluded:
                continue
            base = scores.get(sku, (0.0, ""))[0]
            scores[sku] = (base + len(dset) + self.blend.repeat_weight * recent[sku],
                           "buy_again")
        ranked = sorted(scores.items(), key=lambda kv: -kv[1][0])
        return [Candidate(s, v, r) for s, (v, r) in ranked  # type: ignore[arg-type]
                if is_offerable(s)]

    async def rank_within(self, user: str | None, skus: Sequence[str]) -> list[Candidate]:
        """``skus`` (a live session's products) ranked for ``user`` (ID-selector search)."""
        model = self.model
        vec = await self.user_vector(user) if user else None
        if model is None or vec is None:
            return [Candidate(s, 0.0, "in_this_live") for s in skus]
        allowed = [model.item_pos[s] for s in skus if s in model.item_pos]
        found = model.index.search(vec, len(allowed), allowed=allowed)
        if len(found) < len(allowed):  # HNSW with a narrow filter: score the rest exactly
            have = {i for i, _ in found}
            found += [(i, float(model.item_factors[i] @ vec)) for i in allowed if i not in have]
            found.sort(key=lambda x: -x[1])
        ranked = [Candidate(model.item_ids[i], s, "in_this_live") for i, s in found]
        known = {c.sku for c in ranked}
        return ranked + [Candidate(s, 0.0, "in_this_live") for s in skus if s not in known]

    async def audience_wants(self, viewer_ids: Sequence[str], exclude: set[str],
                             n: int) -> list[Candidate]:
        """What the viewers want most taken together: the sum of their normalised vectors."""
        model = self.model
        if model is None:
            return [c for c in await self.trending(n + len(exclude)) if c.sku not in exclude][:n]
        total = np.zeros(model.item_factors.shape[1], dtype=np.float32)
        for user in viewer_ids:
            vec = await self.user_vector(user)
            if vec is not None:
                total += vec / (float(np.linalg.norm(vec)) or 1.0)
        if not total.any():
            return [c for c in await self.trending(n + len(exclude)) if c.sku not in exclude][:n]
        ex = [model.item_pos[s] for s in exclude if s in model.item_pos]
        found = model.index.search(total, n * 2 + len(ex), excluded=ex)
        return [Candidate(model.item_ids[i], s, "for_you") for i, s in found
                if is_offerable(model.item_ids[i])][:n]
