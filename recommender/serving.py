"""Serving a member: their taste (kept a minute per member), personal candidates blended
or for discovery, trending, a session's lineup ranked, and what an audience wants."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np
import redis.asyncio as aredis
from prometheus_client import Counter

from recommender.evaluate import BlendParams
from recommender.events import erased_tag, history_key, parse_history
from recommender.keys import TRENDING
from recommender.model import Model
from recommender.rank import Candidate, is_offerable
from recommender.slates import audience_ranked, bought_skus, member_ranked, session_ranked
from recommender.train import DAY, FoldIn, event_weight
from recommender.types import History, Vector

# A member's taste (fold-in, ANN search, blend) is kept this long for the same history
# and model: shoppers and screens ask again and again between two of their events, and
# recency weights move by days, not seconds.
TASTE_SECONDS = 60.0


TASTE_MAX = 20_000


TASTE_LOOKUPS = Counter("newretail_rec_taste_lookups",
                        "Members' tastes asked for, by whether the kept one served",
                        ["result"])
TASTE_KEPT, TASTE_COMPUTED = TASTE_LOOKUPS.labels("kept"), TASTE_LOOKUPS.labels("computed")


class _Taste:
    """A member's kept taste. Its candidates are held as plain tuples: the cycle collector
    stops tracking a tuple of strings and numbers at its first pass, but keeps walking
    tuple subclasses such as ``Candidate``. As candidates, 3,000 kept tastes were 108,000
    tracked objects, and each full collection stalled the process for 30-60 ms."""

    __slots__ = ("model", "hist", "k", "until", "vec", "rows")

    def __init__(self, model: Model | None, hist: tuple[tuple[str, str, float, int], ...],
                 k: int,
                 until: float, vec: Vector | None, candidates: list[Candidate]) -> None:
        self.model, self.hist, self.k, self.until = model, hist, k, until
        self.vec = vec
        self.rows: tuple[tuple[str, float, str], ...] = tuple(
            [(c.sku, c.score, c.reason) for c in candidates])

    def candidates(self) -> list[Candidate]:
        new = tuple.__new__
        return [new(Candidate, row) for row in self.rows]


class Ranking:
    """The serving part of ``Recommender`` (which sets these attributes)."""

    redis: aredis.Redis
    model: Model | None
    blend: BlendParams
    taste_seconds: float
    _fold: FoldIn | None
    _erased: set[str]
    _erased_tags: set[str]
    _tastes: OrderedDict[str, _Taste]
    _discoveries: OrderedDict[str, _Taste]
    history: Callable[[str], Awaitable[History]]

    def vector(self, user: str, hist: History) -> Vector | None:
        """The user's taste: folded in fresh from their recent events, else the trained
        factors, else none (and never for an erased user)."""
        model, fold = self.model, self._fold
        if model is None or fold is None or user in self._erased or (
                erased_tag(user) in self._erased_tags):
            return None
        now = time.time()
        weights: dict[int, float] = {}
        for sku, kind, ts, qty in hist:
            pos = model.item_pos.get(sku)
            if pos is not None:
                weights[pos] = weights.get(pos, 0.0) + event_weight(kind, ts, now, qty)
        weights = {i: w for i, w in weights.items() if w > 0}
        if weights:
            return fold.user_vector(list(weights), list(weights.values()))
        pos = model.user_pos.get(user)
        return model.user_factors[pos] if pos is not None else None

    async def user_vector(self, user: str, hist: History | None = None) -> Vector | None:
        """``vector`` with the history read from the datastore when not given."""
        if self.model is None or user in self._erased:
            return None
        return self.vector(user, await self.history(user) if hist is None else hist)

    def trending_now(self, k: int) -> list[Candidate] | None:
        """The model's best sellers of its last 90 days, or None before any model."""
        model = self.model
        if model is None or not model.trending:
            return None
        return [Candidate(s, v, "trending") for s, v in model.trending[:k]]

    async def trending(self, k: int) -> list[Candidate]:
        found = self.trending_now(k)
        if found is not None:
            return found
        raw: Any = await self.redis.zrevrange(TRENDING, 0, k - 1, withscores=True)
        top = float(raw[0][1]) if raw else 1.0
        return [Candidate(s.decode(), float(w) / top, "trending") for s, w in raw]

    async def personal(self, user: str, k: int, excluded: set[str] | None = None, *,
                       hist: History | None = None, vec: Vector | None = None
                       ) -> list[Candidate]:
        """buy_again and for_you candidates, best first (the engine's blend). ``hist`` and
        ``vec`` may be given when the caller already has them (one datastore trip per offer)."""
        if hist is None:
            hist = await self.history(user)
        if vec is None:
            vec = self.vector(user, hist)
        return self.blend_personal(user, hist, vec, k, excluded or set())

    def taste(self, user: str, hist: History, k: int) -> tuple[Vector | None, list[Candidate]]:
        """``vector`` and ``blend_personal`` (best ``k``, nothing excluded) of a user, kept for
        ``taste_seconds`` while their history and the model stay the same: any new event of
        theirs, a new model or their erasure computes it afresh."""
        return self._kept(self._tastes, user, hist, k, self.blend_personal)

    def discovery_taste(self, user: str, hist: History, k: int
                        ) -> tuple[Vector | None, list[Candidate]]:
        """``taste`` for the discovery slate: ``discover_personal`` instead of the blend."""
        return self._kept(self._discoveries, user, hist, k, self.discover_personal)

    def _kept(self, kept_tastes: OrderedDict[str, _Taste], user: str, hist: History, k: int,
              rank: Callable[[str, History, Vector | None, int, set[str]], list[Candidate]],
              ) -> tuple[Vector | None, list[Candidate]]:
        model = self.model
        if user in self._erased or erased_tag(user) in self._erased_tags:
            kept_tastes.pop(user, None)
            return None, []
        key = tuple(hist)
        now = time.monotonic()
        kept = kept_tastes.get(user)
        if (kept is not None and kept.model is model and kept.k == k and kept.until > now
                and kept.hist == key):
            kept_tastes.move_to_end(user)
            TASTE_KEPT.inc()
            return kept.vec, kept.candidates()
        TASTE_COMPUTED.inc()
        vec = self.vector(user, hist)
        candidates = rank(user, hist, vec, k, set())
        kept_tastes[user] = _Taste(model, key, k, now + self.taste_seconds, vec, candidates)
        kept_tastes.move_to_end(user)
        while len(kept_tastes) > TASTE_MAX:
            kept_tastes.popitem(last=False)
        return vec, candidates

    def kept_skus(self, user: str, k: int) -> list[str]:
        """The first ``k`` products of the user's kept taste (none when nothing is kept): a
        guess at what their next offer will need, made before their history is read."""
        kept = self._tastes.get(user)
        if kept is None or kept.model is not self.model or kept.until <= time.monotonic():
            return []
        return [row[0] for row in kept.rows[:k]]

    def blend_personal(self, user: str, hist: History, vec: Vector | None, k: int,
                       excluded: set[str]) -> list[Candidate]:
        """The full slate: the member's own products (buy_again) and new ones (for_you),
        by the full ranker when the model has one, else by the ALS blend."""
        model = self.model
        if user in self._erased:
            return []
        if model is not None:
            two_stage = member_ranked(model, user, hist, vec, k, excluded, full=True)
            if two_stage is not None:
                return two_stage
        days: dict[str, set[int]] = {}
        recent: dict[str, float] = {}
        now = time.time()
        for sku, kind, ts, _qty in hist:
            if kind == "purchase":
                days.setdefault(sku, set()).add(int(ts // DAY))
                recent[sku] = recent.get(sku, 0.0) + 0.5 ** ((now - ts) / DAY
                                                              / self.blend.half_life_days)
        scores: dict[str, tuple[float, str]] = {}
        if model is not None and vec is not None:
            ex = [model.item_pos[s] for s in excluded if s in model.item_pos]
            found = model.index.search(vec, k, excluded=ex)
            top = max((abs(s) for _, s in found), default=1.0) or 1.0
            pop_scale = self.blend.pop_weight / model.pop_top
            for i, s in found:
                if not model.offerable[i]:
                    continue
                scores[model.item_ids[i]] = (
                    self.blend.als_weight * s / top + pop_scale * float(model.popularity[i]),
                    "for_you")
        for sku, dset in days.items():
            if sku in excluded:
                continue
            base = scores.get(sku, (0.0, ""))[0]
            scores[sku] = (base + len(dset) + self.blend.repeat_weight * recent[sku],
                           "buy_again")
        ranked = sorted(scores.items(), key=lambda kv: -kv[1][0])
        return [Candidate(s, v, r) for s, (v, r) in ranked  # type: ignore[arg-type]
                if r == "for_you" or is_offerable(s)]

    def discover_personal(self, user: str, hist: History, vec: Vector | None, k: int,
                          excluded: set[str]) -> list[Candidate]:
        """The discovery slate: products the member never bought (for_you), best ``k``
        first, by the discovery ranker when the model has one, else by ALS alone."""
        model = self.model
        if user in self._erased:
            return []
        if model is not None:
            two_stage = member_ranked(model, user, hist, vec, k, excluded, full=False)
            if two_stage is not None:
                return two_stage
        bought = bought_skus(hist)
        return [c for c in self.blend_personal(user, hist, vec, k + len(bought), excluded)
                if c.reason == "for_you" and c.sku not in bought][:k]

    async def rank_within(self, user: str | None, skus: Sequence[str]) -> list[Candidate]:
        """``skus`` (a live session's products) ranked for ``user`` (ID-selector search)."""
        vec = await self.user_vector(user) if user else None
        return self.rank_session(vec, skus)

    def rank_session(self, vec: Vector | None, skus: Sequence[str], user: str | None = None,
                     hist: History | None = None) -> list[Candidate]:
        """``skus`` ranked for the member: by the full ranker when ``hist`` is given and
        the model has one, else by the taste ``vec`` with an ID-selector search; the unknown
        ones (and all of them without a taste) after, in the given order."""
        model = self.model
        if model is not None and hist is not None and (vec is not None or hist):
            two_stage = session_ranked(model, user, hist, vec, skus)
            if two_stage is not None:
                return two_stage
        if model is None or vec is None:
            return [Candidate(s, 0.0, "in_this_live") for s in skus]
        allowed = [model.item_pos[s] for s in skus if s in model.item_pos]
        found = model.index.search(vec, len(allowed), allowed=allowed)
        if len(found) < len(allowed):  # HNSW with a narrow filter: score the rest exactly
            have = {i for i, _ in found}
            found += [(i, float(model.item_factors[i] @ vec)) for i in allowed if i not in have]
            found.sort(key=lambda x: -x[1])
        ranked = [Candidate(model.item_ids[i], s, "in_this_live") for i, s in found]
        known = {c.sku for c in ranked}
        return ranked + [Candidate(s, 0.0, "in_this_live") for s in skus if s not in known]

    async def audience_wants(self, viewer_ids: Sequence[str], exclude: set[str],
                             n: int) -> list[Candidate]:
        """What the viewers want most taken together: the sum of their normalised vectors
        (the caller leaves out viewers whose history may not be used)."""
        model = self.model
        if model is None:
            return [c for c in await self.trending(n + len(exclude)) if c.sku not in exclude][:n]
        total = np.zeros(model.item_factors.shape[1], dtype=np.float32)
        viewers = [u for u in dict.fromkeys(viewer_ids) if u not in self._erased]
        pipe = self.redis.pipeline(transaction=False)
        for user in viewers:
            pipe.lrange(history_key(user), 0, -1)
        raws: list[Any] = await pipe.execute() if viewers else []
        hists = [parse_history(raw) for raw in raws]
        for user, hist in zip(viewers, hists, strict=True):
            vec = self.vector(user, hist)
            if vec is not None:
                total += vec / (float(np.linalg.norm(vec)) or 1.0)
        if not total.any():
            return [c for c in await self.trending(n + len(exclude)) if c.sku not in exclude][:n]
        two_stage = audience_ranked(model, hists, total, exclude, n)
        if two_stage is not None:
            return two_stage
        ex = [model.item_pos[s] for s in exclude if s in model.item_pos]
        found = model.index.search(total, n * 2 + len(ex), excluded=ex)
        return [Candidate(model.item_ids[i], s, "for_you") for i, s in found
                if is_offerable(model.item_ids[i])][:n]
