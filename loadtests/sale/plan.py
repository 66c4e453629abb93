"""What a load test run needs to know about the prepared service, kept as one JSON file.

``loadtests/run.py`` (or a test) writes it after preparing the store and opening the live
session; every Locust process reads it. Pools that must not be shared between users (the
devices whose member codes a screen shows, the members a viewer group signs in as) are
handed out in chunks claimed through exclusive files next to the plan, which works for any
number of Locust processes on this machine.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Plan:
    """The prepared service as the load test sees it.

    Attributes:
        base_url: ``http://127.0.0.1:PORT`` of the service.
        session_id: the live session the viewers join.
        host_token: a host token for that session.
        lineup: products the host pins, in turn.
        flash_skus: products the host runs flash sales of (stock set high enough).
        members: ``[member_id, token]`` pairs: viewers who may buy, shoppers.
        stores: store ids (offers are asked for one of them).
        screens: ``[screen_id, token]`` pairs of store screens.
        devices: ``[device_index, secret_hex]`` of signed-in devices (member codes).
        viewer_tokens: viewer tokens of anonymous viewers.
        ws_base: ``http://127.0.0.1:PORT`` of the web process the WebSockets go to, when
            it is not ``base_url`` (WebSocket and HTTP traffic on processes of their own).
    """

    base_url: str
    session_id: str
    host_token: str
    lineup: list[str]
    flash_skus: list[str]
    members: list[list[str]]
    stores: list[str]
    screens: list[list[str]]
    devices: list[list[str]]
    viewer_tokens: list[str] = field(default_factory=list)
    ws_base: str = ""

    @property
    def ws_url(self) -> str:
        base = self.ws_base or self.base_url
        return base.replace("http://", "ws://", 1) + f"/ws/live/{self.session_id}"

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Plan:
        return cls(**json.loads(path.read_text()))


def claim(plan_path: Path, pool: str, chunks: int) -> int | None:
    """The lowest chunk number of ``pool`` no one has claimed yet (claiming it), or None.

    An exclusive create is atomic across processes, so two Locust workers never get the
    same chunk."""
    folder = plan_path.parent / f"{plan_path.stem}.claims"
    folder.mkdir(exist_ok=True)
    for n in range(chunks):
        try:
            fd = os.open(folder / f"{pool}-{n}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            continue
        os.close(fd)
        return n
    return None


class Pacing:
    """When a user (a shopper, a store screen) next acts: at the times of a Poisson process
    of ``rate`` per second, its own, so that many such users together are an open stream
    of arrivals at the summed rate, as independent shoppers are.

    Locust's ``constant_throughput`` instead starts each user a fixed period after its
    last start: users held up by the same slow moment all start again at the same instant
    and stay in step, and the service sees bursts of simultaneous requests that no crowd
    makes. Here a user that fell behind acts at once and then goes on from there, without
    a burst to catch up.
    """

    def __init__(self, rate: float, rng: random.Random | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.rng = rng or random.Random()
        self.due: float | None = None

    def wait(self, now: float) -> float:
        """Seconds from ``now`` to the next action (0: at once)."""
        start = now if self.due is None else self.due
        self.due = max(start + self.rng.expovariate(self.rate), now)
        return self.due - now
