"""The fake provider's webhook sender: an outbox in the datastore and a task that posts each
event, signed, to the service's webhook URL, as a real provider does.

At least once: an event leaves the outbox only after a 2xx answer; a failure (the service
down, a 5xx) is retried with exponential backoff, by whichever process claims it next, so
deliveries survive a restart of the sender. With ``duplicate_rate`` a delivered event is
sent once more; events held back by the fake (``reorder_rate``) arrive after later ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

import httpx
import orjson
import redis.asyncio as aredis

from live.db.client import text
from live.payments import keys

log = logging.getLogger("newretail.live")

# Claims up to ARGV[2] events due by ARGV[1] for ARGV[3] seconds: answers their records.
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {}
for _, id in ipairs(due) do
  local record = redis.call('HGET', KEYS[2], id)
  if record then
    redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[3]), id)
    out[#out + 1] = id
    out[#out + 1] = record
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""


class FakeDelivery:
    """Sends the fake's events to ``url`` (the service's ``/payments/webhook/fake``).

    Args:
        sign: the headers for a body (the signature is made at each attempt, with its
            time, as Stripe does).
        duplicate_rate: chance that a delivered event is sent once more.
        seed: repeatable random choices (duplicates, jitter).
        retry_base, retry_cap: the backoff between attempts, in seconds.
        give_up_after: attempts after which an event is dropped (logged).
    """

    def __init__(self, redis: aredis.Redis, url: str | None,
                 sign: Callable[[bytes], dict[str, str]], *, duplicate_rate: float = 0.0,
                 seed: int | None = None, retry_base: float = 0.1, retry_cap: float = 30.0,
                 give_up_after: int = 30, poll: float = 0.25) -> None:
        self.redis = redis
        self.url = url
        self.sign = sign
        self.duplicate_rate = duplicate_rate
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.give_up_after = give_up_after
        self.poll = poll
        self._rng = random.Random(seed)
        self._claim = redis.register_script(_CLAIM)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0  # attempts answered 2xx by this process

    async def enqueue(self, event_id: str, body: bytes, delay: float = 0.0) -> None:
        """Put an event in the outbox, due in ``delay`` seconds."""
        record = orjson.dumps({"body": body.decode(), "attempts": 0, "repeat": False})
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(keys.FAKE_OUTBOX_BODY, event_id, record)
            pipe.zadd(keys.FAKE_OUTBOX_DUE, {event_id: time.time() + delay}, nx=True)
            await pipe.execute()
        self._wake.set()

    async def pending(self) -> int:
        """Events still to deliver."""
        return int(await self.redis.zcard(keys.FAKE_OUTBOX_DUE))

    def start(self) -> None:
        if self._task is None and self.url is not None:
            self._task = asyncio.create_task(self._run(), name="fake payment webhooks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=10.0) as http:
            while True:
                try:
                    sent = await self.deliver_due(http)
                except Exception:
                    log.exception("fake payment webhooks: a round failed")
                    sent = 0
                if not sent:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.poll)

    async def deliver_due(self, http: httpx.AsyncClient, batch: int = 20) -> int:
        """Post every event due now (claimed for this process for 30 s); returns how many
        were claimed."""
        now = time.time()
        claimed = await self._claim(keys=[keys.FAKE_OUTBOX_DUE, keys.FAKE_OUTBOX_BODY],
                                    args=[now, batch, 30])
        pairs = list(zip(claimed[::2], claimed[1::2], strict=True))
        await asyncio.gather(*(self._deliver(http, text(eid), orjson.loads(rec))
                               for eid, rec in pairs))
        return len(pairs)

    async def _deliver(self, http: httpx.AsyncClient, event_id: str,
                       record: dict[str, object]) -> None:
        body = str(record["body"]).encode()
        if self.url is None:
            return
        try:
            r = await http.post(self.url, content=body, headers=self.sign(body))
            ok = 200 <= r.status_code < 300
            why = f"answered {r.status_code}"
        except httpx.HTTPError as exc:
            ok, why = False, f"{type(exc).__name__}: {exc}"
        if ok:
            self.sent += 1
            if not record["repeat"] and self._rng.random() < self.duplicate_rate:
                await self._retry(event_id, {**record, "repeat": True}, 0.05)
            else:
                await self._done(event_id)
            return
        attempts = int(str(record["attempts"])) + 1
        if attempts >= self.give_up_after:
            log.warning("fake payment webhook %s dropped after %d attempts (%s)",
                        event_id, attempts, why)
            await self._done(event_id)
            return
        delay = min(self.retry_cap, self.retry_base * 2 ** (attempts - 1))
        log.info("fake payment webhook %s: %s; retry %d in %.2f s", event_id, why,
                 attempts, delay)
        await self._retry(event_id, {**record, "attempts": attempts},
                          delay * (0.5 + self._rng.random() / 2))

    async def _retry(self, event_id: str, record: dict[str, object], delay: float) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.FAKE_OUTBOX_BODY, event_id, orjson.dumps(record))
            pipe.zadd(keys.FAKE_OUTBOX_DUE, {event_id: time.time() + delay})
            await pipe.execute()

    async def _done(self, event_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(keys.FAKE_OUTBOX_DUE, event_id)
            pipe.hdel(keys.FAKE_OUTBOX_BODY, event_id)
            await pipe.execute()
