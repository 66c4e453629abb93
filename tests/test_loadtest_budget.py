"""The budget check on statistics files written by Locust's own CSV writer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.check_budget import check, for_load, load_budget, main, read_stats
from loadtests.steps import load_steps

# Writes a stats CSV with Locust's classes (in a process of its own: importing Locust
# patches the standard library for gevent). Each entry: type, name, response times in ms,
# failures; the statistics span ``seconds``.
WRITER = """
import csv, json, sys, time
from locust.env import Environment
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV
spec = json.loads(sys.argv[1])
env = Environment()
for e in spec["entries"]:
    for i, ms in enumerate(e["times"]):
        env.stats.log_request(e["type"], e["name"], ms, 100)
        if i < e.get("failures", 0):
            env.stats.log_error(e["type"], e["name"], RuntimeError("refused"))
now = time.time()
env.stats.total.start_time = now - spec["seconds"]
env.stats.total.last_request_timestamp = now
with open(spec["path"], "w", newline="") as f:
    StatsCSV(env, PERCENTILES_TO_REPORT).requests_csv(csv.writer(f))
"""

# The statistics of a real `make loadtest` run on the project machine (see the file's README).
RECORDED = Path(__file__).resolve().parent.parent / "loadtests" / "recorded" / "loadtest_stats.csv"

BUDGET = """
[[budget]]
type = "GET"
name = "/offers"
p99_ms = 5
min_rate = 50

[[budget]]
type = "WS"
name = "pin to viewer"
p99_ms = 100
min_rate = 100
"""


def write_stats(path: Path, entries: list[dict[str, object]], seconds: float = 10.0) -> Path:
    spec = {"path": str(path), "seconds": seconds, "entries": entries}
    subprocess.run([sys.executable, "-c", WRITER, json.dumps(spec)], check=True, timeout=60)
    return path


def offers(ms: float, count: int, failures: int = 0) -> dict[str, object]:
    return {"type": "GET", "name": "/offers", "times": [ms] * count, "failures": failures}


def pins(ms: float, count: int) -> dict[str, object]:
    return {"type": "WS", "name": "pin to viewer", "times": [ms] * count}


@pytest.fixture
def budget(tmp_path: Path) -> Path:
    path = tmp_path / "budget.toml"
    path.write_text(BUDGET)
    return path


@pytest.fixture(scope="module")
def csvs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One Locust-written file per case (10 s of statistics each)."""
    folder = tmp_path_factory.mktemp("stats")
    slow_tail = {"type": "GET", "name": "/offers", "times": [2.0] * 980 + [40.0] * 20}
    return {
        "pass": write_stats(folder / "pass.csv", [offers(3, 1000), pins(40, 2000)]),
        "slow": write_stats(folder / "slow.csv", [slow_tail, pins(40, 2000)]),
        "thin": write_stats(folder / "thin.csv", [offers(3, 1000), pins(40, 500)]),
        "absent": write_stats(folder / "absent.csv", [offers(3, 1000)]),
        "failing": write_stats(folder / "failing.csv", [offers(3, 1000, 50), pins(40, 2000)]),
    }


def test_locust_csv_is_read(csvs: dict[str, Path]) -> None:
    """The reader finds each request type of Locust's file with its count, p99 and rate."""
    rows = read_stats(csvs["pass"])
    assert set(rows) == {("GET", "/offers"), ("WS", "pin to viewer")}
    offers_row = rows[("GET", "/offers")]
    assert offers_row.count == 1000 and offers_row.p99_ms == 3
    assert offers_row.rate == pytest.approx(100, rel=0.05)


def test_within_budget_passes(csvs: dict[str, Path], budget: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    """Every type under its ceiling and over its rate: exit 0 and a table of passes."""
    assert main([str(csvs["pass"]), "--budget", str(budget)]) == 0
    out = capsys.readouterr().out
    assert out.count("pass") == 2 and "2 of 2 request types within budget" in out


def test_p99_over_ceiling_fails(csvs: dict[str, Path], budget: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """2 % of offers at 40 ms put the p99 over 5 ms: exit 1, the miss named."""
    assert main([str(csvs["slow"]), "--budget", str(budget)]) == 1
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("GET /offers"))
    assert "MISS p99" in line and "40" in line


def test_rate_under_floor_fails(csvs: dict[str, Path], budget: Path) -> None:
    """50 pins a second against a floor of 100: the rate is missed."""
    verdicts = check(load_budget(budget), read_stats(csvs["thin"]))
    assert [v.misses for v in verdicts] == [(), ("rate",)]
    assert main([str(csvs["thin"]), "--budget", str(budget)]) == 1


def test_absent_type_fails(csvs: dict[str, Path], budget: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    """A budgeted type that the run never reported is a miss, not a pass."""
    assert main([str(csvs["absent"]), "--budget", str(budget)]) == 1
    assert "MISS absent" in capsys.readouterr().out


def test_failures_over_ceiling_fail(csvs: dict[str, Path], budget: Path) -> None:
    """5 % failed requests break the default 1 % ceiling even with fast answers."""
    verdicts = check(load_budget(budget), read_stats(csvs["failing"]))
    assert verdicts[0].misses == ("failures",)


def test_tighten_makes_a_passing_run_fail(csvs: dict[str, Path], budget: Path) -> None:
    """--tighten 0.01 scales ceilings down and floors up until the same run fails."""
    assert main([str(csvs["pass"]), "--budget", str(budget)]) == 0
    assert main([str(csvs["pass"]), "--budget", str(budget), "--tighten", "0.01"]) == 1
    tight = load_budget(budget, 0.01)
    assert tight[0].p99_ms == pytest.approx(0.05) and tight[0].min_rate == pytest.approx(5000)


def test_project_budget_is_valid() -> None:
    """The project's budget holds the four goals of the issue and the two video types,
    its rate floors following the load of loadtests/steps.toml."""
    limits = {lim.key: lim for lim in load_budget()}
    assert limits[("GET", "/offers")].p99_ms == 5
    assert limits[("GET", "/offers")].rate_of == "offers_rate"
    assert limits[("WS", "pin to viewer")].p99_ms == 100
    assert limits[("WS", "checkout to order")].p99_ms == 100
    assert limits[("POST", "/identity/checkin")].p99_ms == 10
    assert {("GET", "/media playlist"), ("GET", "/media segment")} <= set(limits)
    at = {lim.key: lim for lim in for_load(load_budget(), {
        "viewers": 400, "offers_rate": 100, "checkin_rate": 10, "buy_chance": 0.3,
        "hls_viewers": 0})}
    assert at[("GET", "/offers")].min_rate == pytest.approx(90)
    assert at[("WS", "pin to viewer")].min_rate == pytest.approx(360)
    assert not at[("GET", "/media segment")].required  # no players at this load


def test_floor_follows_the_load(tmp_path: Path, csvs: dict[str, Path]) -> None:
    """A rate_of entry's floor is rate_share x the load's field: 100 offers/s pass a
    load of 100/s and miss one of 200/s; a type the load does not offer may be absent."""
    path = tmp_path / "scaled.toml"
    path.write_text(
        '[[budget]]\ntype = "GET"\nname = "/offers"\np99_ms = 5\n'
        'rate_of = "offers_rate"\nrate_share = 0.9\n'
        '[[budget]]\ntype = "GET"\nname = "/media segment"\np99_ms = 250\n'
        'rate_of = "hls_viewers"\nrate_share = 0.8\n')
    rows = read_stats(csvs["pass"])  # 100 offers a second, no media
    low = check(for_load(load_budget(path), {"offers_rate": 100, "hls_viewers": 0}), rows)
    assert [v.misses for v in low] == [(), ()]
    high = check(for_load(load_budget(path), {"offers_rate": 200, "hls_viewers": 10}), rows)
    assert [v.misses for v in high] == [("rate",), ("absent",)]
    with pytest.raises(ValueError, match="rate_of"):
        for_load(load_budget(path), {"viewers": 1})


def test_recorded_run_fails_once_a_ceiling_is_below_it(
        capsys: pytest.CaptureFixture[str]) -> None:
    """The statistics of a real `make loadtest` run (loadtests/recorded/): with every
    ceiling scaled to hold what the service did there, the check passes; with the
    ceilings tightened below what it did, it fails and names the type."""
    limits = for_load(load_budget(), load_steps().default.as_dict())
    rows = read_stats(RECORDED)
    # The factor at which the run's worst type sits exactly on its ceiling.
    held = max(rows[lim.key].p99_ms / lim.p99_ms for lim in limits if lim.key in rows)
    assert main([str(RECORDED), "--tighten", f"{held * 1.001:.6f}"]) == 0
    capsys.readouterr()
    assert main([str(RECORDED), "--tighten", f"{held * 0.5:.6f}"]) == 1
    out = capsys.readouterr().out
    assert "MISS p99" in out and "-- MISSED" in out


def test_bad_budget_is_refused(tmp_path: Path, csvs: dict[str, Path]) -> None:
    """A budget entry without its figures is an error (exit 2), never a silent pass."""
    bad = tmp_path / "bad.toml"
    bad.write_text('[[budget]]\ntype = "GET"\nname = "/offers"\n')
    with pytest.raises(ValueError, match="p99_ms"):
        load_budget(bad)
    assert main([str(csvs["pass"]), "--budget", str(bad)]) == 2
