"""Locust user classes for a live sale: viewers, the host, shoppers and store screens.

Request types reported to Locust (``Type`` and ``Name`` in its statistics and CSV):

- ``GET /offers``: a shopper's offers (member token, one of the stores).
- ``POST /identity/checkin``: a store screen checking in a member code (each code once).
- ``WS pin to viewer``: from the moment the host sent ``pin`` to the moment a viewer's
  connection read the ``pinned`` event, one sample per viewer connection and pin.
- ``WS checkout to order``: a buyer's ``checkout`` op to its ``order`` message (a refusal,
  e.g. ``out_of_stock``, is a failure of this type).
- ``WS cart.add to ack``, ``WS join`` (``hello`` to ``welcome``), ``WS pin to ack``,
  ``WS flash.start to ack``: the other round trips, for the record.
- ``handler /offers``, ``handler /identity/checkin``: the service's own time for those
  requests (the body's ``took_ms``, the ``server-timing`` header), for the record.

Viewers come in groups: one ``Viewers`` user holds ``--viewer-group`` connections, all read
by one greenlet (``WsMux``), and acts for each of them (react, chat now and then, add to cart,
buy in flash sales). A Locust user per connection would cost a greenlet, a scheduler and a
wait per viewer for no gain; the group is what lets 2,000 viewers run next to the server on
two cores. Pin latency is still measured on every connection.

The host's send times reach the viewers (which may be in other Locust processes) as a
Locust message, ``pin_sent``, relayed by the master to every worker; a viewer that read the
event before the send time arrived keeps the read time until it does.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import orjson
from locust import FastHttpUser, User, constant, events, task
from locust.dispatch import UsersDispatcher
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

from identity.codes import member_code, totp_step
from identity.types import DeviceIndex
from loadtests.sale.load import (
    current_load,
    groups_for,
    install_pools,
    set_load,
    take_chunk,
)
from loadtests.sale.plan import Pacing, Plan
from loadtests.steps import Load, load_steps
from loadtests.wsclient import WsClient, WsError, WsMux

log = logging.getLogger("newretail.loadtest")

WS = "WS"
PIN_TO_VIEWER = "pin to viewer"
CHECKOUT_TO_ORDER = "checkout to order"
REACTIONS = ("heart", "fire", "clap", "wow", "laugh")
CHAT_LINES = ("love this!", "how big is it?", "does it come in blue?", "just bought one",
              "first time here, hi all", "the price is great", "is shipping free?", "wow")


# Options ---------------------------------------------------------------------------------

@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("newretail live sale")
    group.add_argument("--plan", env_var="NEWRETAIL_LOADTEST_PLAN", default="",
                       help="the plan file written by loadtests/run.py (service, tokens, data)")
    group.add_argument("--viewers", type=int, default=2000, help="viewer connections")
    group.add_argument("--viewer-group", type=int, default=50,
                       help="viewer connections held by one Locust user")
    group.add_argument("--member-share", type=float, default=0.5,
                       help="share of viewers signed in as members (they chat and buy)")
    group.add_argument("--react-every", type=float, default=20.0,
                       help="mean seconds between one viewer's reactions")
    group.add_argument("--chat-every", type=float, default=600.0,
                       help="mean seconds between one member's chat messages")
    group.add_argument("--cart-every", type=float, default=300.0,
                       help="mean seconds between one anonymous viewer's cart adds")
    group.add_argument("--buy-chance", type=float, default=0.3,
                       help="chance a member viewer buys in a flash sale")
    group.add_argument("--buy-within", type=float, default=4.0,
                       help="buyers react to a flash sale within this many seconds")
    group.add_argument("--pin-every", type=float, default=1.0, help="seconds between pins")
    group.add_argument("--flash-every", type=float, default=20.0,
                       help="seconds between flash sales")
    group.add_argument("--flash-seconds", type=int, default=15, help="flash sale length")
    group.add_argument("--shoppers", type=int, default=52, help="offers users")
    group.add_argument("--offers-rate", type=float, default=520.0, help="offers per second")
    group.add_argument("--screens", type=int, default=10, help="check-in users")
    group.add_argument("--checkin-rate", type=float, default=50.0, help="check-ins per second")
    group.add_argument("--warmup", type=float, default=0.0,
                       help="leave the start out of the statistics: they are reset once "
                            "every viewer group has joined, or after this many seconds")
    group.add_argument("--fanout-nice", type=int, default=0,
                       help="niceness a Locust process takes on when it starts viewers or "
                            "the host (the fan-out side), against the HTTP users' processes")
    group.add_argument("--measure", type=float, default=0.0,
                       help="stop this many seconds after the statistics were reset "
                            "(0: at --run-time)")
    group.add_argument("--hls-viewers", type=int, default=0,
                       help="video players fetching the HLS playlist and segments")
    group.add_argument("--probe-rate", type=float, default=10.0,
                       help="floor probes a second, each: GET /healthz and a WebSocket op "
                            "answered without the store (0: none)")
    group.add_argument("--steps", default="",
                       help="climb the steps of this file (loadtests/steps.toml) under the "
                            "capacity locustfile; the other load options are the peak")


class TrafficDispatcher(UsersDispatcher):
    """Locust's dispatcher, with WebSocket users and HTTP users on workers of their own.

    A process holding 2,000 viewers spends whole milliseconds at a time reading one
    session event on every connection; an HTTP response arriving meanwhile waits, and
    Locust would count that wait as the service's latency. So with two or more workers,
    the HTTP users (shoppers, screens) run on the last third of the workers (at least
    one) and the viewers and the host on the others. With one process, nothing changes.
    """

    HTTP_CLASSES = frozenset({"Shopper", "StoreScreen", "HttpProbe"})

    def _pick(self, user: str) -> Any:
        nodes = self._worker_nodes
        if len(nodes) < 2:
            return next(self._worker_node_generator)
        http = max(1, len(nodes) // 3)
        pool = nodes[-http:] if user in self.HTTP_CLASSES else nodes[:-http]
        counts = self._users_on_workers
        return min(pool, key=lambda n: sum(counts[n.id].values()))

    def _add_users_on_workers(self) -> dict[str, dict[str, int]]:
        target = min(self._current_user_count + self._user_count_per_dispatch_iteration,
                     self._target_user_count)
        for user in self._user_generator:
            if not user:
                self._no_user_to_spawn = True
                break
            node = self._pick(user)
            self._users_on_workers[node.id][user] += 1
            self._current_user_count += 1
            self._active_users.append((node, user))
            if self._current_user_count >= target:
                break
        return self._users_on_workers


def fanout_priority(opts: Any) -> None:
    """Lower this process's priority by ``--fanout-nice``, once: it holds viewers or the
    host, whose budgets are in tens of milliseconds, and shares the cores with processes
    whose budgets are in single milliseconds."""
    _lower_priority(int(getattr(opts, "fanout_nice", 0) or 0))


@functools.cache
def _lower_priority(nice: int) -> None:
    if nice > 0:
        os.nice(nice)


def _groups(opts: Any) -> int:
    return groups_for(int(opts.viewers), int(opts.viewer_group))


def options_load(opts: Any) -> Load:
    """The load the options say (``make loadtest``), or the first step's (``--steps``)."""
    if getattr(opts, "steps", "") and Path(opts.steps).is_file():
        # (a worker without the file gets the first step from the master at the start)
        steps = load_steps(Path(opts.steps)).steps
        if steps:
            return steps[0]
    return Load(viewers=int(opts.viewers), offers_rate=float(opts.offers_rate),
                checkin_rate=float(opts.checkin_rate), buy_chance=float(opts.buy_chance),
                hls_viewers=int(getattr(opts, "hls_viewers", 0)))


MEASURES: list[Measure] = []


@events.init.add_listener
def _init(environment: Environment, **_: Any) -> None:
    opts = environment.parsed_options
    if opts is None:
        return
    # The master (or the only process) decides how many users of each class run.
    Viewers.fixed_count = _groups(opts)
    Host.fixed_count = 1
    Shopper.fixed_count = int(opts.shoppers)
    StoreScreen.fixed_count = int(opts.screens)
    if opts.plan:
        base = Plan.load(Path(opts.plan)).base_url
        for cls in (Viewers, Host, Shopper, StoreScreen):
            cls.host = base
    environment.dispatcher_class = TrafficDispatcher
    set_load(options_load(opts))
    runner = environment.runner
    if runner is not None:
        install_pools(environment)
    if isinstance(runner, WorkerRunner):
        _LOCAL_PLAN[:] = [str(opts.plan or "")]
        runner.register_message(
            "load", lambda environment, msg, **_: set_load(Load.from_dict(msg.data)))
    if runner is not None and not isinstance(runner, WorkerRunner):
        measure = Measure(environment)
        measure.install()
        MEASURES[:] = [measure]
    if isinstance(runner, MasterRunner):
        def relay(environment: Environment, msg: Any, **_: Any) -> None:
            runner.send_message("pin_sent", msg.data)

        runner.register_message("pin_sent", relay)
    elif runner is not None:
        def record(environment: Environment, msg: Any, **_: Any) -> None:
            board(environment).sent(int(msg.data["seq"]), float(msg.data["sent"]))

        runner.register_message("pin_sent", record)
        if isinstance(runner, WorkerRunner):
            runner.register_message("measure_start",
                                    lambda **_: runner.stats.reset_all())


class Measure:
    """Where the figures are kept (the master, or the only process): reset the statistics
    once every viewer group says its viewers are in (``viewers_in``) or after ``--warmup``
    seconds, whichever comes first; then measure for ``--measure`` seconds and quit.

    Workers send their figures to the master every few seconds and then start afresh, so
    a reset on the master leaves the warm-up out everywhere. The moment of the reset is
    written next to the plan (``measuring``) for ``loadtests/run.py``'s CPU figures."""

    def __init__(self, environment: Environment) -> None:
        self.env = environment
        self.opts = environment.parsed_options
        self.groups_in = 0
        self.started = False

    def install(self) -> None:
        runner = self.env.runner
        if runner is None:
            return
        runner.register_message("viewers_in", self.group_in)
        if self.opts.warmup > 0:
            self.env.events.test_start.add_listener(
                lambda **_: gevent.spawn_later(float(self.opts.warmup), self.start))

    def group_in(self, environment: Environment, msg: Any, **_: Any) -> None:
        self.groups_in += 1
        if (self.opts.warmup > 0 and not self.opts.steps
                and self.groups_in >= _groups(self.opts)):
            gevent.spawn(self.start)  # not in the message loop: start() waits for reports

    def start(self) -> None:
        if self.started:
            return
        self.started = True
        runner = self.env.runner
        if runner is None:
            return
        if isinstance(runner, MasterRunner):
            # Workers drop what they have not reported yet, or it would count after the
            # reset; reports already on their way arrive within the second we wait here.
            runner.send_message("measure_start")
            gevent.sleep(1.0)
        runner.stats.reset_all()
        log.warning("statistics reset: %d of %d viewer groups in", self.groups_in,
                    _groups(self.opts))
        plan = str(self.opts.plan or "")
        if plan:
            path = Path(plan)
            folder = path.parent / f"{path.stem}.claims"
            folder.mkdir(exist_ok=True)
            (folder / "measuring").write_text(f"{time.time():.3f}")
        if self.opts.measure > 0:
            gevent.spawn_later(float(self.opts.measure), runner.quit)


# Shared per process -------------------------------------------------------------------------

# Messages read by this process's connections: with the process's CPU time this gives the
# load generator's cost per delivery (``loadtests/run.py`` reports it).
READ = {"frames": 0, "bytes": 0}


def _write_reads(environment: Environment) -> None:
    plan = plan_path(environment)
    if isinstance(environment.runner, MasterRunner) or not plan:
        return
    path = Path(plan)
    folder = path.parent / f"{path.stem}.claims"
    folder.mkdir(exist_ok=True)
    tmp = folder / f"read-{os.getpid()}.tmp"
    # with this process's niceness: the runner's record of which side ran behind which
    tmp.write_text(json.dumps({**READ, "nice": os.getpriority(os.PRIO_PROCESS, 0)}))
    tmp.replace(folder / f"read-{os.getpid()}.json")


@events.test_start.add_listener
def _report_reads(environment: Environment, **_: Any) -> None:
    """Every second, so the runner can count the messages of the measured part only."""
    def loop() -> None:
        while True:
            gevent.sleep(1.0)
            _write_reads(environment)

    if not isinstance(environment.runner, MasterRunner):
        gevent.spawn(loop)


@events.test_stop.add_listener
def _last_reads(environment: Environment, **_: Any) -> None:
    _write_reads(environment)

_PLANS: dict[str, Plan] = {}
_LOCAL_PLAN: list[str] = []
_BOARDS: dict[int, PinBoard] = {}


def plan_path(environment: Environment) -> str:
    """This process's plan file: a worker's own ``--plan`` (the master sends its options
    to the workers, its plan path among them; on another machine the copy is elsewhere)."""
    if _LOCAL_PLAN and _LOCAL_PLAN[0]:
        return _LOCAL_PLAN[0]
    return str(getattr(environment.parsed_options, "plan", "") or "")


def plan_of(environment: Environment) -> tuple[Plan, Path]:
    path = plan_path(environment)
    if not path:
        raise StopUser("no plan: pass --plan or set NEWRETAIL_LOADTEST_PLAN")
    if path not in _PLANS:
        _PLANS[path] = Plan.load(Path(path))
    return _PLANS[path], Path(path)


def fire(environment: Environment, name: str, ms: float, size: int = 0,
         error: Exception | None = None) -> None:
    environment.events.request.fire(request_type=WS, name=name, response_time=ms,
                                    response_length=size, exception=error, context={})


def handler_time(environment: Environment, name: str, ms: float) -> None:
    """The service's own time for a request (``took_ms``, ``server-timing``), beside the
    client's: when the two differ, the request waited for a core, not for work."""
    environment.events.request.fire(request_type="handler", name=name, response_time=ms,
                                    response_length=0, exception=None, context={})


class PinBoard:
    """Pins read by this process's viewers, matched with the host's send times."""

    KEEP = 512  # pins remembered; a run pins about one a second

    def __init__(self, report: Callable[[float], None]) -> None:
        self.report = report
        self.sent_at: OrderedDict[int, float] = OrderedDict()
        self.waiting: OrderedDict[int, list[float]] = OrderedDict()

    def read(self, seq: int, at: float) -> None:
        sent = self.sent_at.get(seq)
        if sent is not None:
            self.report((at - sent) * 1000)
            return
        self.waiting.setdefault(seq, []).append(at)
        while len(self.waiting) > self.KEEP:
            self.waiting.popitem(last=False)  # pins not ours, or whose sender is gone

    def sent(self, seq: int, at: float) -> None:
        self.sent_at[seq] = at
        while len(self.sent_at) > self.KEEP:
            self.sent_at.popitem(last=False)
        for read_at in self.waiting.pop(seq, ()):
            self.report((read_at - at) * 1000)


def board(environment: Environment) -> PinBoard:
    key = id(environment)
    if key not in _BOARDS:
        _BOARDS[key] = PinBoard(lambda ms: fire(environment, PIN_TO_VIEWER, ms))
    return _BOARDS[key]


def message_type(payload: bytes) -> bytes:
    """The top-level ``type`` of a JSON message without parsing it: session events are
    ``{"seq":..,"ts":..,"type":..`` and personal messages start with their type."""
    start = payload.find(b'"type":"')
    if start < 0:
        return b""
    start += 8
    return payload[start:payload.find(b'"', start)]


def event_seq(payload: bytes) -> int:
    """The ``seq`` of a session event (the store writes it first)."""
    return int(payload[7:payload.index(b",", 7)])


# One connection ------------------------------------------------------------------------------

class Participant:
    """One WebSocket connection to the session: hello, then a reader greenlet that hands
    every message to ``on_message``."""

    def __init__(self, user: User, url: str, token: str) -> None:
        self.user = user
        self.env = user.environment
        self.url = url
        self.token = token
        self.ws: WsClient | None = None
        self.refs = itertools.count(1)
        self.welcomed = gevent.event.Event()
        self.hello_at = 0.0
        self.reader: gevent.Greenlet[Any] | None = None
        self.mux: WsMux | None = None

    def connect(self, mux: WsMux | None = None) -> bool:
        """Open the connection and say hello; ``mux`` reads it (else a greenlet of its own)."""
        self.hello_at = time.perf_counter()
        try:
            self.ws = WsClient(self.url)
            if mux is None:
                self.reader = gevent.spawn(self._read)
            else:
                self.mux = mux
                mux.add(self.ws, self.on_frames)
            self.send({"op": "hello", "token": self.token})
        except (WsError, OSError) as exc:
            fire(self.env, "join", (time.perf_counter() - self.hello_at) * 1000, error=exc)
            return False
        return True

    def send(self, message: dict[str, Any]) -> None:
        if self.ws is None or self.ws.closed:
            raise WsError("not connected")
        self.ws.send_text(orjson.dumps(message))

    def op(self, op: str, ref: bool = True, **fields: Any) -> str | None:
        """Send an op; returns its ref (None without one: the server then sends no ack)."""
        name = f"{op[0]}{next(self.refs)}" if ref else None
        message = {"op": op, **fields}
        if name:
            message["ref"] = name
        try:
            self.send(message)
        except WsError:
            return None
        return name

    def _read(self) -> None:
        if self.ws is None:
            return
        try:
            self.ws.run(self.on_frames)
        except WsError:
            pass
        except gevent.GreenletExit:
            raise
        except Exception:
            log.exception("reader of %s failed", self.url)

    def on_frames(self, frames: list[bytes], now: float) -> None:
        """The payloads of one read, read at wall-clock time ``now``."""
        READ["frames"] += len(frames)
        for payload in frames:
            kind = message_type(payload)
            if kind == b"welcome":
                fire(self.env, "join", (time.perf_counter() - self.hello_at) * 1000,
                     len(payload))
                self.welcomed.set()
            try:
                self.on_message(kind, payload, now)
            except Exception:
                log.exception("a message of %s failed: %r", self.url, payload[:200])

    def on_message(self, kind: bytes, payload: bytes, now: float) -> None:
        """Override: one message read at wall-clock time ``now``."""

    def close(self) -> None:
        if self.reader is not None:
            self.reader.kill(block=False)
        if self.ws is not None:
            if self.mux is not None:
                self.mux.drop(self.ws)
            self.ws.close()


class Viewer(Participant):
    """A viewer's connection: measures pins on every connection, buys in flash sales."""

    def __init__(self, user: Viewers, url: str, token: str, member: bool) -> None:
        super().__init__(user, url, token)
        self.group = user
        self.member = member
        self.pins = board(self.env)
        self.pending: dict[str, tuple[str, float, str | None]] = {}
        self.checkout_at: float | None = None
        self.checkout_ref: str | None = None
        self.buying: str | None = None

    def on_message(self, kind: bytes, payload: bytes, now: float) -> None:
        if kind == b"pinned":
            self.pins.read(event_seq(payload), now)
        elif kind == b"flash_sale":
            if self.member and random.random() < current_load().buy_chance:
                sale = orjson.loads(payload)
                gevent.spawn_later(random.uniform(0, self.group.buy_within), self.buy,
                                   sale["sku"], float(sale["ends_at"]))
        elif kind == b"order":
            if self.checkout_at is not None:
                fire(self.env, CHECKOUT_TO_ORDER,
                     (time.perf_counter() - self.checkout_at) * 1000, len(payload))
                self.checkout_at = None
        elif kind in (b"ack", b"error"):
            self._answer(kind, orjson.loads(payload))

    def _answer(self, kind: bytes, msg: dict[str, Any]) -> None:
        ref = msg.get("ref")
        if ref is not None and ref == self.checkout_ref and kind == b"error":
            if self.checkout_at is not None:
                fire(self.env, CHECKOUT_TO_ORDER, (time.perf_counter() - self.checkout_at) * 1000,
                     error=RuntimeError(f"checkout refused: {msg.get('code')}"))
            self.checkout_at = None
            if self.buying is not None:
                # As a shopper would: take the refused product out, or the cart keeps
                # refusing every later checkout (checkout buys the whole cart or nothing).
                self.op("cart.remove", ref=False, sku=self.buying)
            return
        entry = self.pending.pop(str(ref), None) if ref is not None else None
        if entry is None:
            return
        name, started, then_checkout = entry
        ms = (time.perf_counter() - started) * 1000
        if kind == b"error":
            fire(self.env, name, ms, error=RuntimeError(f"{msg.get('code')}: {msg.get('message')}"))
            return
        fire(self.env, name, ms)
        if then_checkout:
            self.checkout()

    def add_to_cart(self, sku: str, then_checkout: bool = False) -> None:
        ref = self.op("cart.add", sku=sku, qty=1)
        if ref is not None:
            self.pending[ref] = ("cart.add to ack", time.perf_counter(),
                                 "checkout" if then_checkout else None)

    def buy(self, sku: str, ends_at: float) -> None:
        """Put the sale's product in the cart and check out, while the sale lasts."""
        if (self.ws is None or self.ws.closed or self.checkout_at is not None
                or time.time() > ends_at - 1.0):
            return
        self.buying = sku
        self.add_to_cart(sku, then_checkout=True)

    def checkout(self) -> None:
        self.checkout_at = time.perf_counter()
        self.checkout_ref = self.op("checkout", idempotency_key=uuid.uuid4().hex)
        if self.checkout_ref is None:
            self.checkout_at = None


# User classes -------------------------------------------------------------------------------

class Viewers(User):
    """A group of viewer connections: some anonymous, some members (who may chat and buy).

    Every second, each connection reacts, chats (members) or adds a product to its cart
    (anonymous viewers) with the probabilities the options give; members buy when a flash
    sale starts."""

    fixed_count = 40
    wait_time = constant(1.0)

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        fanout_priority(opts)
        plan, path = plan_of(self.environment)
        chunk = take_chunk(self.environment, path, "viewers", _groups(opts))
        if chunk is None:
            raise StopUser("every viewer group is taken")
        self.chunk = chunk
        self.plan = plan
        self.buy_within = float(opts.buy_within)
        self.lineup = plan.lineup
        self.viewers: list[Viewer] = []
        self.joined = False
        self.react = 1.0 / float(opts.react_every)
        self.chat = 1.0 / float(opts.chat_every)
        self.cart = 1.0 / float(opts.cart_every)
        if self.active():
            self.join()

    def active(self) -> bool:
        """Whether this group's viewers are in at the current load (steps add groups)."""
        size = int(self.environment.parsed_options.viewer_group)
        return self.chunk < groups_for(current_load().viewers, size)

    def join(self) -> None:
        """Connect this group's viewers and wait for their welcomes; tell the master."""
        self.joined = True
        opts = self.environment.parsed_options
        plan, chunk = self.plan, self.chunk
        size = int(opts.viewer_group)
        members_per_group = round(size * float(opts.member_share))
        first = chunk * size
        count = min(size, int(opts.viewers) - first)
        self.mux = WsMux()
        self.mux_reader = gevent.spawn(self.mux.run)
        for i in range(count):
            n = first + i
            member = i < members_per_group and n < len(plan.members)
            token = (plan.members[n][1] if member
                     else plan.viewer_tokens[n % len(plan.viewer_tokens)])
            viewer = Viewer(self, plan.ws_url, token, member)
            if viewer.connect(self.mux):
                self.viewers.append(viewer)
        deadline = time.monotonic() + 120
        for viewer in self.viewers:
            viewer.welcomed.wait(max(0.0, deadline - time.monotonic()))
        if self.environment.runner is not None:
            self.environment.runner.send_message("viewers_in", len(self.viewers))

    @task
    def act(self) -> None:
        if not self.joined:
            if self.active():
                self.join()
            return
        rnd = random.random
        for v in self.viewers:
            if v.ws is None or v.ws.closed or not v.welcomed.is_set():
                continue
            if rnd() < self.react:
                v.op("react", ref=False, kind=random.choice(REACTIONS))
            if v.member:
                if rnd() < self.chat:
                    v.op("chat", ref=False, text=random.choice(CHAT_LINES))
            elif rnd() < self.cart:
                v.add_to_cart(random.choice(self.lineup))

    def on_stop(self) -> None:
        for v in getattr(self, "viewers", ()):
            v.close()
        if hasattr(self, "mux_reader"):
            self.mux_reader.kill(block=False)


class HostConn(Participant):
    """The host's connection: pins, flash sales, and the send time of each pin."""

    def __init__(self, user: Host, url: str, token: str) -> None:
        super().__init__(user, url, token)
        self.pin_sent: dict[str, float] = {}
        self.acks: dict[str, tuple[str, float]] = {}

    def on_message(self, kind: bytes, payload: bytes, now: float) -> None:
        if kind == b"pinned":
            event = orjson.loads(payload)
            sent = self.pin_sent.pop(event["sku"], None)
            if sent is not None:
                self.env.runner.send_message("pin_sent", {"seq": event["seq"], "sent": sent})
        elif kind in (b"ack", b"error"):
            msg = orjson.loads(payload)
            entry = self.acks.pop(str(msg.get("ref")), None)
            if entry is not None:
                name, started = entry
                error = (RuntimeError(f"{msg.get('code')}: {msg.get('message')}")
                         if kind == b"error" else None)
                fire(self.env, name, (time.perf_counter() - started) * 1000, error=error)

    def timed_op(self, name: str, op: str, **fields: Any) -> None:
        started = time.perf_counter()
        ref = self.op(op, **fields)
        if ref is not None:
            self.acks[ref] = (name, started)


class Host(User):
    """The host: pins the next product of the lineup every ``--pin-every`` seconds (after
    unpinning the last) and starts a flash sale every ``--flash-every`` seconds."""

    fixed_count = 1

    def wait_time(self) -> float:
        return float(self.environment.parsed_options.pin_every)

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        fanout_priority(opts)
        plan, _ = plan_of(self.environment)
        self.plan = plan
        self.conn = HostConn(self, plan.ws_url, plan.host_token)
        if not self.conn.connect() or not self.conn.welcomed.wait(30):
            raise StopUser("the host could not join")
        self.lineup = itertools.cycle(plan.lineup)
        self.flash = itertools.cycle(plan.flash_skus)
        self.pinned: str | None = None
        self.next_flash = time.monotonic() + float(opts.flash_every) / 4
        self.flash_every = float(opts.flash_every)
        self.flash_seconds = int(opts.flash_seconds)

    @task
    def run_show(self) -> None:
        conn = self.conn
        if conn.ws is None or conn.ws.closed:
            raise StopUser("the host lost its connection")
        if self.pinned is not None:
            conn.op("unpin", ref=False, sku=self.pinned)
        sku = next(self.lineup)
        conn.pin_sent[sku] = time.time()
        conn.timed_op("pin to ack", "pin", sku=sku)
        self.pinned = sku
        if time.monotonic() >= self.next_flash:
            self.next_flash += self.flash_every
            # A sale ends when a process notices its time is up; make sure the last one has
            # (no-op when it has: the error goes unanswered without a ref).
            conn.op("flash.stop", ref=False)
            conn.timed_op("flash.start to ack", "flash.start", sku=next(self.flash),
                          # below every demo product's list price (at least 1.99)
                          price={"amount": 100, "currency": "GBP"},
                          qty=100_000, seconds=self.flash_seconds)

    def on_stop(self) -> None:
        if hasattr(self, "conn"):
            self.conn.close()


def paced(user: Any, rate: float) -> float:
    """Seconds until ``user`` acts again at ``rate`` a second (its ``pace``, made anew
    when a step changes the rate); at rate 0 it looks again in a second, idle."""
    pace: Pacing | None = user.pace
    if rate <= 0:
        user.pace = None
        return 1.0
    if pace is None or pace.rate != rate:
        user.pace = pace = Pacing(rate)
    return pace.wait(time.monotonic())


class Shopper(FastHttpUser):
    """A member asking for offers at one of the stores (``GET /offers``)."""

    fixed_count = 52

    def wait_time(self) -> float:
        return paced(self, current_load().offers_rate
                     / max(1, int(self.environment.parsed_options.shoppers)))

    def on_start(self) -> None:
        self.plan, _ = plan_of(self.environment)
        self.pace: Pacing | None = None

    @task
    def offers(self) -> None:
        if self.pace is None:
            return
        member_id, token = random.choice(self.plan.members)
        store = random.choice(self.plan.stores)
        res = self.client.get(f"/offers?member_id={member_id}&n=10&store_id={store}",
                              name="/offers", headers={"authorization": f"Bearer {token}"})
        if res.status_code == 200 and res.content:
            handler_time(self.environment, "/offers", float(orjson.loads(res.content)["took_ms"]))


class StoreScreen(FastHttpUser):
    """A store screen checking in the member codes that phones show: each device of this
    screen's share shows a fresh code every 30 s step, and each code is checked in once."""

    fixed_count = 10

    def wait_time(self) -> float:
        return paced(self, current_load().checkin_rate
                     / max(1, int(self.environment.parsed_options.screens)))

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.pace: Pacing | None = None
        plan, path = plan_of(self.environment)
        screens = max(1, int(opts.screens))
        chunk = take_chunk(self.environment, path, "screens", screens)
        if chunk is None:
            raise StopUser("every screen is taken")
        share = len(plan.devices) // screens
        self.devices = [(DeviceIndex(i), bytes.fromhex(s))
                        for i, s in plan.devices[chunk * share:(chunk + 1) * share]]
        self.last_step = [-1] * len(self.devices)
        self.next = 0
        screen_id, self.token = plan.screens[chunk % len(plan.screens)]

    @task
    def check_in(self) -> None:
        if self.pace is None:
            return
        if not self.devices:
            raise StopUser("no devices for this screen")
        now = time.time()
        step = totp_step(now)
        i = self.next
        if self.last_step[i] >= step:
            # Every device of this screen has checked in during this step: wait for the
            # next code rather than send one the server must refuse.
            gevent.sleep((step + 1) * 30 - now)
            return
        self.next = (i + 1) % len(self.devices)
        self.last_step[i] = step
        index, secret = self.devices[i]
        with self.client.post("/identity/checkin", name="/identity/checkin",
                              headers={"authorization": f"Bearer {self.token}"},
                              json={"code": member_code(index, secret, now)},
                              catch_response=True) as res:
            if res.status_code != 200:
                res.failure(f"HTTP {res.status_code}: {res.text[:200]}")
                return
            timing = res.headers.get("server-timing") or ""
            if "dur=" in timing:
                handler_time(self.environment, "/identity/checkin",
                             float(timing.split("dur=")[1].split(";")[0]))
