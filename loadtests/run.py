"""``make loadtest``: prepare a service, run the live-sale Locust test, check the budget.

1. A fresh var dir in a temporary folder (never ``var/`` or anything shared): demo data
   (catalog, stores, members with history, as ``newretail demo`` makes it), a trained model,
   signed-in devices for member codes, stock for the flash sales.
2. ``newretail serve`` on 127.0.0.1 with its embedded store, under a time limit: one
   process for HTTP, one for WebSockets (at ``--fanout-nice`` lower priority, writing
   ``--fanout-chunk`` viewers a turn).
3. The live session opened by a host, every token signed, all in a plan file for Locust.
4. Locust, headless: a master and ``--processes`` workers; the statistics start once every
   viewer has joined (``--warmup`` seconds at most) and run for ``--run-time`` seconds; CSV
   in ``loadtests/results/loadtest_*.csv``.
5. The budget check (``loadtests/budget.toml``); the exit code says whether it passed.

Every process started here is stopped on the way out, whatever happened; each also has a
hard time limit and dies with this process.

    python -m loadtests.run [--run-time 60] [--processes 2] [--tighten F] [--budget FILE]
        [--viewers 2000] [--offers-rate 520] [--checkin-rate 50] [--fanout-nice 10]
        [--fanout-chunk 128] [-- LOCUST ARGS...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx

from loadtests.check_budget import BUDGET, check, load_budget, read_stats, render

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "loadtests" / "results"
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
# The service's environment in the run. All load comes from 127.0.0.1: a per-address
# connection limit in the service, if it gets one, would have to be lifted here.
SERVER_ENV = {"NEWRETAIL_LOG_LEVEL": "WARNING"}


def _child_setup(nice: int, own: int = 0) -> Callable[[], None]:
    def setup() -> None:
        """In the child: get SIGTERM when the process that started us dies (Linux), and
        the niceness asked for: ``nice`` for the whole run, ``own`` on top for this process
        alone."""
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PDEATHSIG
        if nice + own:
            os.nice(nice + own)
        if nice:
            # With autogroup scheduling (Linux's default for desktops and many VMs), CPU
            # is shared between sessions and a process's own niceness only counts inside
            # its session: set the session's as well, against other sessions' work.
            with contextlib.suppress(OSError):
                Path("/proc/self/autogroup").write_text(str(nice))

    return setup


class Processes:
    """Processes started by this run, each in a group of its own, all stopped at exit."""

    def __init__(self, nice: int = 0) -> None:
        self.started: list[subprocess.Popen[bytes]] = []
        self.nice = nice

    def start(self, cmd: Sequence[str], env: dict[str, str], log: Path,
              limit: float, nice: int = 0) -> subprocess.Popen[bytes]:
        """``cmd`` under ``timeout``: it gets SIGTERM after ``limit`` s, SIGKILL 10 s later."""
        full = ["timeout", "-k", "10", f"{math.ceil(limit)}", *cmd]
        with log.open("wb") as out:
            proc = subprocess.Popen(full, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                    # A process group of its own (stopped as one),
                                    # in this session: a session per process would be
                                    # an autogroup each, and the scheduler would share
                                    # the cores per group, not per process (the web
                                    # workers and the store got one share together).
                                    process_group=0,
                                    preexec_fn=_child_setup(self.nice, nice))
        self.started.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
        """SIGTERM to the process's group (its children too), SIGKILL if it lingers."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # Children may outlive their parent (the store under the server): end the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            self.stop(proc)


class CpuMeter:
    """CPU seconds used by the service, its store, Locust and everything else on the machine
    while the load runs: the figure that says whether the load generator fits."""

    def __init__(self, servers: list[tuple[str, int]], locust: list[int]) -> None:
        import psutil

        self.psutil = psutil
        self.roots = [*servers, *(("locust", pid) for pid in locust)]
        self.seen: dict[int, tuple[str, float]] = {}
        self.base: dict[int, float] = {}
        self.started = time.monotonic()
        self.wall = 0.0
        self.machine_start = psutil.cpu_times()

    def mark(self) -> None:
        """Count from now on (the end of the warm-up)."""
        self.sample()
        self.base = {pid: seconds for pid, (_, seconds) in self.seen.items()}
        self.started = time.monotonic()
        self.machine_start = self.psutil.cpu_times()

    def _part(self, root: str, proc: object) -> str:
        name = proc.name()  # type: ignore[attr-defined]
        return "store" if "valkey" in name else root

    def sample(self) -> None:
        psutil = self.psutil
        for root, pid in self.roots:
            try:
                top = psutil.Process(pid)
                procs = [top, *top.children(recursive=True)]
            except psutil.Error:
                continue
            for proc in procs:
                try:
                    t = proc.cpu_times()
                    self.seen[proc.pid] = (self._part(root, proc), t.user + t.system)
                except psutil.Error:
                    continue

    def measured(self, pid: int) -> float:
        """CPU seconds of process ``pid`` since ``mark``."""
        return self.seen.get(pid, ("", 0.0))[1] - self.base.get(pid, 0.0)

    def report(self) -> str:
        self.wall = wall = time.monotonic() - self.started
        end = self.psutil.cpu_times()
        busy = sum(getattr(end, f) - getattr(self.machine_start, f)
                   for f in ("user", "system", "nice", "irq", "softirq", "steal")
                   if hasattr(end, f))
        parts: dict[str, float] = {}
        for pid, (part, seconds) in self.seen.items():
            parts[part] = parts.get(part, 0.0) + seconds - self.base.get(pid, 0.0)
        ours = sum(parts.values())
        cores = self.psutil.cpu_count() or 1
        cells = [f"{k} {v / wall:.0%}" for k, v in sorted(parts.items())]
        cells.append(f"other processes {max(0.0, busy - ours) / wall:.0%}")
        cells.append(f"idle {max(0.0, cores - busy / wall):.0%}")
        return (f"CPU over {wall:.0f} s of load (100% = one core, {cores} cores): "
                + ", ".join(cells))


def read_counts(folder: Path) -> dict[int, int]:
    """Messages read so far by each Locust process holding WebSockets (they write the
    count every second), by process id."""
    import json

    counts = {}
    for path in folder.glob("read-*.json"):
        with contextlib.suppress(OSError, ValueError):
            counts[int(path.stem.split("-")[1])] = int(json.loads(path.read_text())["frames"])
    return counts


def read_cost(base: dict[int, int], end: dict[int, int], meter: CpuMeter) -> str:
    """The load generator's CPU per message read, over the measured part, for the Locust
    processes that hold the WebSocket connections."""
    frames = 0
    seconds = 0.0
    for pid, count in end.items():
        if count - base.get(pid, 0) > 0:
            frames += count - base.get(pid, 0)
            seconds += meter.measured(pid)
    if not frames or not seconds:
        return ""
    return (f"Locust processes holding the WebSockets: {frames:,} messages read while "
            f"measured ({frames / meter.wall:,.0f}/s), {seconds:.1f} CPU s, "
            f"{seconds / frames * 1e6:.1f} us per message")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n"
                               + log.read_text(errors="replace")[-3000:])
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server was not ready within {timeout:.0f} s:\n"
                               + log.read_text(errors="replace")[-3000:])
        time.sleep(0.2)


def service_env(var: Path) -> dict[str, str]:
    """The environment of the service: this one without a store URL (so the service
    starts its embedded store under ``var``) and with ``var`` as its var dir."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "NEWRETAIL_REDIS_URL")}
    return {**env, **SERVER_ENV, "NEWRETAIL_VAR_DIR": str(var)}


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.run", description=__doc__.splitlines()[0],
        epilog="Arguments after -- go to Locust as they are.")
    parser.add_argument("--budget", type=Path, default=BUDGET, help="budget file")
    parser.add_argument("--tighten", type=float, default=1.0,
                        help="scale p99 ceilings by F and rate floors by 1/F (F < 1: stricter)")
    parser.add_argument("--run-time", type=int, default=60,
                        help="seconds of load measured, after the warm-up")
    parser.add_argument("--warmup", type=int, default=60,
                        help="at most this many seconds of load before measuring (it starts "
                             "as soon as every viewer has joined)")
    parser.add_argument("--processes", type=int, default=2,
                        help="Locust workers (with a master) when > 1; 1: one Locust process")
    parser.add_argument("--viewers", type=int, default=2000)
    parser.add_argument("--viewer-group", type=int, default=50)
    parser.add_argument("--offers-rate", type=float, default=520.0)
    parser.add_argument("--shoppers", type=int, default=52)
    parser.add_argument("--checkin-rate", type=float, default=50.0)
    parser.add_argument("--screens", type=int, default=10)
    parser.add_argument("--members", type=int, default=3000, help="demo members to seed")
    parser.add_argument("--workers", type=int, default=1,
                        help="uvicorn workers serving HTTP (one: on two cores shared with "
                             "the WebSocket process, the store and Locust, a second worker "
                             "cost more CPU per offer and kept every member's taste twice; "
                             "the WebSocket process, with --split, keeps one)")
    parser.add_argument("--split", action=argparse.BooleanOptionalAction, default=True,
                        help="WebSockets and HTTP on web processes of their own (default), or "
                             "everything on one (--no-split)")
    parser.add_argument("--nice", type=int, default=0,
                        help="niceness of the service and Locust (e.g. -10, as root: ahead of "
                             "other work on a shared machine, which then gets less CPU)")
    parser.add_argument("--fanout-nice", type=int, default=10,
                        help="extra niceness of the WebSocket process and of the Locust "
                             "processes holding viewers and the host (with --split): "
                             "budgets of tens of ms give way to budgets of a few ms")
    parser.add_argument("--fanout-chunk", type=int, default=128,
                        help="NEWRETAIL_LIVE_FANOUT_CHUNK of the WebSocket process (with "
                             "--split): viewers written between turns of its event loop")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="where Locust's CSV and the logs go")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (data, plan, logs)")
    raw = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in raw:
        cut = raw.index("--")
        raw, extra = raw[:cut], raw[cut + 1:]
    return parser.parse_args(raw), extra


def locust_commands(args: argparse.Namespace, plan: Path, csv_prefix: Path,
                    extra: list[str]) -> list[list[str]]:
    """The Locust processes: one, or a master and ``--processes`` workers. Each is started
    on its own (not with Locust's ``--processes``, which forks them in one session), so on
    a shared Linux machine each gets its own share of the CPU like the service's processes."""
    groups = -(-args.viewers // args.viewer_group) if args.viewers > 0 else 0
    users = groups + 1 + args.shoppers + args.screens
    locust = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--loglevel", "WARNING"]
    ours = [
        "--plan", str(plan), "--warmup", str(args.warmup), "--measure", str(args.run_time),
        "--viewers", str(args.viewers), "--viewer-group", str(args.viewer_group),
        "--offers-rate", str(args.offers_rate), "--shoppers", str(args.shoppers),
        "--checkin-rate", str(args.checkin_rate), "--screens", str(args.screens),
        "--fanout-nice", str(args.fanout_nice if args.split else 0),
    ]
    run = [
        "--headless", "-u", str(users), "-r", str(max(users, 1)),
        "-t", f"{args.warmup + args.run_time}s", "--stop-timeout", "5",
        "--csv", str(csv_prefix), "--only-summary",
    ]
    if args.processes <= 1:
        return [locust + run + ours + extra]
    port = free_port()
    master = locust + run + ours + extra + [
        "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
        "--expect-workers", str(args.processes)]
    worker = locust + ours + ["--worker", "--master-host", "127.0.0.1",
                              "--master-port", str(port)]
    return [master] + [worker] * args.processes


@contextlib.contextmanager
def scratch(keep: bool) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="newretail-loadtest-"))
    try:
        yield folder
    finally:
        if keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from live.web.settings import Settings
    from loadtests.sale.seed import make_plan, seed, write_plan

    limits = load_budget(args.budget, args.tighten)  # a bad budget fails before any work
    args.results.mkdir(parents=True, exist_ok=True)
    csv_prefix = args.results / "loadtest"
    for old in args.results.glob("loadtest_*.csv"):
        old.unlink()
    procs = Processes(args.nice)
    with scratch(args.keep) as tmp:
        try:
            var = tmp / "var"
            started = time.perf_counter()
            # Seeding writes a lot: the store syncs once a second meanwhile; the service
            # below runs with the default (every acknowledged write on disk).
            devices = math.ceil(args.checkin_rate * 30 * 1.5) + 10 * args.screens
            seeded = asyncio.run(seed(
                Settings(var_dir=var, db_fsync="everysec", log_level="WARNING"),
                members=args.members, devices=devices))
            print(f"prepared in {time.perf_counter() - started:.1f} s: {args.members:,} "
                  f"members, {devices:,} devices, model {seeded.model_version}", flush=True)
            # The first process starts the embedded store under var/, the second joins it.
            servers: list[tuple[str, subprocess.Popen[bytes], Path]] = []
            for role in ("web", "ws") if args.split else ("web",):
                port = free_port()
                log = tmp / f"server-{role}.log"
                workers = args.workers if role == "web" else 1
                env = service_env(var)
                if role == "ws":
                    env["NEWRETAIL_LIVE_FANOUT_CHUNK"] = str(args.fanout_chunk)
                proc = procs.start(
                    [sys.executable, "-m", "live.web.cli", "serve", "--port", str(port),
                     "--workers", str(workers)],
                    env, log, limit=args.warmup + args.run_time + 240,
                    nice=args.fanout_nice if role == "ws" else 0)
                url = f"http://127.0.0.1:{port}"
                wait_healthy(url, proc, log, timeout=60)
                servers.append((url, proc, log))
            plan = write_plan(tmp / "plan.json", make_plan(
                servers[0][0], seeded, screens=args.screens, anonymous_viewers=args.viewers,
                ws_base=servers[-1][0]))
            cmds = locust_commands(args, plan, csv_prefix, extra)
            print("locust:", " ".join(cmds[0][2:]), flush=True)
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            limit = args.warmup + args.run_time + 90
            locust_log = tmp / "locust.log"
            locust = procs.start(cmds[0], env, locust_log, limit=limit)
            workers = [procs.start(cmd, env, tmp / f"locust-worker-{n}.log", limit=limit)
                       for n, cmd in enumerate(cmds[1:])]
            meter = CpuMeter([(f"service {log.stem.split('-')[1]}", p.pid)
                              for _, p, log in servers],
                             [locust.pid] + [w.pid for w in workers])
            claims = plan.parent / f"{plan.stem}.claims"
            reads_base: dict[int, int] = {}
            deadline = time.monotonic() + args.warmup + args.run_time + 120
            measuring = False
            while locust.poll() is None and time.monotonic() < deadline:
                meter.sample()
                if not measuring and (claims / "measuring").exists():
                    # Locust reset its statistics: count CPU and messages from here.
                    meter.mark()
                    reads_base = read_counts(claims)
                    measuring = True
                time.sleep(0.5)
            code = locust.poll()
            code = -1 if code is None else code
            cpu = meter.report()
            reads = read_cost(reads_base, read_counts(claims), meter)
            for log in [locust_log, *sorted(tmp.glob("locust-worker-*.log"))]:
                shutil.copy(log, args.results / f"loadtest_{log.name}")
            for _, _, log in servers:
                shutil.copy(log, args.results / f"loadtest_{log.name}")
            stats = Path(f"{csv_prefix}_stats.csv")
            if not stats.exists():
                print(f"locust wrote no statistics (exit {code}); its log:\n"
                      + locust_log.read_text(errors="replace")[-4000:], file=sys.stderr)
                return 2
            if code not in (0, 1):  # 1: Locust saw failed requests, judged by the budget
                print(f"locust exited with {code}; see {args.results}/loadtest_locust.log",
                      file=sys.stderr)
            rows = read_stats(stats)
            verdicts = check(limits, rows)
            print(f"\nbudget {args.budget.name}"
                  + (f" tightened x{args.tighten:g}" if args.tighten != 1 else "")
                  + f", {args.run_time} s of load, statistics in {stats}")
            print(render(verdicts, rows))
            print(cpu)
            if reads:
                print(reads)
            return 0 if all(v.passed for v in verdicts) else 1
        finally:
            procs.stop_all()


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = parse_args(argv)
    try:
        return run(args, extra)
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
