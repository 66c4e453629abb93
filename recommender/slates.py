"""Serving the two-stage rankers: a member's recent history and taste in, candidates out.

- the full slate (``slate=all``): the member's own products (``buy_again``) and products new
  to them (``for_you``), ranked together by the full ranker;
- the discovery slate (``slate=discover``): only products the member never bought, ranked
  by the discovery ranker;
- a live session's products, and an audience's wants, ranked by the same rankers.

Pure functions of a loaded ``Model``: no store, no awaits.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import numpy as np

from recommender.discovery import ALS_CANDIDATES, Discovery
from recommender.features import F32, I64, MemberProfile, member_profile
from recommender.model import Model
from recommender.rank import Candidate

History = Sequence[tuple[str, str, float, int]]  # (sku, kind, ts, qty), newest first


def bought_skus(hist: History) -> set[str]:
    """The products the history shows bought."""
    return {sku for sku, kind, _ts, _qty in hist if kind == "purchase"}


def profile_of(model: Model, disc: Discovery, hist: History, now: float | None = None
               ) -> MemberProfile:
    """The member's profile from the purchases in their history (known products only)."""
    items, ts = [], []
    for sku, kind, t, _qty in hist:
        pos = model.item_pos.get(sku)
        if kind == "purchase" and pos is not None:
            items.append(pos)
            ts.append(t)
    when = time.time() if now is None else now
    return member_profile(items, [min(t, when - 1.0) for t in ts], when, disc.table)


def _positions(model: Model, skus: Iterable[str]) -> list[int]:
    return [model.item_pos[s] for s in skus if s in model.item_pos]


def member_ranked(model: Model, user: str | None, hist: History, vec: F32 | None, k: int,
           excluded: set[str], full: bool) -> list[Candidate] | None:
    """The full slate (``full``) or the discovery slate, best ``k`` first, ``excluded``
    left out; None when the model has no rankers (an older version)."""
    disc = model.discovery
    if disc is None:
        return None
    prof = profile_of(model, disc, hist)
    skip = np.union1d(prof.items, np.array(_positions(model, excluded), dtype=np.int64))
    skip = np.union1d(skip, model.banned)
    als_items: I64 = np.zeros(0, np.int64)
    if vec is not None:
        found = model.index.search(vec, ALS_CANDIDATES, excluded=skip.tolist())
        als_items = np.array([i for i, _ in found], dtype=np.int64)
    self_pos = model.user_pos.get(user) if user is not None else None
    banned = np.union1d(model.banned, skip) if not full else np.union1d(
        model.banned, np.array(_positions(model, excluded), dtype=np.int64))
    items, scores = disc.rank(prof, vec, model.item_factors, model.user_unit, als_items,
                              self_pos, banned, full=full)
    mine = set(prof.items.tolist())
    ids = model.item_ids
    return [Candidate(ids[i], float(s), "buy_again" if i in mine else "for_you")
            for i, s in zip(items[:k].tolist(), scores[:k].tolist(), strict=True)]


def session_ranked(model: Model, user: str | None, hist: History, vec: F32 | None,
                   skus: Sequence[str]) -> list[Candidate] | None:
    """A live session's products ranked by the discovery side (the full ranker, as a
    member may want again what they bought), unknown products after in the given order;
    None when the model has no rankers."""
    disc = model.discovery
    if disc is None:
        return None
    prof = profile_of(model, disc, hist)
    cands = np.array(_positions(model, skus), dtype=np.int64)
    self_pos = model.user_pos.get(user) if user is not None else None
    items, scores = disc.rank_within(prof, vec, model.item_factors, model.user_unit, cands,
                                     self_pos, full=True)
    out = [Candidate(model.item_ids[i], float(s), "in_this_live")
           for i, s in zip(items.tolist(), scores.tolist(), strict=True)]
    known = {c.sku for c in out}
    return out + [Candidate(s, 0.0, "in_this_live") for s in skus if s not in known]


def audience_ranked(model: Model, hists: Sequence[History], total: F32, exclude: set[str],
                    n: int) -> list[Candidate] | None:
    """What an audience wants: its summed taste ``total`` and its members' purchases taken
    as one profile, ranked by the full ranker; None when the model has no rankers."""
    disc = model.discovery
    if disc is None:
        return None
    merged = [e for h in hists for e in h]
    prof = profile_of(model, disc, merged)
    ex = np.union1d(model.banned, np.array(_positions(model, exclude), dtype=np.int64))
    found = model.index.search(total, ALS_CANDIDATES, excluded=ex.tolist())
    als_items = np.array([i for i, _ in found], dtype=np.int64)
    items, scores = disc.rank(prof, total, model.item_factors, model.user_unit, als_items,
                              None, ex, full=True)
    keep = ~np.isin(items, ex)
    return [Candidate(model.item_ids[i], float(s), "for_you")
            for i, s in zip(items[keep][:n].tolist(), scores[keep][:n].tolist(), strict=True)]


def only_new(pool: Sequence[Candidate], bought: set[str]) -> list[Candidate]:
    """The discovery slate's rule: nothing the member bought; trending fillers say
    ``for_you`` (the slate's reasons are ``for_you`` and ``in_this_live``)."""
    return [c if c.reason in ("for_you", "in_this_live") else
            Candidate(c.sku, c.score, "for_you")
            for c in pool if c.sku not in bought and c.reason != "buy_again"]
