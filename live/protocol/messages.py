"""The live protocol's messages without I/O: hello, client ops, roles, chat, errors and acks.

Everything in ``live.protocol`` is plain functions and small classes (frames in
``frames``, states, replay and coalescing in ``states``); the WebSocket endpoint and the
datastore code in ``live.hub`` are pumps around them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Literal, NewType, TypedDict

from live.errors import LiveError

ConnId = NewType("ConnId", str)
UserId = NewType("UserId", str)


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


# Replay --------------------------------------------------------------------------------


# Ordering of events arriving from the datastore ---------------------------------------------


# Coalescing ----------------------------------------------------------------------------

