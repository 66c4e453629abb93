"""A session's stream in the datastore: its stream key, and who publishes now with what
bitrate. Keys carry the session id as a hash tag (``{sid}``), as every session key does.

The publisher claim is a key with a short expiry that the media process refreshes while
the publisher sends: a second publisher finds it taken, and a media process that dies
leaves the stream ``offline`` within ``CLAIM_TTL``.
"""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Any, Literal, TypedDict

import orjson
import redis.asyncio as aredis

from live.db.client import text
from live.media import keys

CLAIM_TTL = 6.0    # seconds a claim lives without a refresh
StreamState = Literal["offline", "live"]


class StreamView(TypedDict, total=False):
    state: StreamState
    bitrate: int


def session_of(stream_key: str) -> str:
    """The session a stream key names (``<session id>-<secret>``); '' when none."""
    sid, dash, secret = stream_key.partition("-")
    return sid if dash and sid and secret else ""


# Refresh or release only one's own claim.
_REFRESH = """
local v = redis.call('GET', KEYS[1])
if not v or cjson.decode(v)['owner'] ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""
_RELEASE = """
local v = redis.call('GET', KEYS[1])
if v and cjson.decode(v)['owner'] == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
"""


class Streams:
    """Stream keys and publisher claims."""

    def __init__(self, redis: aredis.Redis) -> None:
        self.redis = redis
        self._refresh = redis.register_script(_REFRESH)
        self._release = redis.register_script(_RELEASE)

    async def issue_key(self, sid: str) -> str:
        """The session's stream key, made on first ask."""
        fresh = f"{sid}-{secrets.token_urlsafe(18)}"
        await self.redis.set(keys.stream_key(sid), fresh, nx=True)
        return await self.stream_key(sid) or fresh

    async def stream_key(self, sid: str) -> str | None:
        raw: Any = await self.redis.get(keys.stream_key(sid))
        return text(raw) if raw else None

    async def key_matches(self, stream_key: str) -> str | None:
        """The session id when ``stream_key`` is that session's key, else None."""
        sid = session_of(stream_key)
        if not sid:
            return None
        known = await self.stream_key(sid)
        if known is None or not hmac.compare_digest(known.encode(), stream_key.encode()):
            return None
        return sid

    async def claim(self, sid: str, owner: str) -> bool:
        """Become the session's one publisher; False when someone else is."""
        value = orjson.dumps({"owner": owner, "bitrate": 0, "since": time.time()})
        return bool(await self.redis.set(keys.publisher_claim(sid), value, nx=True,
                                         px=int(CLAIM_TTL * 1000)))

    async def refresh(self, sid: str, owner: str, bitrate: int, since: float) -> bool:
        value = orjson.dumps({"owner": owner, "bitrate": bitrate, "since": since})
        done: Any = await self._refresh(keys=[keys.publisher_claim(sid)],
                                        args=[owner, value, int(CLAIM_TTL * 1000)])
        return bool(done)

    async def release(self, sid: str, owner: str) -> None:
        await self._release(keys=[keys.publisher_claim(sid)], args=[owner])

    async def view(self, sid: str) -> StreamView:
        """``{"state": "offline"}`` or ``{"state": "live", "bitrate": bits/s}``."""
        raw: Any = await self.redis.get(keys.publisher_claim(sid))
        if not raw:
            return {"state": "offline"}
        return {"state": "live", "bitrate": int(orjson.loads(raw).get("bitrate", 0))}
