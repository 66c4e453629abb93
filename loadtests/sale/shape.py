"""The capacity run's load shape: the sale's steps (``loadtests/steps.toml``), one after
the other, each held long enough for a stable p99, with the figures of each kept apart.

Every user class is started once, sized for the peak (``--viewers`` etc. are the most any
step asks); each step's load goes to every Locust process as a message (``load``, see
``loadtests/sale/load.py``) and the users follow it: shoppers and screens pace to its
rates, viewer groups and players past its counts stay off, a group joins when a step
needs it. A step is ``settle_seconds`` (joins, warm-up; also until its viewers are in,
``join_wait_seconds`` at most), then its statistics are reset and measured for
``measure_seconds``, then kept ``REPORT_LAG`` more seconds at the same load (workers
report every 3 s) and written to ``PREFIX_stepNN_stats.csv``. Each step's times go to
``steps/step-NN.json`` next to the plan, for the runner's CPU figures.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import gevent
from locust import LoadTestShape, User, events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

from loadtests.sale.load import groups_for, set_load
from loadtests.steps import REPORT_LAG, Load, Steps, load_steps

_SCHEDULES: list[StepSchedule] = []


def steps_folder(plan: str) -> Path:
    path = Path(plan)
    return path.parent / f"{path.stem}.claims" / "steps"


class StepSchedule:
    """Runs the steps on the master (or the only process)."""

    def __init__(self, environment: Environment, steps: Steps) -> None:
        self.env = environment
        self.steps = steps
        opts = environment.parsed_options
        self.group = int(opts.viewer_group)
        self.prefix = str(opts.csv_prefix or "capacity")
        self.folder = steps_folder(str(opts.plan)) if opts.plan else Path(self.prefix + "_steps")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.done = False

    def apply(self, load: Load) -> None:
        set_load(load)
        runner = self.env.runner
        if isinstance(runner, MasterRunner):
            runner.send_message("load", load.as_dict())

    def groups_in(self) -> int:
        from loadtests.sale.users import MEASURES

        return MEASURES[0].groups_in if MEASURES else 0

    def reset(self) -> None:
        runner = self.env.runner
        if isinstance(runner, MasterRunner):
            runner.send_message("measure_start")  # workers drop what they have not sent
            gevent.sleep(1.0)
        if runner is not None:
            runner.stats.reset_all()

    def write(self, n: int, record: dict[str, Any]) -> None:
        tmp = self.folder / f"step-{n:02d}.tmp"
        tmp.write_text(json.dumps(record))
        tmp.replace(self.folder / f"step-{n:02d}.json")

    def snapshot(self, n: int) -> Path:
        path = Path(f"{self.prefix}_step{n:02d}_stats.csv")
        with path.open("w", newline="") as f:
            StatsCSV(self.env, PERCENTILES_TO_REPORT).requests_csv(csv.writer(f))
        return path

    def run(self) -> None:
        sched = self.steps.schedule
        try:
            for n, load in enumerate(self.steps.steps, 1):
                self.apply(load)
                began = time.time()
                gevent.sleep(sched.settle_seconds)
                need = groups_for(load.viewers, self.group)
                waited = 0.0
                while self.groups_in() < need and waited < sched.join_wait_seconds:
                    gevent.sleep(0.5)
                    waited += 0.5
                record: dict[str, Any] = {
                    "step": n, "load": load.as_dict(), "began": began,
                    "groups_in": self.groups_in(), "groups_needed": need}
                self.reset()
                record["start"] = time.time()
                self.write(n, record)
                gevent.sleep(sched.measure_seconds + REPORT_LAG)
                record["end"] = time.time()
                record["csv"] = str(self.snapshot(n))
                self.write(n, record)
        finally:
            self.done = True


@events.test_start.add_listener
def _start(environment: Environment, **_: Any) -> None:
    opts = environment.parsed_options
    if opts is None or not getattr(opts, "steps", "") or isinstance(environment.runner,
                                                                      WorkerRunner):
        return
    schedule = StepSchedule(environment, load_steps(Path(opts.steps)))
    _SCHEDULES[:] = [schedule]
    gevent.spawn(schedule.run)


class SaleSteps(LoadTestShape):
    """Every user at once, for as long as the steps last (the users follow each step's
    load); then stop."""

    user_classes: tuple[type[User], ...] = ()

    def tick(self) -> tuple[int, float] | None:
        if _SCHEDULES and _SCHEDULES[0].done:
            return None
        users = sum(max(0, int(getattr(cls, "fixed_count", 0))) for cls in self.user_classes)
        return users, float(max(users, 1))
