"""The capacity run's figures: per step, each request type's p50/p99 against its ceiling,
the floors measured in the same step, the CPU of each process; the knee and the capacity;
a Markdown table and a plot. Pure apart from writing the files."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from loadtests.check_budget import Limit, Row, Verdict, check, for_load
from loadtests.steps import Load

HTTP_FLOOR = ("GET", "/healthz")
WS_FLOOR = ("WS", "probe to error")
FLOORS = {"HTTP floor (GET /healthz)": HTTP_FLOOR, "WS floor (unknown op)": WS_FLOOR}


@dataclass
class StepResult:
    """One step: its load, Locust's rows, the verdicts against the budget at that load,
    and each process's CPU (share of one core) over the measured part."""

    number: int
    load: Load
    rows: dict[tuple[str, str], Row]
    verdicts: list[Verdict]
    cpu: dict[str, float] = field(default_factory=dict)
    joined: str = ""
    store: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def held(self) -> bool:
        return all(v.passed for v in self.verdicts)

    def misses(self) -> list[str]:
        return [f"{v.limit.type} {v.limit.name}: {','.join(v.misses)}"
                for v in self.verdicts if not v.passed]


def judge(number: int, load: Load, rows: dict[tuple[str, str], Row],
          limits: list[Limit], cpu: dict[str, float] | None = None) -> StepResult:
    return StepResult(number, load, rows, check(for_load(limits, load.as_dict()), rows),
                      dict(cpu or {}))


def knee(results: list[StepResult]) -> tuple[StepResult | None, StepResult | None]:
    """(capacity, knee): the last step of the unbroken run of held steps from the first,
    and the first step that missed (None when every step held / the first missed)."""
    capacity = None
    for result in results:
        if not result.held:
            return capacity, result
        capacity = result
    return capacity, None


def held_by_type(results: list[StepResult], limits: list[Limit]) -> list[tuple[Limit, int]]:
    """For each budgeted type, the last step of the unbroken run from step 1 where it
    held (0: it missed at the first step)."""
    out = []
    for lim in limits:
        last = 0
        for r in results:
            verdict = next((v for v in r.verdicts if v.limit.key == lim.key), None)
            if verdict is None or not verdict.passed:
                break
            last = r.number
        out.append((lim, last))
    return out


def first_breaks(result: StepResult) -> list[str]:
    """The request types that missed at a step, the furthest over its ceiling first."""
    over = []
    for v in result.verdicts:
        if v.passed:
            continue
        ratio = (v.row.p99_ms / v.limit.p99_ms) if v.row and v.limit.p99_ms else math.inf
        over.append((ratio, f"{v.limit.type} {v.limit.name}"))
    return [name for _, name in sorted(over, reverse=True)]


def _ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}".rstrip("0").rstrip(".")


def _pair(row: Row | None) -> str:
    return "-" if row is None else f"{_ms(row.p50_ms)} / {_ms(row.p99_ms)}"


def render_markdown(results: list[StepResult], limits: list[Limit], title: str = "") -> str:
    capacity, broke = knee(results)
    out = [f"# Capacity{': ' + title if title else ''}", ""]
    out.append("p50 / p99 in ms per request type (ceiling in the header); floors measured in "
               "the same step; CPU as % of one core over the measured part.")
    out.append("")
    types = [(lim.type, lim.name) for lim in limits]
    head = ["step", "viewers", "offers/s", "check-ins/s", "players", "held"]
    head += [f"{t} {n} (≤ {lim.p99_ms:g})" for (t, n), lim in zip(types, limits, strict=True)]
    head += list(FLOORS)
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    for r in results:
        cells = [str(r.number), f"{r.load.viewers:,}", f"{r.load.offers_rate:g}",
                 f"{r.load.checkin_rate:g}", f"{r.load.hls_viewers:,}",
                 "yes" if r.held else "**no**"]
        for v in r.verdicts:
            cell = _pair(v.row)
            cells.append(cell if v.passed else f"**{cell}** ({','.join(v.misses)})")
        cells += [_pair(r.rows.get(key)) for key in FLOORS.values()]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    parts = sorted({p for r in results for p in r.cpu if p != "wall"})
    if parts:
        out.append("| step | " + " | ".join(parts) + " |")
        out.append("|---|" + "---:|" * len(parts))
        for r in results:
            out.append(f"| {r.number} | " + " | ".join(
                f"{100 * r.cpu[p]:.0f} %" if p in r.cpu else "-" for p in parts) + " |")
        out.append("")
    if any(r.store for r in results):
        from loadtests.store_stalls import render as render_stalls

        out.append("The store standing still (Valkey's latency monitor, events of 1 ms or "
                   "more: in how many of the step's seconds, the worst):")
        out.append("")
        for r in results:
            out.append(f"- step {r.number}: {render_stalls(r.store)}")
        out.append("")
    out.append("Last step each request type held its ceiling (of an unbroken run from "
               "step 1; 0: not even the first):")
    out.append("")
    for lim, held in held_by_type(results, limits):
        out.append(f"- {lim.type} {lim.name} (≤ {lim.p99_ms:g} ms): {held}")
    out.append("")
    if capacity is None:
        out.append("Capacity: none of the steps held (the first step is over budget).")
    else:
        out.append(f"Capacity: step {capacity.number} ({capacity.load.label()}).")
    if broke is not None:
        out.append(f"Knee: step {broke.number} ({broke.load.label()}); first over: "
                   + ", ".join(first_breaks(broke)) + ".")
        later = [r.number for r in results if r.number > broke.number and r.held]
        if later:
            out.append(f"Steps past the knee that held again: {later} (noise at the edge).")
    else:
        out.append("Knee: not reached; every step held.")
    return "\n".join(out) + "\n"


def to_json(results: list[StepResult]) -> str:
    capacity, broke = knee(results)
    return json.dumps({
        "capacity_step": capacity.number if capacity else None,
        "knee_step": broke.number if broke else None,
        "steps": [{
            "step": r.number, "load": r.load.as_dict(), "held": r.held,
            "misses": r.misses(), "cpu": r.cpu, "joined": r.joined, "store": r.store,
            "rows": {f"{k[0]} {k[1]}": {"count": v.count, "failures": v.failures,
                                         "p50_ms": v.p50_ms, "p99_ms": v.p99_ms,
                                         "rate": v.rate}
                     for k, v in r.rows.items()},
        } for r in results]}, indent=1, default=str)


def plot(results: list[StepResult], limits: list[Limit], path: Path) -> None:
    """p99 of each budgeted type and the two floors against the step, the ceilings as
    dashed lines of the same colour, the knee marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    capacity, broke = knee(results)
    x = [r.number for r in results]
    fig, ax = plt.subplots(figsize=(11, 6.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, lim in enumerate(limits):
        c = colours[i % len(colours)]
        ys = [r.rows[lim.key].p99_ms if lim.key in r.rows else math.nan for r in results]
        ax.plot(x, ys, "o-", color=c, label=f"{lim.type} {lim.name} p99")
        ax.axhline(lim.p99_ms, color=c, ls="--", lw=0.9, alpha=0.7)
    for j, (label, key) in enumerate(FLOORS.items()):
        ys = [r.rows[key].p99_ms if key in r.rows else math.nan for r in results]
        ax.plot(x, ys, "s:", color="black" if j == 0 else "grey", label=f"{label} p99")
    if broke is not None:
        ax.axvline(broke.number, color="red", lw=2, alpha=0.5, label=f"knee: step {broke.number}")
    if capacity is not None:
        ax.axvline(capacity.number, color="green", lw=2, alpha=0.5,
                   label=f"capacity: step {capacity.number}")
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels([f"{r.number}\n{r.load.viewers:,} v\n{r.load.offers_rate:g} o/s\n"
                        f"{r.load.hls_viewers} hls" for r in results], fontsize=8)
    ax.set_xlabel("step (viewers, offers/s, HLS players; check-ins = offers/10)")
    ax.set_ylabel("p99 ms (log); dashed: the budget's ceilings")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("Live sale: p99 and floor per step against the budget")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summarize_collapsed(text: str, top: int = 15) -> str:
    """The functions most samples were in, from py-spy's raw output (collapsed stacks:
    ``frame;frame;...;leaf count`` a line): share of samples with the function as the leaf
    (self) and anywhere on the stack (with callees)."""
    total = 0
    leaf: dict[str, int] = {}
    anywhere: dict[str, int] = {}
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        leaf[frames[-1]] = leaf.get(frames[-1], 0) + n
        for frame in set(frames):
            anywhere[frame] = anywhere.get(frame, 0) + n
    if not total:
        return "(no samples)"
    lines = [f"{total:,} samples"]
    for frame, n in sorted(leaf.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * n / total:5.1f} % self  {100 * anywhere[frame] / total:5.1f} % "
                     f"with callees  {frame}")
    return "\n".join(lines)
