"""Offers: the recommender's candidates composed with the catalog's stock and the member's
consent and tier, and the routes ``GET /offers``, ``POST /events`` and host suggestions."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from prometheus_client import Counter, Gauge

from identity.keys import MEMBER
from identity.members import Member, Members, member_from
from live.commerce import keys
from live.commerce.catalog import Catalog
from live.commerce.flash import FlashSale, FlashSales
from live.commerce.keys import REVISION
from live.commerce.pricing import price_for
from live.db.client import text
from live.db.tracked import MISSING, Tracked
from live.errors import LiveError
from live.money import Money
from live.types import Product, Sku
from recommender.events import erased_tag, parse_history
from recommender.keys import HISTORY
from recommender.rank import Candidate, Offer, ProductInfo, compose_offers, is_offerable
from recommender.service import ERASED, Recommender, history_key
from recommender.slates import bought_skus, only_new
from recommender.types import Event, History

log = logging.getLogger("newretail.live")

SkuList = Callable[[str], Awaitable[list[str]]]
OVERFETCH = 4
PRODUCT_CACHE_MAX = 200_000
MAX_EVENTS = 500
SLATES = ("all", "discover")

USERS_GAUGE = Gauge("newretail_rec_model_users",
                    "Users whose trained factors this process holds (erased ones dropped)")
COPY_LOOKUPS = Counter("newretail_offers_context_lookups",
                       "Offers' member contexts, by whether the process's copy held them "
                       "(held) or the datastore was read (read)", ["result"])
COPY_HELD, COPY_READ = COPY_LOOKUPS.labels("held"), COPY_LOOKUPS.labels("read")
COPY_KEYS = Gauge("newretail_offers_copy_keys",
                  "Store keys held in this process's copy for offers")
PRODUCTS_GAUGE = Gauge("newretail_offers_products_cached",
                       "Products whose title, category and price this process has cached")

# Units of the products whose stock hashes are KEYS[first..] at one location (ARGV[loc])
# or summed over all (ARGV[loc] empty).
_UNITS = """
local function units(first, loc)
  local out = {}
  for i = first, #KEYS do
    if loc ~= '' then
      out[#out + 1] = tonumber(redis.call('HGET', KEYS[i], loc) or '0') or 0
    else
      local n = 0
      for _, v in ipairs(redis.call('HVALS', KEYS[i])) do n = n + (tonumber(v) or 0) end
      out[#out + 1] = n
    end
  end
  return out
end
"""

# One trip for what an offer needs to know about the member: their record, their recent
# history only when they gave personalization consent (so none of it is even read
# otherwise), whether the recommender erased them, the catalog's revision (the product
# cache's invalidation), and the stock of the products their kept taste names (a guess:
# when the taste still holds, the offer needs no second trip). KEYS: member, history,
# erased set, catalog revision, then stock hashes; ARGV: the member's erased tag, the
# location.
_CONTEXT = _UNITS + """
local member = redis.call('HGETALL', KEYS[1])
local hist = {}
local consent = redis.call('HGET', KEYS[1], 'consent')
if consent then
  local ok, c = pcall(cjson.decode, consent)
  if ok and type(c) == 'table' and type(c.personalization) == 'table'
      and c.personalization.given == true then
    hist = redis.call('LRANGE', KEYS[2], 0, -1)
  end
end
return {member, hist, redis.call('SISMEMBER', KEYS[3], ARGV[1]),
        redis.call('GET', KEYS[4]) or '0', units(5, ARGV[2])}
"""

# The units of every over-fetched candidate in one trip. KEYS: the products' stock hashes;
# ARGV: the location.
_STOCK = _UNITS + "return units(1, ARGV[1])"


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("product cache warm-up stopped (offers read products as needed)",
                    exc_info=task.exception())


def _pairs(flat: list[Any]) -> dict[bytes, bytes]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def _reads_history(member: Member) -> bool:
    """Whether ``_CONTEXT`` read this member's history: the script's own test."""
    entry = member.consent.get("personalization")
    return isinstance(entry, dict) and entry.get("given") is True


# The keys an offer reads, announced to each process's copy when written. None of these
# prefixes may begin another (the datastore refuses overlapping prefixes).
COPY_PREFIXES = (MEMBER.split("{")[0], HISTORY.split("{")[0], ERASED, REVISION,
                 keys.stock(""))
# Keys each process's copy holds at most: about three a member (record, history, stock of
# what they are offered) for as many members as the recommender keeps tastes for, whose
# kept tastes share the held history.
COPY_MAX_KEYS = 60_000


class OfferService:
    """Offers for a member at a place, and suggestions for a host.

    An offer costs two store trips at most: the member's context (one script), then the
    stock of every over-fetched candidate (one script). With a ``copy`` (``Tracked`` over
    ``COPY_PREFIXES``) what the datastore has announced no write to since it was read is taken
    from the process instead: a member asking again, with the same history, for products
    whose stock has not moved, costs no trip at all. Product titles, categories and prices
    are cached in the process and dropped whenever the catalog's revision moves."""

    def __init__(self, recommender: Recommender, catalog: Catalog, members: Members,
                 session_products: SkuList, copy: Tracked | None = None) -> None:
        self.recommender = recommender
        self.copy = copy
        self.catalog = catalog
        self.members = members
        self.session_products = session_products
        redis = catalog.redis
        self._context = redis.register_script(_CONTEXT)
        self._stock = redis.register_script(_STOCK)
        self._product_cache: dict[str, ProductInfo | None] = {}
        self.flash = FlashSales(redis)
        self._catalog_rev: bytes | str = b""
        self._warming: asyncio.Task[None] | None = None
        USERS_GAUGE.set_function(recommender.user_count)
        PRODUCTS_GAUGE.set_function(lambda: len(self._product_cache))
        if copy is not None:
            COPY_KEYS.set_function(copy.__len__)

    async def _in_stock(self, skus: list[str], store_id: str | None) -> set[str]:
        """Those of ``skus`` with units at ``store_id`` (anywhere when None): from the
        process's copy where it holds them, the rest in one trip to the datastore."""
        if not skus:
            return set()
        loc = store_id or ""
        copy = self.copy
        found: set[str] = set()
        unread = skus
        if copy is not None and copy.live:
            unread = []
            for s in skus:
                at = copy.get(keys.stock(s))
                if at is MISSING or loc not in at:
                    unread.append(s)
                elif at[loc] > 0:
                    found.add(s)
            if not unread:
                return found
        stock_keys = [keys.stock(s) for s in unread]
        began = copy.begin(stock_keys) if copy is not None else 0
        try:
            units: Any = await self._stock(keys=stock_keys, args=[loc])
        except BaseException:
            if copy is not None:
                copy.end(stock_keys, began, {})
            raise
        if copy is not None:
            copy.end(stock_keys, began, {},
                     [(key, loc, u) for key, u in zip(stock_keys, units, strict=True)])
        return found | {s for s, u in zip(unread, units, strict=True) if u > 0}

    async def _catalog_head(self, k: int) -> list[Candidate]:
        first: Any = await self.catalog.redis.zrange(keys.CATALOG, 0, k)
        return [Candidate(text(s), 0.0, "trending") for s in first]

    def _see_revision(self, rev: bytes | str) -> None:
        if rev != self._catalog_rev:
            self._product_cache.clear()
            self._catalog_rev = rev
            if self._warming is None or self._warming.done():
                self._warming = asyncio.get_running_loop().create_task(self._warm_products())
                self._warming.add_done_callback(_log_failure)

    async def products_warmed(self) -> None:
        """Wait until the product cache holds the whole catalog (benchmarks wait on it)."""
        if self._warming is None:
            self._see_revision(await self.catalog.redis.get(REVISION) or b"0")
        if self._warming is not None:
            await self._warming

    async def _warm_products(self, chunk: int = 500) -> None:
        """Fill the product cache with the whole catalog, a chunk at a time between
        requests, so offers stop paying a trip for titles once a process has run a while."""
        rev = self._catalog_rev
        skus = await self.catalog.all_skus()
        for start in range(0, len(skus), chunk):
            if self._catalog_rev != rev or len(self._product_cache) > PRODUCT_CACHE_MAX:
                return  # the catalog moved on: the next request starts a new warm-up
            part = [s for s in skus[start:start + chunk] if s not in self._product_cache]
            if part:
                await self._products(part)

    async def _products(self, skus: Sequence[str]) -> dict[str, ProductInfo]:
        cache = self._product_cache
        out: dict[str, ProductInfo] = {}
        missing = []
        for sku in skus:
            if sku in cache:
                info = cache[sku]
                if info is not None:
                    out[sku] = info
            else:
                missing.append(sku)
        if missing:
            rev = self._catalog_rev
            fetched = await self.catalog.get_many(missing)
            keep = rev == self._catalog_rev  # read under a revision since dropped: no caching
            if len(cache) > PRODUCT_CACHE_MAX:
                cache.clear()
            for sku, p in zip(missing, fetched, strict=True):
                info = ProductInfo(p.title, p.category, p.price.amount) if p else None
                if keep:
                    cache[sku] = info
                if info is not None:
                    out[sku] = info
        return out

    def _held_context(self, copy: Tracked, context_keys: list[str], tag: str, loc: str
                      ) -> tuple[Member | None, History, int, bytes, list[int]] | None:
        """``_member_context``'s read, from the process's copy; None when some of it is
        not held."""
        mkey, hkey, _, _, *stock_keys = context_keys
        member = copy.get(mkey)
        rev = copy.get(REVISION)
        erased = copy.get(ERASED)
        if member is MISSING or rev is MISSING or erased is MISSING or tag not in erased:
            return None
        hist: Any = ()
        if member is not None and _reads_history(member):
            hist = copy.get(hkey)
            if hist is MISSING:
                return None
        units = []
        for key in stock_keys:
            at = copy.get(key)
            if at is MISSING or loc not in at:
                return None
            units.append(at[loc])
        COPY_HELD.inc()
        # the held tuple itself: a kept taste compares it by identity and keeps no other
        return member, hist, erased[tag], rev, units

    async def _read_context(self, context_keys: list[str], tag: str, loc: str
                            ) -> tuple[Member | None, History, int, bytes, list[int]]:
        """``_member_context``'s read from the datastore, kept in the copy when there is one."""
        copy = self.copy
        began = copy.begin(context_keys) if copy is not None else 0
        try:
            raw: Any = await self._context(keys=context_keys, args=[tag, loc])
        except BaseException:
            if copy is not None:
                copy.end(context_keys, began, {})
            raise
        member_raw, hist_raw, erased, rev, units = raw
        member = member_from(_pairs(member_raw)) if member_raw else None
        hist = tuple(parse_history(hist_raw))
        if copy is not None:
            COPY_READ.inc()
            mkey, hkey, _, _, *stock_keys = context_keys
            keep: dict[str, Any] = {mkey: member, REVISION: rev}
            if member is not None and _reads_history(member):
                keep[hkey] = hist
            copy.end(context_keys, began, keep, [
                (ERASED, tag, erased),
                *((key, loc, u) for key, u in zip(stock_keys, units, strict=True))])
        return member, hist, erased, rev, units

    async def _member_context(
        self, member_id: str, guess: list[str], store_id: str | None,
    ) -> tuple[Member, History, bool, dict[str, bool]]:
        """The member, their history (empty without consent), whether erased, and whether
        each product of ``guess`` is in stock at ``store_id``: from the process's copy when
        it holds all of it, else in one trip to the datastore."""
        rec = self.recommender
        context_keys = [Members.key(member_id), history_key(member_id), ERASED, REVISION,
                        *(keys.stock(s) for s in guess)]
        tag, loc = erased_tag(member_id), store_id or ""
        copy = self.copy
        held = (self._held_context(copy, context_keys, tag, loc)
                if copy is not None and copy.live else None)
        member, hist, erased, rev, units = (
            held if held is not None else await self._read_context(context_keys, tag, loc))
        if member is None:
            raise LiveError("not_found", f"member {member_id!r} not found", 404)
        self._see_revision(rev)
        if erased:
            rec.forget([member_id])
        in_stock = {s: u > 0 for s, u in zip(guess, units, strict=True)}
        return member, hist, bool(erased), in_stock

    async def offers(self, member_id: str | None, n: int, store_id: str | None,
                     session_id: str | None, slate: str = "all") -> dict[str, Any]:
        """The spec's ``/offers`` body: in stock at ``store_id`` (anywhere when none),
        personal only with the member's ``personalization`` consent. ``slate="discover"``:
        only products the member never bought (for_you, in_this_live)."""
        started = time.perf_counter()
        rec = self.recommender
        tier, personalized = "member", False
        hist: History = []
        checked: dict[str, bool] = {}  # sku -> in stock, read once per request
        if member_id is not None:
            # a kept taste holds offerable products only (``blend_personal``)
            member, hist, erased, checked = await self._member_context(
                member_id, rec.kept_skus(member_id, 2 * n), store_id)
            tier = member.tier
            personalized = member.consents_to("personalization") and not erased
        else:
            self._see_revision(await self.catalog.redis.get(REVISION) or b"0")
        user = member_id if personalized else None
        discover = slate == "discover"
        taste, rank = ((rec.discovery_taste, rec.discover_personal) if discover
                       else (rec.taste, rec.blend_personal))
        vec, personal = taste(user, hist, n * OVERFETCH) if user is not None else (None, [])
        bought = bought_skus(hist) if discover and user is not None else set()
        candidates: list[Candidate] = []
        if session_id:
            live = await self.session_products(session_id)
            in_live = rec.rank_session(vec, live, user, hist if user is not None else None)
            candidates += only_new(in_live, bought)[: max(1, n // 3)]
        want = n * OVERFETCH
        offers: list[Offer] = []
        products: dict[str, ProductInfo] = {}
        considered: set[str] = set()
        for attempt in range(3):
            out_of_stock = {s for s in considered if not checked[s]}
            pool = list(candidates)
            if user is not None:
                pool += personal if attempt == 0 else rank(user, hist, vec, want, out_of_stock)
            short = max(n, want - len(pool))  # trending fills what personal left short
            pool += await rec.trending(short + len(out_of_stock))
            if len(pool) < want + len(out_of_stock):  # a new shop: nothing trends yet
                pool += await self._catalog_head(want + len(out_of_stock))
            if discover:
                pool = only_new(pool, bought)
            fresh = [s for s in dict.fromkeys(c.sku for c in pool)
                     if s not in considered and is_offerable(s)]
            # stock of the best 2n first (usually enough: one trip, or none when the
            # member's record brought it), then of the rest
            for part in (fresh[: 2 * n], fresh[2 * n:]):
                unread = [s for s in part if s not in checked]
                in_stock = await self._in_stock(unread, store_id)
                checked.update((s, s in in_stock) for s in unread)
                considered.update(part)
                # only what this order of reading has reached: the slate must not depend
                # on which stock the record happened to bring
                available = {s for s in considered if checked[s]}
                products = await self._products(sorted(available))
                offers = compose_offers(pool, products, available, n)
                if len(offers) >= n:
                    break
            if len(offers) >= n:
                break
            want *= 2
        sale = await self.flash.get(session_id) if session_id else None
        return {
            "member_id": member_id, "personalized": personalized,
            "model_version": rec.model_version,
            "offers": self._priced(offers, products if offers else {}, tier, sale),
            "took_ms": round((time.perf_counter() - started) * 1000, 3),
        }

    def _priced(self, offers: list[Offer], products: dict[str, ProductInfo], tier: str,
                sale: FlashSale | None) -> list[dict[str, Any]]:
        """The offers on the wire: ``price`` the list price and ``offer_price`` what this
        member pays now, by ``price_for`` (tier, and the session's running flash sale), the
        price their cart and checkout charge."""
        currency, now = self.catalog.currency, time.time()
        out = []
        for o in offers:
            info = products[o["sku"]]
            product = Product(Sku(o["sku"]), info.title, info.category,
                              Money(info.price, currency), "")
            line = price_for(product, tier, sale, now)
            out.append({"sku": o["sku"], "title": o["title"],
                        "price": line.list_price.to_wire(), "offer_price": line.price.to_wire(),
                        "reason": o["reason"], "score": o["score"]})
        return out

    async def record_checkin(self, member_id: str, screen_id: str, store_id: str | None
                             ) -> None:
        """An ``on_checkin`` hook: the check-in goes to the event log (it names no product,
        so it weighs nothing in training, but it is part of the member's record)."""
        await self.recommender.record(
            [Event(member_id, "", "checkin", time.time(), None, store_id)])

    async def suggestions(self, session_id: str, viewer_ids: list[str], exclude: set[str],
                          n: int) -> list[dict[str, Any]]:
        """What the viewers now in the session want most, pinned products left out. Members
        without personalization consent are left out of the audience."""
        raw: Any = []
        if viewer_ids:
            pipe = self.catalog.redis.pipeline(transaction=False)
            for v in viewer_ids:
                pipe.hget(Members.key(v), "consent")
            raw = await pipe.execute()
        audience = [v for v, c in zip(viewer_ids, raw, strict=True)
                    if c is None or orjson.loads(c).get("personalization", {}).get("given")]
        wants = await self.recommender.audience_wants(audience, exclude, n * OVERFETCH)
        if len(wants) < n:
            wants += [c for c in await self._catalog_head(n * OVERFETCH + len(exclude))
                      if c.sku not in exclude]
        skus = list(dict.fromkeys(c.sku for c in wants if is_offerable(c.sku)))
        self._see_revision(await self.catalog.redis.get(REVISION) or b"0")
        products = await self._products(skus)
        in_stock = await self._in_stock(skus, None)
        out: dict[str, dict[str, Any]] = {}
        for c in wants:
            if c.sku in products and c.sku in in_stock and c.sku not in out:
                out[c.sku] = {"sku": c.sku, "title": products[c.sku].title,
                              "score": round(c.score, 4)}
        return list(out.values())[:n]
