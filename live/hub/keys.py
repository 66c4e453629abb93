"""Key names of live sessions in the datastore. Every key of one session carries the
session id as its hash tag (``{sid}``), so each of a session's scripts touches one slot."""

from __future__ import annotations

SESSIONS = "nr:live:sessions"  # zset of live session ids by creation time
SCHEDULED = "nr:live:scheduled"  # zset of scheduled session ids by starts_at
ENDED = "nr:live:ended"  # zset of ended session ids by ended_at (the replays)
USER_CHANNEL = "nr:live:to-user"
SCREEN_CHANNEL = "nr:live:to-screen"


# Published to once to learn whether the server knows SPUBLISH; nobody subscribes to it.
PROBE_CHANNEL = "nr:live:probe"


def session_key(sid: str) -> str:
    return f"nr:live:session:{{{sid}}}"


def seq_key(sid: str) -> str:
    return f"nr:live:seq:{{{sid}}}"


def history_key(sid: str) -> str:
    return f"nr:live:history:{{{sid}}}"


def channel(sid: str) -> str:
    return f"nr:live:events:{{{sid}}}"


CHAT_PREFIX = "nr:live:chat:"


def pins(sid: str) -> str:
    return f"nr:live:pins:{{{sid}}}"  # list of pinned products (json), newest first


def chat(sid: str) -> str:
    return f"{CHAT_PREFIX}{{{sid}}}"  # list of recent chat messages (json)


def muted(sid: str) -> str:
    return f"nr:live:muted:{{{sid}}}"  # set of muted user ids


def chat_rate(sid: str, user: str, window: int) -> str:
    return f"nr:live:rate:{{{sid}}}:{user}:{window}"  # counter of a user's chat in a window


def chat_rate_of(user: str) -> str:
    """The pattern of every chat-rate counter of ``user``, for erasure."""
    return f"nr:live:rate:*:{user}:*"


def pending(sid: str, kind: str) -> str:
    return f"nr:live:pending:{{{sid}}}:{kind}"  # hash of coalesced values not yet published


def flush_lock(sid: str, kind: str) -> str:
    return f"nr:live:flushlock:{{{sid}}}:{kind}"  # one process flushes a kind at a time


def shown(sid: str, kind: str) -> str:
    return f"nr:live:shown:{{{sid}}}:{kind}"  # hash of the coalesced values last published


def viewers(sid: str) -> str:
    return f"nr:live:viewers:{{{sid}}}"  # hash: process -> "count:expires"


def present(sid: str) -> str:
    return f"nr:live:present:{{{sid}}}"  # zset: user -> presence deadline (ms)



def reminders(sid: str) -> str:
    return f"nr:live:remind:{{{sid}}}"  # hash: member id -> phone, texted when it starts
