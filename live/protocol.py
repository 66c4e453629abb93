"""The live protocol without I/O: frames to ops, roles, session states, coalescing, replay.

Everything here is plain functions and small classes; the WebSocket endpoint and the
store code in ``live.hub`` and ``live.sessions`` are pumps around them.
"""

from __future__ import annotations

import enum
import hashlib
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, NewType, TypedDict

import msgpack
import orjson

from live.errors import LiveError

ConnId = NewType("ConnId", str)
UserId = NewType("UserId", str)

SUBPROTOCOL_JSON = "newretail.json"
SUBPROTOCOL_MSGPACK = "newretail.msgpack"

MAX_PINS = 3
MAX_CHAT_CHARS = 280
MAX_REF_CHARS = 64
RECENT_CHAT = 50
CHAT_RATE = (5, 10)  # messages per window of seconds, per member and session
REACTION_KINDS = frozenset({"heart", "fire", "clap", "laugh", "wow"})

# Close codes: 1008 for a token or role problem at hello; 4001 when the connection
# could not keep up with the session (its outgoing buffer passed the bound).
CLOSE_POLICY = 1008
CLOSE_SLOW_CONSUMER = 4001
CLOSE_SESSION_ENDED = 1000

HOST_ROLES = frozenset({"host", "admin"})
AUDIENCE_ROLES = frozenset({"viewer", "member", "host", "admin"})
CHAT_ROLES = frozenset({"member", "host", "admin"})


class Format(enum.Enum):
    """How frames are encoded on one connection."""

    JSON = "json"
    MSGPACK = "msgpack"


def choose_format(offered: Iterable[str]) -> tuple[Format, str | None]:
    """The format for a connection from the subprotocols it offered, and the one to accept."""
    offered = list(offered)
    if SUBPROTOCOL_MSGPACK in offered:
        return Format.MSGPACK, SUBPROTOCOL_MSGPACK
    if SUBPROTOCOL_JSON in offered:
        return Format.JSON, SUBPROTOCOL_JSON
    return Format.JSON, None


def encode(message: Any, fmt: Format) -> bytes:
    if fmt is Format.JSON:
        return orjson.dumps(message)
    packed: bytes = msgpack.packb(message, use_bin_type=True)
    return packed


OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2


def frame(payload: bytes, fmt: Format) -> bytes:
    """A complete unmasked server frame (FIN set) carrying ``payload``: text for JSON,
    binary for msgpack. Built once per event and written to every connection as is."""
    first = 0x80 | (OPCODE_TEXT if fmt is Format.JSON else OPCODE_BINARY)
    n = len(payload)
    if n < 126:
        head = bytes((first, n))
    elif n < 65536:
        head = struct.pack("!BBH", first, 126, n)
    else:
        head = struct.pack("!BBQ", first, 127, n)
    return head + payload


def frame_payloads(data: bytes) -> list[bytes]:
    """The payloads of the complete frames built by ``frame`` and joined in ``data``."""
    payloads = []
    at = 0
    while at < len(data):
        n = data[at + 1] & 0x7F
        head = 2 if n < 126 else (4 if n == 126 else 10)
        if head > 2:
            n = int.from_bytes(data[at + 2:at + head], "big")
        at += head
        payloads.append(data[at:at + n])
        at += n
    return payloads


def decode_frame(data: str | bytes, fmt: Format) -> dict[str, Any]:
    """A client frame as an object, or ``bad_frame``."""
    try:
        if fmt is Format.MSGPACK and isinstance(data, bytes):
            obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
        else:
            obj = orjson.loads(data)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise LiveError("bad_frame", "the frame is not valid " + fmt.value) from None
    if not isinstance(obj, dict):
        raise LiveError("bad_frame", "a frame must be an object with an op")
    return obj


# Wire messages ------------------------------------------------------------------------


class ErrorMessage(TypedDict):
    type: Literal["error"]
    code: str
    message: str
    ref: str | int | None


class Ack(TypedDict):
    type: Literal["ack"]
    ref: str | int


def error_message(code: str, message: str, ref: str | int | None = None) -> ErrorMessage:
    return {"type": "error", "code": code, "message": message, "ref": ref}


@dataclass(frozen=True)
class Since:
    epoch: str
    seq: int


@dataclass(frozen=True)
class Hello:
    token: str
    since: Since | None
    ref: str | int | None = None


@dataclass(frozen=True)
class ClientOp:
    op: str
    payload: dict[str, Any]
    ref: str | int | None


def parse_ref(msg: dict[str, Any]) -> str | int | None:
    ref = msg.get("ref")
    if ref is None:
        return None
    if isinstance(ref, bool) or not isinstance(ref, str | int):
        raise LiveError("bad_frame", "ref must be a string or an integer")
    if isinstance(ref, str) and len(ref) > MAX_REF_CHARS:
        raise LiveError("bad_frame", f"ref must be at most {MAX_REF_CHARS} characters")
    return ref


def parse_op(msg: dict[str, Any]) -> ClientOp:
    """An op frame: ``{"op": str, "ref"?: str|int, ...payload}``."""
    op = msg.get("op")
    if not isinstance(op, str) or not op:
        raise LiveError("bad_frame", "a frame needs an op")
    ref = parse_ref(msg)
    payload = {k: v for k, v in msg.items() if k not in ("op", "ref")}
    return ClientOp(op, payload, ref)


def parse_hello(msg: dict[str, Any]) -> Hello:
    """The first frame: ``{"op": "hello", "token": str, "since"?: {"epoch", "seq"}}``."""
    if msg.get("op") != "hello":
        raise LiveError("bad_frame", "the first frame must be hello")
    token = msg.get("token")
    if not isinstance(token, str) or not token:
        raise LiveError("bad_frame", "hello needs a token")
    since = msg.get("since")
    parsed: Since | None = None
    if since is not None:
        if not isinstance(since, dict):
            raise LiveError("bad_frame", "since must be {epoch, seq}")
        epoch, seq = since.get("epoch"), since.get("seq")
        if not isinstance(epoch, str) or isinstance(seq, bool) or not isinstance(seq, int):
            raise LiveError("bad_frame", "since must be {epoch: str, seq: int}")
        if seq < 0:
            raise LiveError("bad_frame", "since.seq must not be negative")
        parsed = Since(epoch, seq)
    return Hello(token, parsed, parse_ref(msg))


def require_str(payload: dict[str, Any], name: str, max_len: int = 128) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value.strip():
        raise LiveError("bad_request", f"{name} must be a non-empty string")
    if len(value) > max_len:
        raise LiveError("bad_request", f"{name} must be at most {max_len} characters")
    return value


def chat_text(payload: dict[str, Any]) -> str:
    """Plain chat text: control characters dropped, trimmed, 1 to MAX_CHAT_CHARS long."""
    raw = payload.get("text")
    if not isinstance(raw, str):
        raise LiveError("bad_request", "chat needs text")
    text = "".join(ch for ch in raw if ch.isprintable() or ch == " ").strip()
    if not text:
        raise LiveError("bad_request", "chat text must not be empty")
    if len(text) > MAX_CHAT_CHARS:
        raise LiveError("bad_request", f"chat text must be at most {MAX_CHAT_CHARS} characters")
    return text


def check_session_host(what: str, role: str, user: str, host: str) -> None:
    """A host runs the sessions they host and no other; admins run any."""
    if role == "host" and user != host:
        raise LiveError("forbidden", f"{what}: this session is hosted by someone else", 403)


def reaction_kind(payload: dict[str, Any]) -> str:
    kind = payload.get("kind")
    if not isinstance(kind, str) or kind not in REACTION_KINDS:  # a list is unhashable
        raise LiveError("bad_request", "kind must be one of " + ", ".join(sorted(REACTION_KINDS)))
    return str(kind)


def check_role(op: str, allowed: frozenset[str], role: str) -> None:
    """Refuse ``op`` to ``role``: ``sign_in_required`` for an anonymous viewer when
    members may do it (the page then offers sign-in), else ``forbidden``."""
    if role not in allowed:
        if role == "viewer" and "member" in allowed:
            raise LiveError("sign_in_required", f"sign in to {op}", 403)
        raise LiveError(
            "forbidden", f"{op} needs one of the roles {', '.join(sorted(allowed))}; you are {role}"
        )


# Chat names ----------------------------------------------------------------------------

MAX_NAME_CHARS = 40
_ADJECTIVES = (
    "Amber", "Bright", "Calm", "Clever", "Cosy", "Crisp", "Daring", "Eager", "Gentle",
    "Golden", "Happy", "Jolly", "Keen", "Kind", "Lively", "Lucky", "Merry", "Mellow", "Nimble",
    "Plucky", "Quick", "Quiet", "Rosy", "Sunny", "Swift", "Tidy", "Vivid", "Witty", "Zesty",
    "Breezy", "Cheery", "Snappy",
)
_ANIMALS = (
    "Badger", "Beaver", "Bison", "Crane", "Dolphin", "Falcon", "Ferret", "Finch", "Fox",
    "Gecko", "Heron", "Koala", "Lark", "Lemur", "Lynx", "Magpie", "Marten", "Moose", "Newt",
    "Otter", "Owl", "Panda", "Puffin", "Quail", "Robin", "Seal", "Stoat", "Swan", "Tapir",
    "Walrus", "Wombat", "Wren",
)
# Seven digits or more, with the usual separators: a phone number, never shown as a name.
_PHONE_LIKE = re.compile(r"\+?\d(?:[\s().-]*\d){6,}")


def friendly_label(user: str) -> str:
    """A stable label for someone without a display name: the same id gets the same
    ``Adjective Animal NN`` everywhere; it says nothing about who they are."""
    h = hashlib.blake2s(user.encode(), digest_size=4).digest()
    return f"{_ADJECTIVES[h[0] % len(_ADJECTIVES)]} {_ANIMALS[h[1] % len(_ANIMALS)]} " \
           f"{int.from_bytes(h[2:], 'big') % 100:02d}"


def chat_name(role: str, user: str, display_name: str | None) -> str:
    """The name shown with a chat message: ``Host`` for hosts, else the member's display
    name when set (plain text, whitespace collapsed, at most ``MAX_NAME_CHARS``), else
    ``friendly_label``. A name that looks like a phone number is never shown."""
    if role in HOST_ROLES:
        return "Host"
    name = " ".join("".join(ch for ch in display_name or "" if ch.isprintable()).split())
    if not name or _PHONE_LIKE.search(name):
        return friendly_label(user)
    return name[:MAX_NAME_CHARS].rstrip()


# State machines ------------------------------------------------------------------------


class SessionState(enum.Enum):
    """A live session: it starts live and can only end once."""

    LIVE = "live"
    ENDED = "ended"


_SESSION_NEXT = {SessionState.LIVE: frozenset({SessionState.ENDED})}


def session_transition(current: SessionState, target: SessionState) -> SessionState:
    if target not in _SESSION_NEXT.get(current, frozenset()):
        raise LiveError(
            "session_ended" if current is SessionState.ENDED else "bad_state",
            f"the session is {current.value}; expected live to move to {target.value}",
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


# Replay --------------------------------------------------------------------------------


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


# Ordering of events arriving from the store ---------------------------------------------


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


# Coalescing ----------------------------------------------------------------------------


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
