"""The load of a live sale as data (``loadtests/steps.toml``): the default load that
``make loadtest`` runs and the steps ``make capacity`` climbs.

Pure: reading and checking the file, no Locust, no I/O beyond the read.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

STEPS = Path(__file__).resolve().parent / "steps.toml"


@dataclass(frozen=True)
class Load:
    """One level of load: what every user class does at it.

    Attributes:
        viewers: WebSocket viewer connections.
        offers_rate: ``GET /offers`` a second.
        checkin_rate: ``POST /identity/checkin`` a second.
        buy_chance: share of member viewers buying in each flash sale.
        hls_viewers: video players on the HLS playlist and segments.
    """

    viewers: int
    offers_rate: float
    checkin_rate: float
    buy_chance: float = 0.3
    hls_viewers: int = 0

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "load") -> Load:
        """A load from a table of the file (or a Locust message); unknown keys are errors."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        try:
            load = cls(viewers=int(data["viewers"]), offers_rate=float(data["offers_rate"]),
                       checkin_rate=float(data["checkin_rate"]),
                       buy_chance=float(data.get("buy_chance", 0.3)),
                       hls_viewers=int(data.get("hls_viewers", 0)))
        except KeyError as exc:
            raise ValueError(f"{where}: needs {exc.args[0]}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None
        for name in names:
            value = getattr(load, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{where}: {name} must be a number >= 0, not {value!r}")
        if load.buy_chance > 1:
            raise ValueError(f"{where}: buy_chance is a share (0 to 1)")
        return load

    def label(self) -> str:
        """Short, for tables and plots."""
        return (f"{self.viewers:,} viewers, {self.offers_rate:g} offers/s, "
                f"{self.checkin_rate:g} check-ins/s, {self.hls_viewers:,} players")


@dataclass(frozen=True)
class Schedule:
    """How long each capacity step lasts."""

    settle_seconds: float = 12.0
    measure_seconds: float = 40.0
    join_wait_seconds: float = 30.0


@dataclass(frozen=True)
class Steps:
    default: Load
    schedule: Schedule
    steps: tuple[Load, ...]

    def peak(self) -> Load:
        """The most of each dimension over the steps (and the default): what the users
        must be sized for."""
        every = (self.default, *self.steps)
        return Load(viewers=max(s.viewers for s in every),
                    offers_rate=max(s.offers_rate for s in every),
                    checkin_rate=max(s.checkin_rate for s in every),
                    buy_chance=max(s.buy_chance for s in every),
                    hls_viewers=max(s.hls_viewers for s in every))

    def seconds(self) -> float:
        """Planned length of a capacity run (joins that wait longer add to it)."""
        per = self.schedule.settle_seconds + self.schedule.measure_seconds + REPORT_LAG + 1
        return per * len(self.steps)


# Locust workers report their statistics every 3 s: a step's figures are taken this long
# after its measured part ends, the load unchanged meanwhile.
REPORT_LAG = 4.0


def load_steps(path: Path = STEPS) -> Steps:
    """Read and check a steps file."""
    data = tomllib.loads(path.read_text())
    if "default" not in data:
        raise ValueError(f"{path}: no [default] load")
    default = Load.from_dict(dict(data["default"]), f"{path} [default]")
    raw_schedule = dict(data.get("capacity", {}))
    try:
        schedule = Schedule(**{k: float(v) for k, v in raw_schedule.items()})
    except TypeError as exc:
        raise ValueError(f"{path} [capacity]: {exc}") from None
    if schedule.measure_seconds <= 0 or schedule.settle_seconds < 0:
        raise ValueError(f"{path} [capacity]: measure_seconds must be > 0, settle >= 0")
    raw_steps = data.get("step", [])
    if not isinstance(raw_steps, list):
        raise ValueError(f"{path}: steps are [[step]] tables")
    steps = tuple(Load.from_dict(dict(s), f"{path} step {n}") for n, s in enumerate(raw_steps, 1))
    return Steps(default, schedule, steps)
