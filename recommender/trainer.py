"""Training jobs: read the event log, fit ALS, write a version, tell the web processes."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aredis

from recommender.discovery import Discovery, Purchases, fit_discovery
from recommender.events import EventLog, erased_tag
from recommender.keys import ALIASES, LOG, NOTICES
from recommender.model import write_version
from recommender.rank import is_offerable
from recommender.service import ERASED
from recommender.train import (
    DAY,
    HALF_LIFE_DAYS,
    KIND_WEIGHTS,
    AlsParams,
    FloatArray,
    confidence_matrix,
    train_als,
)

log = logging.getLogger("newretail.recommender")

Progress = Callable[[int], None]
# The price and category of the products named (those it knows), for the rankers' features.
Attributes = Callable[[list[str]], Awaitable[dict[str, tuple[float, str]]]]


@dataclass(frozen=True)
class TrainResult:
    version: str
    events: int
    users: int
    items: int
    seconds: float
    last_event_id: str


async def train_from_log(
    redis: aredis.Redis, model_dir: Path, params: AlsParams | None = None,
    hnsw_threshold: int = 20_000, on_events: Progress | None = None,
    on_iteration: Progress | None = None, attributes: Attributes | None = None,
) -> TrainResult:
    """Train on every event in the log (anonymous ids stitched to their member, erased users
    left out), write a model version and make it current."""
    params = params or AlsParams()
    started = time.perf_counter()
    raw_alias: Any = await redis.hgetall(ALIASES)
    alias = {k.decode(): v.decode() for k, v in raw_alias.items()}
    erased = await _erased(redis)
    rows: list[tuple[str, str, str, float, float]] = []  # user, raw user, sku, ts, weight
    bought: list[tuple[str, str, str, float, int]] = []  # the purchases, for the rankers
    count = 0
    last_id = "0-0"
    async for entry_id, e in EventLog(redis).read():
        count += 1
        last_id = entry_id
        if on_events is not None and count % 10_000 == 0:
            on_events(10_000)
        user = alias.get(e.user, e.user)
        if erased_tag(user) in erased or erased_tag(e.user) in erased or (
                KIND_WEIGHTS.get(e.kind, 0.0) <= 0):
            continue
        rows.append((user, e.user, e.sku, e.ts, KIND_WEIGHTS[e.kind] * (
            1.0 + math.log(max(1, e.qty)))))
        if e.kind == "purchase":
            bought.append((user, e.user, e.sku, e.ts, e.qty))
    if on_events is not None:
        on_events(count % 10_000)
    for _round in range(3):
        users, items, user_f, item_f, popularity, params = await _fit(rows, params,
                                                                      on_iteration)
        # someone erased while the model was fitting: fit again without them, so nothing
        # of theirs is in the version written
        late = await _erased(redis) - erased
        erased |= late
        if not late or not any(_names(r, late) for r in rows):
            break
        rows = [r for r in rows if not _names(r, late)]
    bought = [b for b in bought if not (erased_tag(b[0]) in erased or erased_tag(b[1]) in erased)]
    known = await attributes(items) if attributes is not None else {}
    discovery = await asyncio.to_thread(_fit_discovery, bought, users, items, params, known)
    version = await asyncio.to_thread(
        write_version, model_dir, items, users, item_f, user_f, popularity,
        params, hnsw_threshold, discovery)
    await redis.publish(NOTICES, b'{"model": "%s"}' % version.encode())
    seconds = time.perf_counter() - started
    log.info("trained %s on %d events (%d users, %d items) in %.1f s",
             version, count, len(users), len(items), seconds)
    return TrainResult(version, count, len(users), len(items), seconds, last_id)


def _fit_discovery(bought: list[tuple[str, str, str, float, int]], users: list[str],
                   items: list[str], params: AlsParams,
                   known: dict[str, tuple[float, str]]) -> Discovery | None:
    """The two-stage rankers from the purchases (labels: the last ``LABEL_DAYS``); None
    when the log holds too few purchases to learn a ranking (offers then use the blend)."""
    upos = {u: i for i, u in enumerate(users)}
    ipos = {s: i for i, s in enumerate(items)}
    kept = [b for b in bought if b[0] in upos and b[2] in ipos]
    if not kept:
        return None
    p = Purchases(np.array([upos[b[0]] for b in kept], dtype=np.int64),
                  np.array([ipos[b[2]] for b in kept], dtype=np.int64),
                  np.array([b[3] for b in kept]), np.array([b[4] for b in kept], np.int64),
                  len(users), len(items))
    banned = np.array([i for i, s in enumerate(items) if not is_offerable(s)], np.int64)
    price = np.array([known[s][0] if s in known and known[s][0] > 0 else np.nan
                      for s in items], dtype=np.float32)
    names: dict[str, int] = {}
    category = np.array([names.setdefault(known[s][1], len(names)) if s in known else -1
                         for s in items], dtype=np.int32)
    try:
        return fit_discovery(p, float(p.ts.max()) + 1.0, als=params, banned=banned,
                             price=price, category=category)
    except ValueError as exc:
        log.info("no rankers in this version: %s", exc)
        return None


def _names(row: tuple[str, str, str, float, float], tags: set[str]) -> bool:
    """Whether a training row belongs to one of the erased users ``tags`` stand for."""
    return erased_tag(row[0]) in tags or erased_tag(row[1]) in tags


async def _erased(redis: aredis.Redis) -> set[str]:
    """The erased users' tags (``erased_tag``)."""
    raw: Any = await redis.smembers(ERASED)
    return {m.decode() for m in raw}


async def _fit(
    rows: list[tuple[str, str, str, float, float]], params: AlsParams,
    on_iteration: Progress | None,
) -> tuple[list[str], list[str], FloatArray, FloatArray, FloatArray, AlsParams]:
    """ALS on the rows' confidence (kind weight x quantity, halved every 90 days before
    the newest event); returns users, items, their factors, popularity and the params."""
    if not rows:
        raise ValueError("the event log holds no events to train on")
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    u_arr = np.array([users.setdefault(r[0], len(users)) for r in rows], dtype=np.int64)
    i_arr = np.array([items.setdefault(r[2], len(items)) for r in rows], dtype=np.int64)
    ts = np.array([r[3] for r in rows])
    now = float(ts.max())
    weights = np.array([r[4] for r in rows]) * 0.5 ** (
        np.maximum(0.0, now - ts) / DAY / HALF_LIFE_DAYS)
    matrix = confidence_matrix(u_arr, i_arr, weights, len(users), len(items))
    factors = min(params.factors, max(2, len(items) - 1))
    if factors != params.factors:
        params = AlsParams(factors, params.regularization, params.alpha, params.iterations,
                           params.seed)
    user_f, item_f = await asyncio.to_thread(train_als, matrix, params, on_iteration)
    recent = ts >= now - HALF_LIFE_DAYS * DAY
    popularity = np.bincount(i_arr[recent], weights=weights[recent],
                             minlength=len(items)).astype(np.float32)
    return list(users), list(items), user_f, item_f, popularity, params


async def events_added(redis: aredis.Redis) -> int:
    """Events ever appended to the log (erasure deletes some; this count never drops)."""
    try:
        info: Any = await redis.xinfo_stream(LOG)
    except aredis.ResponseError:  # no log yet
        return 0
    return int(info.get("entries-added", info.get("length", 0)))


async def watch_and_train(
    redis: aredis.Redis, model_dir: Path, min_new_events: int, interval: float,
    train: Callable[[], Any],
) -> None:
    """Retrain whenever at least ``min_new_events`` arrived since the last run."""
    trained_at = -1
    while True:
        length = await events_added(redis)
        if trained_at < 0 or length - trained_at >= min_new_events:
            if length:
                await train()
            trained_at = length
        await asyncio.sleep(interval)
