"""Locust users beside the sale: video players on HLS, and the two floor probes.

- ``VideoViewer``: a player on the session's live HLS stream: fetches ``index.m3u8`` once a
  target duration and each segment it has not fetched yet, once (three from the live edge
  to start, as hls.js does). Reports ``GET /media playlist`` and ``GET /media segment``.
- ``HttpProbe``: ``GET /healthz`` (no work, no store) on the HTTP web process at
  ``--probe-rate``: the floor an HTTP request sees on this machine at this load.
- ``WsProbe``: a viewer connection sending an op the service does not know; the hub's
  core answers it with an ``unknown_op`` error before any handler runs, so nothing reaches
  the store: ``WS probe to error`` is the floor of a WebSocket round trip.

Players and the WebSocket probe run beside the viewers (the fan-out side, at its
niceness); the HTTP probe beside the shoppers (``TrafficDispatcher``).
"""

from __future__ import annotations

import random
import time
from typing import Any

import orjson
from locust import FastHttpUser, User, events, task
from locust.env import Environment
from locust.exception import StopUser

from live.media.playlist import parse_media_playlist
from loadtests.sale.load import current_load, take_chunk
from loadtests.sale.users import Participant, fanout_priority, fire, plan_of
from loadtests.wsclient import WsError

PLAYLIST = "/media playlist"
SEGMENT = "/media segment"
WS_PROBE = "probe to error"
HTTP_PROBE = "/healthz"
START_FROM_EDGE = 3
SEEN_KEEP = 64


@events.init.add_listener
def _init(environment: Environment, **_: Any) -> None:
    opts = environment.parsed_options
    if opts is None:
        return
    VideoViewer.fixed_count = int(opts.hls_viewers)
    probes = 1 if float(opts.probe_rate) > 0 else 0
    HttpProbe.fixed_count = WsProbe.fixed_count = probes
    if opts.plan:
        from pathlib import Path

        from loadtests.sale.plan import Plan

        base = Plan.load(Path(opts.plan)).base_url
        for cls in (VideoViewer, HttpProbe, WsProbe):
            cls.host = base


def new_segments(uris: list[str], seen: set[str], first: bool) -> list[str]:
    """The segments a player fetches after reading a playlist listing ``uris`` (pure):
    each one not fetched yet, and at the start only the last ``START_FROM_EDGE``."""
    fresh = [u for u in uris if u not in seen]
    return fresh[-START_FROM_EDGE:] if first else fresh


class VideoViewer(FastHttpUser):
    """A video player on the live stream (HLS), at a player's pace."""

    fixed_count = 0

    def wait_time(self) -> float:
        return self.next_wait

    def on_start(self) -> None:
        fanout_priority(self.environment.parsed_options)
        plan, path = plan_of(self.environment)
        chunk = take_chunk(self.environment, path, "players",
                           int(self.environment.parsed_options.hls_viewers))
        if chunk is None:
            raise StopUser("every player is taken")
        self.index = chunk
        self.folder = f"/media/{plan.session_id}/"
        self.seen: set[str] = set()
        self.order: list[str] = []
        self.first = True
        self.next_wait = random.uniform(0, 1.0)  # players do not start in step

    @task
    def play(self) -> None:
        if self.index >= current_load().hls_viewers:
            self.next_wait, self.first = 1.0, True  # off at this step; starts afresh
            return
        started = time.monotonic()
        target = 1.0
        with self.client.get(self.folder + "index.m3u8", name=PLAYLIST,
                             catch_response=True) as res:
            if res.status_code != 200 or not res.content:
                res.failure(f"HTTP {res.status_code}")
                self.next_wait = 1.0
                return
            try:
                segments = parse_media_playlist(res.text)
            except ValueError as exc:
                res.failure(f"bad playlist: {exc}")
                self.next_wait = 1.0
                return
        if segments:
            target = segments[-1].duration
        for uri in new_segments([s.uri for s in segments], self.seen, self.first):
            with self.client.get(self.folder + uri, name=SEGMENT, catch_response=True) as seg:
                if seg.status_code != 200:
                    seg.failure(f"HTTP {seg.status_code}")
                    continue
            self.seen.add(uri)
            self.order.append(uri)
        self.first = False
        while len(self.order) > SEEN_KEEP:
            self.seen.discard(self.order.pop(0))
        self.next_wait = max(0.0, target - (time.monotonic() - started))


class HttpProbe(FastHttpUser):
    """``GET /healthz`` at ``--probe-rate``: what a request that does no work waits."""

    fixed_count = 0

    def wait_time(self) -> float:
        return 1.0 / max(0.1, float(self.environment.parsed_options.probe_rate))

    @task
    def probe(self) -> None:
        self.client.get("/healthz", name=HTTP_PROBE)


class ProbeConn(Participant):
    """A viewer connection whose unknown ops come back as errors, timed."""

    def __init__(self, user: User, url: str, token: str) -> None:
        super().__init__(user, url, token)
        self.sent: dict[str, float] = {}

    def on_message(self, kind: bytes, payload: bytes, now: float) -> None:
        if kind != b"error":
            return
        msg = orjson.loads(payload)
        started = self.sent.pop(str(msg.get("ref")), None)
        if started is None:
            return
        ms = (time.perf_counter() - started) * 1000
        error = None if msg.get("code") == "unknown_op" else RuntimeError(str(msg.get("code")))
        fire(self.env, WS_PROBE, ms, len(payload), error)


class WsProbe(User):
    """One viewer connection sending an unknown op at ``--probe-rate`` (answered without
    the store): the WebSocket floor."""

    fixed_count = 0

    def wait_time(self) -> float:
        return 1.0 / max(0.1, float(self.environment.parsed_options.probe_rate))

    def on_start(self) -> None:
        fanout_priority(self.environment.parsed_options)
        plan, _ = plan_of(self.environment)
        token = plan.viewer_tokens[-1] if plan.viewer_tokens else plan.host_token
        self.conn = ProbeConn(self, plan.ws_url, token)
        if not self.conn.connect() or not self.conn.welcomed.wait(60):
            raise StopUser("the probe could not join")

    @task
    def probe(self) -> None:
        conn = self.conn
        if conn.ws is None or conn.ws.closed:
            raise StopUser("the probe lost its connection")
        ref = f"probe{next(conn.refs)}"
        conn.sent[ref] = time.perf_counter()
        try:
            conn.send({"op": "floor.probe", "ref": ref})
        except WsError:
            conn.sent.pop(ref, None)
        while len(conn.sent) > 256:
            conn.sent.pop(next(iter(conn.sent)))

    def on_stop(self) -> None:
        if hasattr(self, "conn"):
            self.conn.close()


