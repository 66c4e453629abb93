"""The load this Locust process runs at now, and the pools its users take chunks of.

``make loadtest`` runs one load, from the options; ``make capacity`` climbs the steps of
``loadtests/steps.toml``: the master (``loadtests/sale/shape.py``) sends each step's load
to every worker as a Locust message (``load``), and the users read it on every action
(a shopper's rate, how many viewer groups and players are on, the buyers' share).

Pools (viewer groups, screens' devices, players) are handed out by the master through
Locust messages when there are workers, so workers on other machines never take the same
chunk; one process alone claims them through exclusive files next to the plan.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import gevent.event
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadtests.sale.plan import claim
from loadtests.steps import Load

_CURRENT: list[Load] = []


def current_load() -> Load:
    """The load now (set by ``set_load`` at start and by each step's message)."""
    if not _CURRENT:
        raise RuntimeError("no load set: the locustfile's init listener sets it")
    return _CURRENT[-1]


def set_load(load: Load) -> None:
    _CURRENT[:] = [load]


def groups_for(viewers: int, group: int) -> int:
    """Viewer groups (Locust users) needed for ``viewers`` connections."""
    return -(-viewers // group) if viewers > 0 else 0


class MasterPools:
    """On the master: the next free chunk of each pool, handed to workers on request."""

    def __init__(self) -> None:
        self.taken: dict[str, int] = {}

    def take(self, pool: str, chunks: int) -> int | None:
        n = self.taken.get(pool, 0)
        if n >= chunks:
            return None
        self.taken[pool] = n + 1
        return n


_WAITING: dict[str, gevent.event.AsyncResult[Any]] = {}
_TOKENS = itertools.count()


def install_pools(environment: Environment) -> None:
    """Register the pool messages on this process's runner."""
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        pools = MasterPools()

        def give(environment: Environment, msg: Any, **_: Any) -> None:
            data = msg.data
            chunk = pools.take(str(data["pool"]), int(data["chunks"]))
            runner.send_message("pool_chunk", {"token": data["token"], "chunk": chunk},
                                client_id=msg.node_id)

        runner.register_message("pool_take", give)
    elif isinstance(runner, WorkerRunner):
        def got(environment: Environment, msg: Any, **_: Any) -> None:
            waiting = _WAITING.pop(str(msg.data["token"]), None)
            if waiting is not None:
                waiting.set(msg.data["chunk"])

        runner.register_message("pool_chunk", got)


def take_chunk(environment: Environment, plan_path: Path, pool: str, chunks: int,
               timeout: float = 30.0) -> int | None:
    """The lowest chunk of ``pool`` no user of this run has taken yet, or None."""
    runner = environment.runner
    if not isinstance(runner, WorkerRunner):
        return claim(plan_path, pool, chunks)
    token = f"{runner.client_id}-{next(_TOKENS)}"
    result: gevent.event.AsyncResult[Any] = gevent.event.AsyncResult()
    _WAITING[token] = result
    runner.send_message("pool_take", {"pool": pool, "chunks": chunks, "token": token})
    chunk = result.get(timeout=timeout)
    return None if chunk is None else int(chunk)
