"""The live protocol's state without I/O: session and connection states, replay, arrival
order, coalescing, and the pacing of the cycle collector."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Literal

from live.errors import LiveError
from live.protocol.messages import Since


class SessionState(enum.Enum):
    """A live session: scheduled (a time and a teaser), then live, then ended; a session
    opened without a time starts live; each moves forward only."""

    SCHEDULED = "scheduled"
    LIVE = "live"
    ENDED = "ended"


_SESSION_NEXT = {
    SessionState.SCHEDULED: frozenset({SessionState.LIVE, SessionState.ENDED}),
    SessionState.LIVE: frozenset({SessionState.ENDED}),
}


def session_transition(current: SessionState, target: SessionState) -> SessionState:
    """``target`` when the table allows moving there from ``current``; otherwise an error
    naming both (``session_ended`` once a session is over)."""
    allowed = _SESSION_NEXT.get(current, frozenset())
    if target not in allowed:
        expected = " or ".join(sorted(s.value for s in _SESSION_NEXT if target in
                                      _SESSION_NEXT[s])) or "nothing"
        raise LiveError(
            "session_ended" if current is SessionState.ENDED else "bad_state",
            f"the session is {current.value}; expected {expected} to move to "
            f"{target.value}",
            409,
        )
    return target


class ConnState(enum.Enum):
    """One WebSocket connection: waiting for hello, then joined, then closed."""

    AWAITING_HELLO = "awaiting_hello"
    JOINED = "joined"
    CLOSED = "closed"


def conn_transition(current: ConnState, target: ConnState) -> ConnState:
    allowed = {
        ConnState.AWAITING_HELLO: {ConnState.JOINED, ConnState.CLOSED},
        ConnState.JOINED: {ConnState.CLOSED},
    }
    if target not in allowed.get(current, set()):
        raise LiveError(
            "bad_state", f"connection is {current.value}; cannot move to {target.value}"
        )
    return target


class ReplayKind(enum.Enum):
    FRESH = "fresh"  # no since: the snapshot only
    REPLAY = "replay"  # exactly the events (since, current]
    LOST = "lost"  # cannot replay them all: recovered false, the snapshot only


@dataclass(frozen=True)
class ReplayPlan:
    kind: ReplayKind
    first: int = 0  # first seq to send
    last: int = 0  # last seq to send (inclusive)


def plan_replay(
    since: Since | None, epoch: str, current: int, oldest_kept: int | None
) -> ReplayPlan:
    """What to send a (re)joining client.

    Args:
        since: what the client says it saw.
        epoch: the session's history epoch now.
        current: the last seq published.
        oldest_kept: the oldest seq still in the history, ``None`` when empty.
    """
    if since is None:
        return ReplayPlan(ReplayKind.FRESH)
    if since.epoch != epoch or since.seq > current:
        return ReplayPlan(ReplayKind.LOST)
    if since.seq == current:
        return ReplayPlan(ReplayKind.REPLAY, current + 1, current)
    if oldest_kept is None or oldest_kept > since.seq + 1:
        return ReplayPlan(ReplayKind.LOST)
    return ReplayPlan(ReplayKind.REPLAY, since.seq + 1, current)


def replay_complete(plan: ReplayPlan, seqs: list[int]) -> bool:
    """The events read from history are exactly the plan's range, in order (history may
    have been trimmed between planning and reading: then nothing is sent)."""
    return seqs == list(range(plan.first, plan.last + 1))


class Arrival(enum.Enum):
    NEXT = "next"
    OLD = "old"
    GAP = "gap"


def classify_arrival(last_seen: int, seq: int) -> Arrival:
    """An event from pub/sub against the last seq this process delivered for the session."""
    if seq <= last_seen:
        return Arrival.OLD
    if seq == last_seen + 1 or last_seen == 0:
        return Arrival.NEXT
    return Arrival.GAP


class Coalescer:
    """Which (session, kind) pairs have pending high-rate values, and when each may next
    be flushed: at most once per ``interval`` seconds per pair, whatever the input rate."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._dirty: set[tuple[str, str]] = set()
        self._next_at: dict[tuple[str, str], float] = {}

    def mark(self, session_id: str, kind: str) -> None:
        self._dirty.add((session_id, kind))

    def due(self, now: float) -> list[tuple[str, str]]:
        """Pairs to flush now; each is then held back for ``interval``."""
        ready = [p for p in self._dirty if self._next_at.get(p, 0.0) <= now]
        for pair in ready:
            self._dirty.discard(pair)
            self._next_at[pair] = now + self.interval
        if len(self._next_at) > 4 * len(self._dirty) + 1024:
            self._next_at = {p: t for p, t in self._next_at.items() if t > now}
        return sorted(ready)

    def retry(self, session_id: str, kind: str) -> None:
        """Another process holds the flush for this pair: try again next time."""
        self._dirty.add((session_id, kind))

    @property
    def pending(self) -> int:
        return len(self._dirty)


class GcPlan:
    """When to take connections' objects out of the cyclic collector's way.

    Each connection leaves a few dozen long-lived objects; after a wave of joins the
    collector's full pass walks all of them (about half a second at 10,000 connections)
    and every viewer's fan-out waits. Once a wave has settled (``settle`` seconds without
    a join, at least ``wave`` joins) the objects are frozen (``gc.freeze``) and full passes
    skip them. Frozen objects of connections that left are only reclaimed by a full pass,
    so after many departures (a quarter of the frozen connections, at least ``wave``) the
    plan says ``compact``: unfreeze, collect once, freeze again.
    """

    def __init__(self, wave: int = 200, settle: float = 0.5) -> None:
        self.wave = wave
        self.settle = settle
        self.fresh = 0  # joined since the last freeze
        self.frozen = 0  # connections frozen and not known to have left
        self.left_since = 0  # departures since the last compaction
        self.last_join = 0.0

    def joined(self, now: float) -> None:
        self.fresh += 1
        self.last_join = now

    def left(self) -> None:
        self.left_since += 1

    def due(self, now: float) -> Literal["freeze", "compact"] | None:
        """What to do now, if anything; the plan assumes it is done."""
        if self.left_since >= max(self.wave, self.frozen // 4):
            self.frozen = max(0, self.frozen + self.fresh - self.left_since)
            self.fresh = self.left_since = 0
            return "compact"
        if self.fresh >= self.wave and now - self.last_join >= self.settle:
            self.frozen += self.fresh
            self.fresh = 0
            return "freeze"
        return None


def coalesced_event(kind: str, values: dict[str, Any]) -> dict[str, Any]:
    """The event for one flush: ``viewers`` carries ``count``, ``reactions`` their
    ``counts`` since the last one, any other kind the latest ``values`` per key."""
    if kind == "viewers":
        return {"type": "viewers", "count": int(sum(int(v) for v in values.values()))}
    if kind == "reactions":
        return {"type": "reactions", "counts": {k: int(v) for k, v in values.items()}}
    return {"type": kind, "values": values}


def coalesced_events(kind: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of one flush: ``stock`` is one event per product that changed, each
    ``{"sku", "left"}`` as the spec has it; any other kind is one ``coalesced_event``."""
    if kind == "stock":
        return [{"type": "stock", "sku": sku, "left": int(left)}
                for sku, left in sorted(values.items())]
    return [coalesced_event(kind, values)]
