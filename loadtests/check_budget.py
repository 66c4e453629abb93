"""Check Locust's statistics against the latency budget (``loadtests/budget.toml``).

Reads the ``*_stats.csv`` that ``locust --csv PREFIX`` writes and, for every request type
in the budget, compares its 99th percentile with the ceiling, its rate with the floor and
its failures with their ceiling. Prints one table; exits 1 when anything is missed,
including a budgeted request type that is not in the run at all.

    python -m loadtests.check_budget PREFIX_stats.csv [--budget FILE] [--tighten F]

``--tighten F`` multiplies every p99 ceiling by F and divides every rate floor by F (F < 1
makes the budget stricter), so the check can be shown to fail.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

BUDGET = Path(__file__).resolve().parent / "budget.toml"
DEFAULT_MAX_FAIL_PCT = 1.0


@dataclass(frozen=True)
class Limit:
    """The budget of one request type."""

    type: str
    name: str
    p99_ms: float
    min_rate: float
    max_fail_pct: float = DEFAULT_MAX_FAIL_PCT
    rate_of: str = ""
    rate_share: float = 0.0
    required: bool = True

    @property
    def key(self) -> tuple[str, str]:
        return self.type, self.name


def for_load(limits: list[Limit], load: Mapping[str, float]) -> list[Limit]:
    """The budget at one level of load: an entry with ``rate_of`` gets the floor
    ``rate_share`` x that field of the load (a type whose field is 0 at this load may be
    absent); the others keep their ``min_rate``."""
    out = []
    for lim in limits:
        if not lim.rate_of:
            out.append(lim)
            continue
        if lim.rate_of not in load:
            raise ValueError(f"{lim.type} {lim.name}: rate_of {lim.rate_of!r} is not a "
                             f"field of the load ({', '.join(sorted(load))})")
        offered = float(load[lim.rate_of])
        out.append(replace(lim, min_rate=lim.rate_share * offered, required=offered > 0))
    return out


@dataclass(frozen=True)
class Row:
    """One line of Locust's stats CSV."""

    type: str
    name: str
    count: int
    failures: int
    p50_ms: float
    p99_ms: float
    rate: float

    @property
    def fail_pct(self) -> float:
        return 100.0 * self.failures / self.count if self.count else 0.0


@dataclass(frozen=True)
class Verdict:
    limit: Limit
    row: Row | None
    misses: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.misses


def load_budget(path: Path = BUDGET, tighten: float = 1.0) -> list[Limit]:
    """The budget's entries; ``tighten`` scales ceilings by F and floors by 1/F."""
    if not tighten > 0:
        raise ValueError("--tighten must be a positive factor")
    data = tomllib.loads(path.read_text())
    entries = data.get("budget")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: no [[budget]] entries")
    limits = []
    for n, entry in enumerate(entries, 1):
        try:
            rate_of = str(entry.get("rate_of", ""))
            limits.append(Limit(
                type=str(entry["type"]), name=str(entry["name"]),
                p99_ms=float(entry["p99_ms"]) * tighten,
                min_rate=(0.0 if rate_of else float(entry["min_rate"])) / tighten,
                max_fail_pct=float(entry.get("max_fail_pct", DEFAULT_MAX_FAIL_PCT)),
                rate_of=rate_of,
                rate_share=float(entry["rate_share"]) / tighten if rate_of else 0.0,
            ))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: budget entry {n} needs type, name, p99_ms and "
                             f"min_rate, or rate_of and rate_share ({exc})") from None
    keys = [lim.key for lim in limits]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{path}: a request type is budgeted twice")
    return limits


def _number(raw: str) -> float:
    return math.nan if raw in ("", "N/A") else float(raw)


def read_stats(path: Path) -> dict[tuple[str, str], Row]:
    """Request types of a Locust stats CSV (the ``Aggregated`` line left out)."""
    rows: dict[tuple[str, str], Row] = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        need = {"Type", "Name", "Request Count", "Failure Count", "50%", "99%", "Requests/s"}
        missing = need - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path} is not a Locust stats CSV (no {', '.join(sorted(missing))})")
        for line in reader:
            if line["Name"] == "Aggregated" and not line["Type"]:
                continue
            row = Row(line["Type"], line["Name"], int(line["Request Count"]),
                      int(line["Failure Count"]), _number(line["50%"]), _number(line["99%"]),
                      _number(line["Requests/s"]))
            rows[(row.type, row.name)] = row
    return rows


def check(limits: list[Limit], rows: dict[tuple[str, str], Row]) -> list[Verdict]:
    verdicts = []
    for lim in limits:
        row = rows.get(lim.key)
        misses: list[str] = []
        if row is None or row.count == 0:
            if lim.required:
                misses.append("absent")
        else:
            if not row.p99_ms <= lim.p99_ms:
                misses.append("p99")
            if not row.rate >= lim.min_rate:
                misses.append("rate")
            if not row.fail_pct <= lim.max_fail_pct:
                misses.append("failures")
        verdicts.append(Verdict(lim, row, tuple(misses)))
    return verdicts


def _fmt(value: float, digits: int = 0) -> str:
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"


def render(verdicts: list[Verdict], rows: dict[tuple[str, str], Row]) -> str:
    """The table: every budgeted type, then the other types of the run (not judged)."""
    head = ("request type", "count", "p50 ms", "p99 ms", "p99 budget", "rate/s",
            "rate budget", "failures", "result")
    lines = []
    for v in verdicts:
        r, lim = v.row, v.limit
        lines.append((
            f"{lim.type} {lim.name}", str(r.count) if r else "0",
            _fmt(r.p50_ms) if r else "-", _fmt(r.p99_ms) if r else "-",
            f"<= {lim.p99_ms:g}", _fmt(r.rate, 1) if r else "-", f">= {lim.min_rate:.4g}",
            f"{r.fail_pct:.1f}%" if r else "-",
            ("pass" if r else "pass (idle)") if v.passed
            else "MISS " + ",".join(v.misses),
        ))
    budgeted = {v.limit.key for v in verdicts}
    for key, r in sorted(rows.items()):
        if key not in budgeted:
            lines.append((f"{r.type} {r.name}", str(r.count), _fmt(r.p50_ms), _fmt(r.p99_ms),
                          "", _fmt(r.rate, 1), "", f"{r.fail_pct:.1f}%", "(not budgeted)"))
    widths = [max(len(x) for x in col) for col in zip(head, *lines, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*head), "  ".join("-" * w for w in widths)]
    out += [fmt.format(*line) for line in lines]
    passed = sum(v.passed for v in verdicts)
    out.append(f"budget: {passed} of {len(verdicts)} request types within budget"
               + ("" if passed == len(verdicts) else " -- MISSED"))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stats", type=Path, help="Locust's PREFIX_stats.csv")
    parser.add_argument("--budget", type=Path, default=BUDGET, help="the budget file")
    parser.add_argument("--tighten", type=float, default=1.0,
                        help="scale ceilings by F and rate floors by 1/F (F < 1: stricter)")
    parser.add_argument("--steps", type=Path, default=None,
                        help="the load file whose rates the floors follow "
                             "(default loadtests/steps.toml)")
    parser.add_argument("--step", type=int, default=0,
                        help="judge against capacity step N (1-based) of that file; "
                             "0: its [default] load")
    args = parser.parse_args(argv)
    try:
        from loadtests.steps import STEPS, load_steps

        steps = load_steps(args.steps or STEPS)
        if not 0 <= args.step <= len(steps.steps):
            raise ValueError(f"--step {args.step}: the file has {len(steps.steps)} steps")
        load = steps.steps[args.step - 1] if args.step else steps.default
        limits = for_load(load_budget(args.budget, args.tighten), load.as_dict())
        rows = read_stats(args.stats)
    except (OSError, ValueError) as exc:
        print(f"check_budget: {exc}", file=sys.stderr)
        return 2
    verdicts = check(limits, rows)
    print(render(verdicts, rows))
    return 0 if all(v.passed for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
