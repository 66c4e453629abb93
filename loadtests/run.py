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
        [--steps FILE] [--viewers N] [--offers-rate R] [--checkin-rate R] [--hls-viewers N]
        [--fanout-nice 10] [--fanout-chunk 128] [-- LOCUST ARGS...]

The load's defaults are the ``[default]`` of ``loadtests/steps.toml`` (what this kind of
machine holds within budget); the options override them. The budget's rate floors follow
the load run (``rate_of`` in ``loadtests/budget.toml``).
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
from dataclasses import dataclass
from pathlib import Path

import httpx

from loadtests.check_budget import BUDGET, check, for_load, load_budget, read_stats, render
from loadtests.sale.video import SyntheticStream
from loadtests.steps import STEPS, Load, load_steps

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

    def __init__(self, servers: list[tuple[str, int]], locust: list[int],
                 locust_names: list[str] | None = None) -> None:
        import psutil

        self.psutil = psutil
        names = locust_names or ["locust"] * len(locust)
        self.roots = [*servers, *zip(names, locust, strict=True)]
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

    def totals(self) -> tuple[dict[str, float], float, float]:
        """CPU seconds so far of each part, of the whole machine (busy), and the time: two
        of these a step apart give the step's CPU figures (``cpu_between``)."""
        self.sample()
        parts: dict[str, float] = {}
        for _, (part, seconds) in self.seen.items():
            parts[part] = parts.get(part, 0.0) + seconds
        end = self.psutil.cpu_times()
        busy = sum(getattr(end, f) for f in ("user", "system", "nice", "irq", "softirq", "steal")
                   if hasattr(end, f))
        return parts, busy, time.monotonic()

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


def cpu_between(before: tuple[dict[str, float], float, float],
                after: tuple[dict[str, float], float, float]) -> dict[str, float]:
    """Each part's CPU between two ``CpuMeter.totals`` as a share of one core (1.0 = a
    core), with ``other`` (the machine's busy time not ours) and ``wall`` seconds."""
    (p0, busy0, t0), (p1, busy1, t1) = before, after
    wall = max(1e-9, t1 - t0)
    out = {part: (p1[part] - p0.get(part, 0.0)) / wall for part in p1}
    out["other"] = max(0.0, (busy1 - busy0) / wall - sum(out.values()))
    out["wall"] = wall
    return out


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
    parser.add_argument("--steps", type=Path, default=STEPS,
                        help="the load file: its [default] is the load run here")
    parser.add_argument("--viewers", type=int, default=None,
                        help="viewer connections (default: the steps file's)")
    parser.add_argument("--viewer-group", type=int, default=50)
    parser.add_argument("--offers-rate", type=float, default=None,
                        help="offers a second (default: the steps file's)")
    parser.add_argument("--shoppers", type=int, default=None,
                        help="offers users (default: one per 10 offers a second)")
    parser.add_argument("--checkin-rate", type=float, default=None,
                        help="check-ins a second (default: the steps file's)")
    parser.add_argument("--buy-chance", type=float, default=None,
                        help="share of member viewers buying in a flash sale")
    parser.add_argument("--hls-viewers", type=int, default=None,
                        help="HLS video players (default: the steps file's)")
    parser.add_argument("--hls-kbit", type=int, default=500,
                        help="bitrate of the synthetic live stream the players fetch")
    parser.add_argument("--probe-rate", type=float, default=10.0,
                        help="floor probes a second (GET /healthz, a WebSocket op answered "
                             "without the store); 0: none")
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
    args = parser.parse_args(raw)
    fill_load(args, load_steps(args.steps).default)
    return args, extra


def fill_load(args: argparse.Namespace, default: Load) -> Load:
    """The load options left out take the steps file's default; returns the load run."""
    for name in ("viewers", "offers_rate", "checkin_rate", "buy_chance", "hls_viewers"):
        if getattr(args, name, None) is None:
            setattr(args, name, getattr(default, name))
    if getattr(args, "shoppers", None) is None:
        args.shoppers = max(1, math.ceil(args.offers_rate / 10))
    return args_load(args)


def args_load(args: argparse.Namespace) -> Load:
    return Load(viewers=int(args.viewers), offers_rate=float(args.offers_rate),
                checkin_rate=float(args.checkin_rate), buy_chance=float(args.buy_chance),
                hls_viewers=int(args.hls_viewers))


def locust_commands(args: argparse.Namespace, plan: Path, csv_prefix: Path,
                    extra: list[str]) -> list[list[str]]:
    """The Locust processes: one, or a master and ``--processes`` workers. Each is started
    on its own (not with Locust's ``--processes``, which forks them in one session), so on
    a shared Linux machine each gets its own share of the CPU like the service's processes."""
    groups = -(-args.viewers // args.viewer_group) if args.viewers > 0 else 0
    probes = 2 if args.probe_rate > 0 else 0
    users = groups + 1 + args.shoppers + args.screens + args.hls_viewers + probes
    locustfile = getattr(args, "locustfile", LOCUSTFILE)
    locust = [sys.executable, "-m", "locust", "-f", str(locustfile), "--loglevel", "WARNING"]
    ours = [
        "--plan", str(plan), "--warmup", str(args.warmup), "--measure", str(args.run_time),
        "--viewers", str(args.viewers), "--viewer-group", str(args.viewer_group),
        "--offers-rate", str(args.offers_rate), "--shoppers", str(args.shoppers),
        "--checkin-rate", str(args.checkin_rate), "--screens", str(args.screens),
        "--fanout-nice", str(args.fanout_nice if args.split else 0),
        "--buy-chance", str(args.buy_chance), "--hls-viewers", str(args.hls_viewers),
        "--probe-rate", str(args.probe_rate),
    ]
    if getattr(args, "capacity_steps", None):
        ours += ["--steps", str(args.capacity_steps)]
        run = ["--headless", "--stop-timeout", "5", "--csv", str(csv_prefix),
               "--only-summary"]
    else:
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


@dataclass
class Service:
    """The prepared service: its web processes (url, process, log), the plan file, and
    the synthetic live stream the players fetch (None without players)."""

    servers: list[tuple[str, subprocess.Popen[bytes], Path]]
    plan: Path
    stream: SyntheticStream | None


def prepare(args: argparse.Namespace, tmp: Path, procs: Processes, limit: float) -> Service:
    """Data, the service (under ``limit`` seconds), the session and its plan, the stream."""
    from live.web.settings import Settings
    from loadtests.sale.seed import make_plan, seed, write_plan

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
            env, log, limit=limit, nice=args.fanout_nice if role == "ws" else 0)
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc, log, timeout=60)
        servers.append((url, proc, log))
    plan = write_plan(tmp / "plan.json", make_plan(
        servers[0][0], seeded, screens=args.screens, anonymous_viewers=max(args.viewers, 1),
        ws_base=servers[-1][0]))
    stream = None
    if args.hls_viewers > 0:
        # Served by the HTTP web process from var/media/{session_id}/ (loadtests/sale/video.py).
        from loadtests.sale.plan import Plan

        stream = SyntheticStream(var / "media" / Plan.load(plan).session_id,
                                 kbit_per_s=args.hls_kbit)
        stream.start()
    return Service(servers, plan, stream)


def start_locust(args: argparse.Namespace, service: Service, procs: Processes, tmp: Path,
                 csv_prefix: Path, extra: list[str],
                 limit: float) -> tuple[subprocess.Popen[bytes], list[subprocess.Popen[bytes]],
                                        CpuMeter]:
    """Locust's master (or only process) and workers, and a CPU meter over everything."""
    cmds = locust_commands(args, service.plan, csv_prefix, extra)
    print("locust:", " ".join(cmds[0][2:]), flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    locust = procs.start(cmds[0], env, tmp / "locust.log", limit=limit)
    workers = [procs.start(cmd, env, tmp / f"locust-worker-{n}.log", limit=limit)
               for n, cmd in enumerate(cmds[1:])]
    names = ["locust" if not workers else "locust master"]
    names += [f"locust worker {n}" for n in range(len(workers))]
    meter = CpuMeter([(f"service {log.stem.split('-')[1]}", p.pid)
                      for _, p, log in service.servers],
                     [locust.pid] + [w.pid for w in workers], names)
    return locust, workers, meter


def keep_logs(tmp: Path, service: Service, results: Path, stem: str) -> None:
    for log in [tmp / "locust.log", *sorted(tmp.glob("locust-worker-*.log")),
                *(log for _, _, log in service.servers)]:
        if log.exists():
            shutil.copy(log, results / f"{stem}_{log.name}")


def run(args: argparse.Namespace, extra: list[str]) -> int:
    load = args_load(args)
    # a bad budget fails before any work
    limits = for_load(load_budget(args.budget, args.tighten), load.as_dict())
    args.results.mkdir(parents=True, exist_ok=True)
    csv_prefix = args.results / "loadtest"
    for old in args.results.glob("loadtest_*.csv"):
        old.unlink()
    procs = Processes(args.nice)
    service: Service | None = None
    with scratch(args.keep) as tmp:
        try:
            service = prepare(args, tmp, procs, limit=args.warmup + args.run_time + 240)
            limit = args.warmup + args.run_time + 90
            locust, workers, meter = start_locust(args, service, procs, tmp, csv_prefix,
                                                  extra, limit)
            claims = service.plan.parent / f"{service.plan.stem}.claims"
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
            keep_logs(tmp, service, args.results, "loadtest")
            stats = Path(f"{csv_prefix}_stats.csv")
            if not stats.exists():
                print(f"locust wrote no statistics (exit {code}); its log:\n"
                      + (tmp / "locust.log").read_text(errors="replace")[-4000:],
                      file=sys.stderr)
                return 2
            if code not in (0, 1):  # 1: Locust saw failed requests, judged by the budget
                print(f"locust exited with {code}; see {args.results}/loadtest_locust.log",
                      file=sys.stderr)
            rows = read_stats(stats)
            verdicts = check(limits, rows)
            print(f"\nbudget {args.budget.name}"
                  + (f" tightened x{args.tighten:g}" if args.tighten != 1 else "")
                  + f", {args.run_time} s of load ({load.label()}), statistics in {stats}")
            print(render(verdicts, rows))
            print(cpu)
            if reads:
                print(reads)
            return 0 if all(v.passed for v in verdicts) else 1
        finally:
            if service is not None and service.stream is not None:
                service.stream.stop()
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
