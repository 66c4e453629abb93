"""Training jobs: read the event log, fit ALS, write a version, tell the web processes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aredis

from recommender.events import EventLog
from recommender.model import write_version
from recommender.service import ALIASES, ERASED, NOTICES
from recommender.train import DAY, HALF_LIFE_DAYS, AlsParams, confidence_matrix, train_als
from recommender.train import event_weight as weight_of

log = logging.getLogger("newretail.recommender")

Progress = Callable[[int], None]


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
    on_iteration: Progress | None = None,
) -> TrainResult:
    """Train on every event in the log (anonymous ids stitched to their member, erased users
    left out), write a model version and make it current."""
    params = params or AlsParams()
    started = time.perf_counter()
    raw_alias: Any = await redis.hgetall(ALIASES)
    alias = {k.decode(): v.decode() for k, v in raw_alias.items()}
    raw_erased: Any = await redis.smembers(ERASED)
    erased = {m.decode() for m in raw_erased}
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    uu: list[int] = []
    ii: list[int] = []
    kinds: list[str] = []
    ts: list[float] = []
    qty: list[int] = []
    count = 0
    last_id = "0-0"
    async for entry_id, e in EventLog(redis).read():
        count += 1
        last_id = entry_id
        if on_events is not None and count % 10_000 == 0:
            on_events(10_000)
        user = alias.get(e.user, e.user)
        if user in erased or e.user in erased:
            continue
        uu.append(users.setdefault(user, len(users)))
        ii.append(items.setdefault(e.sku, len(items)))
        kinds.append(e.kind)
        ts.append(e.ts)
        qty.append(e.qty)
    if on_events is not None:
        on_events(count % 10_000)
    if not users:
        raise ValueError("the event log holds no events to train on")
    now = max(ts)
    weights = np.array([weight_of(k, t, now, q) for k, t, q in zip(kinds, ts, qty, strict=True)])
    u_arr, i_arr = np.array(uu, dtype=np.int64), np.array(ii, dtype=np.int64)
    matrix = confidence_matrix(u_arr, i_arr, weights, len(users), len(items))
    factors = min(params.factors, max(2, len(items) - 1))
    if factors != params.factors:
        params = AlsParams(factors, params.regularization, params.alpha, params.iterations,
                           params.seed)
    user_f, item_f = await asyncio.to_thread(train_als, matrix, params, on_iteration)
    recent = np.array(ts) >= now - HALF_LIFE_DAYS * DAY
    popularity = np.bincount(i_arr[recent], weights=weights[recent],
                             minlength=len(items)).astype(np.float32)
    version = await asyncio.to_thread(
        write_version, model_dir, list(items), list(users), item_f, user_f, popularity,
        params, hnsw_threshold)
    await redis.publish(NOTICES, b'{"model": "%s"}' % version.encode())
    seconds = time.perf_counter() - started
    log.info("trained %s on %d events (%d users, %d items) in %.1f s",
             version, count, len(users), len(items), seconds)
    return TrainResult(version, count, len(users), len(items), seconds, last_id)


async def watch_and_train(
    redis: aredis.Redis, model_dir: Path, min_new_events: int, interval: float,
    train: Callable[[], Any],
) -> None:
    """Retrain whenever at least ``min_new_events`` arrived since the last run."""
    trained_at = -1
    while True:
        length = int(await redis.xlen("nr:events"))
        if trained_at < 0 or length - trained_at >= min_new_events:
            if length:
                await train()
            trained_at = length
        await asyncio.sleep(interval)
