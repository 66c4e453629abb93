"""``make capacity``: how much of a live sale one deployment holds within its budget, and
where it breaks.

Prepares the service as ``make loadtest`` does (``loadtests/run.py``), sized for the
steps' peak, then runs Locust with a load shape that climbs the steps of
``loadtests/steps.toml`` (``loadtests/sale/shape.py``), each held long enough for a stable
p99. Per step: p50/p99 of every request type, judged against the ceilings of
``loadtests/budget.toml`` (the rate floors follow the step's load); the floors measured in
the same step (``GET /healthz``, a WebSocket op answered without the store); the CPU of
each process. The capacity is the last step of the unbroken run of steps that held from
the first; the knee is the step after it. Table, JSON and plot in
``loadtests/results/capacity.{md,json,png}``; each step's Locust CSV beside them.

    python -m loadtests.capacity [--steps FILE] [--budget FILE] [--processes 2]
        [--nice N] [--fanout-nice 10] [--title TEXT] [--profile-steps 5,6]
        [-- LOCUST ARGS...]

``--profile-steps`` records the web processes with py-spy (``pip install py-spy`` in the
venv; not a dependency of the project) during those steps' measured part, and prints
where their samples were: ``capacity_stepNN_{web,ws}.txt`` (collapsed stacks).

Exit 0 when the run produced its figures (whatever the capacity), 2 when it failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from loadtests import run as lt
from loadtests.capacity_report import (
    StepResult,
    judge,
    knee,
    plot,
    render_markdown,
    summarize_collapsed,
    to_json,
)
from loadtests.check_budget import load_budget, read_stats
from loadtests.steps import load_steps
from loadtests.store_stalls import StoreStalls, store_url

CAPACITY_LOCUSTFILE = lt.ROOT / "loadtests" / "locust_capacity.py"


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    raw = list(sys.argv[1:] if argv is None else argv)
    def own(flag: str) -> str:
        if flag not in raw:
            return ""
        i = raw.index(flag)
        value = raw[i + 1]
        del raw[i:i + 2]
        return value

    title = own("--title")
    profile = {int(n) for n in own("--profile-steps").split(",") if n.strip()}
    args, extra = lt.parse_args(raw)
    steps = load_steps(args.steps)
    if not steps.steps:
        raise ValueError(f"{args.steps}: no [[step]] to climb")
    peak = steps.peak()
    for name in ("viewers", "offers_rate", "checkin_rate", "buy_chance", "hls_viewers"):
        setattr(args, name, getattr(peak, name))
    args.shoppers = max(1, -(-int(peak.offers_rate) // 10))
    args.capacity_steps = args.steps
    args.warmup = args.run_time = 0  # the steps say when to measure, not Measure
    args.locustfile = CAPACITY_LOCUSTFILE
    args.title = title
    args.profile_steps = profile
    args.steps_data = steps
    return args, extra


def worker_roles(claims: Path, workers: list[int | None]) -> dict[str, str]:
    """``locust worker N`` -> ``locust ws`` / ``locust http`` by what each read
    (``workers``: each worker's Locust process id, see ``python_of``)."""
    names: dict[str, str] = {}
    for n, python in enumerate(workers):
        with contextlib.suppress(OSError, ValueError):
            frames = int(json.loads((claims / f"read-{python}.json").read_text())["frames"])
            names[f"locust worker {n}"] = "locust ws" if frames > 0 else "locust http"
    return names


def python_of(pid: int) -> int | None:
    """The topmost Python process at or under ``pid`` (the runner starts each under
    ``timeout``)."""
    import psutil

    try:
        top = psutil.Process(pid)
        for proc in [top, *top.children(recursive=True)]:
            if "python" in proc.name().lower():
                return int(proc.pid)
    except psutil.Error:
        return None
    return None


def start_profiles(service: lt.Service, n: int, seconds: float,
                   results: Path) -> list[subprocess.Popen[bytes]]:
    """py-spy on each web process for ``seconds`` (raw collapsed stacks), if installed."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("py-spy is not installed: no profile (pip install py-spy)", file=sys.stderr)
        return []
    started = []
    for _, proc, log in service.servers:
        pid = python_of(proc.pid)
        if pid is None:
            continue
        role = log.stem.split("-")[1]
        out = results / f"capacity_step{n:02d}_{role}.txt"
        started.append(subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--subprocesses", "--nonblocking",
             "--duration", str(int(seconds)), "--rate", "100", "--format", "raw",
             "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return started


def run(a: argparse.Namespace, extra: list[str]) -> int:
    steps = a.steps_data
    limits = load_budget(a.budget, a.tighten)
    results_dir: Path = a.results
    results_dir.mkdir(parents=True, exist_ok=True)
    for old in [*results_dir.glob("capacity_*.csv"), *results_dir.glob("capacity_step*.txt")]:
        old.unlink()
    prefix = results_dir / "capacity"
    planned = steps.seconds() + steps.schedule.join_wait_seconds * len(steps.steps)
    print(f"capacity: {len(steps.steps)} steps, about {steps.seconds() / 60:.1f} min of load "
          f"(at most {planned / 60:.1f})", flush=True)
    procs = lt.Processes(a.nice)
    service = None
    with lt.scratch(a.keep) as tmp:
        try:
            service = lt.prepare(a, tmp, procs, limit=planned + 300)
            locust, workers, meter = lt.start_locust(
                a, service, procs, tmp, prefix, extra, limit=planned + 120)
            claims = service.plan.parent / f"{service.plan.stem}.claims"
            folder = claims / "steps"
            url = store_url(tmp / "var")
            store = StoreStalls(url) if url else None
            stalls: dict[int, dict[str, dict[str, float]]] = {}
            marks: dict[int, dict[str, tuple[dict[str, float], float, float]]] = {}
            records: dict[int, dict[str, object]] = {}
            spies: list[subprocess.Popen[bytes]] = []
            pythons: list[int | None] = []
            deadline = time.monotonic() + planned + 150
            while locust.poll() is None and time.monotonic() < deadline:
                meter.sample()
                if not pythons and folder.exists():
                    # each runs under `timeout`; the read files have Locust's own pid
                    pythons = [python_of(w.pid) for w in workers]
                for path in sorted(folder.glob("step-*.json")) if folder.exists() else []:
                    with contextlib.suppress(OSError, ValueError):
                        rec = json.loads(path.read_text())
                        n = int(rec["step"])
                        seen = marks.setdefault(n, {})
                        for edge in ("start", "end"):
                            if edge in rec and edge not in seen:
                                seen[edge] = meter.totals()
                                if store is not None and edge == "start":
                                    store.reset()
                                if store is not None and edge == "end":
                                    stalls[n] = store.read()
                                if edge == "start" and n in a.profile_steps:
                                    spies += start_profiles(
                                        service, n, steps.schedule.measure_seconds,
                                        results_dir)
                                if edge == "end":
                                    print(f"step {n} measured", flush=True)
                        records[n] = rec
                time.sleep(0.5)
            code = locust.poll()
            for spy in spies:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    spy.wait(timeout=30)
            lt.keep_logs(tmp, service, results_dir, "capacity")
            roles = worker_roles(claims, pythons)
            results: list[StepResult] = []
            for n, load in enumerate(steps.steps, 1):
                csv_path = Path(f"{prefix}_step{n:02d}_stats.csv")
                if not csv_path.exists():
                    print(f"step {n}: no statistics (Locust exit {code})", file=sys.stderr)
                    break
                edges = marks.get(n, {})
                cpu = (lt.cpu_between(edges["start"], edges["end"])
                       if "start" in edges and "end" in edges else {})
                named: dict[str, float] = {}
                for k, v in cpu.items():
                    name = roles.get(k, k)
                    named[name if name not in named else f"{name} ({k})"] = v
                cpu = named
                result = judge(n, load, read_stats(csv_path), limits, cpu)
                rec = records.get(n, {})
                result.joined = f"{rec.get('groups_in', '?')}/{rec.get('groups_needed', '?')}"
                result.store = stalls.get(n, {})
                results.append(result)
            if not results:
                print("capacity: Locust wrote no step; its log:\n"
                      + (tmp / "locust.log").read_text(errors="replace")[-4000:],
                      file=sys.stderr)
                return 2
            title = a.title or time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            md = render_markdown(results, limits, title)
            (results_dir / "capacity.md").write_text(md)
            (results_dir / "capacity.json").write_text(to_json(results))
            plot(results, limits, results_dir / "capacity.png")
            print(md)
            capacity, broke = knee(results)
            for path in sorted(results_dir.glob("capacity_step*_*.txt")):
                print(f"\nprofile {path.name} (share of samples, self / with callees):")
                print(summarize_collapsed(path.read_text()))
            print(f"table, JSON and plot: {results_dir}/capacity.{{md,json,png}}")
            return 0 if capacity is not None or broke is not None else 2
        finally:
            if service is not None and service.stream is not None:
                service.stream.stop()
            procs.stop_all()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args, extra = parse_args(argv)
        return run(args, extra)
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"capacity: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
