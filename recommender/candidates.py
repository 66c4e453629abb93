"""The first stage: candidate products from ALS/FAISS neighbours, co-purchase neighbours,
the nearest customers' baskets and what is trending. Cheap and wide; the ranker orders."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from recommender.features import F32, I64, ItemTable, MemberProfile, Signals

NEIGHBOURS = 30


@dataclass(frozen=True)
class CandidateSizes:
    """How many candidates each source gives (before the union)."""

    als: int = 40
    cooc: int = 40
    neighbours: int = 30
    trending: int = 20


def unit_rows(factors: F32) -> F32:
    """Rows scaled to unit length (zero rows, e.g. erased users, stay zero)."""
    norms = np.linalg.norm(factors, axis=1, keepdims=True)
    return (factors / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def nearest_users(user_unit: F32, vec: F32 | None, k: int = NEIGHBOURS,
                  self_pos: int | None = None) -> I64:
    """The ``k`` trained users closest (cosine) to the taste ``vec``, the member left out."""
    if vec is None or not user_unit.shape[0]:
        return np.zeros(0, np.int64)
    norm = float(np.linalg.norm(vec)) or 1.0
    sims = user_unit @ (vec / norm)
    if self_pos is not None:
        sims[self_pos] = -np.inf
    k = min(k, len(sims) - 1)
    if k <= 0:
        return np.zeros(0, np.int64)
    top = np.argpartition(-sims, k)[:k]
    return top[sims[top] > 0].astype(np.int64)


def _best(items: I64, scores: npt.NDArray[np.floating], k: int,
          blocked: npt.NDArray[np.bool_]) -> I64:
    keep = ~blocked[items]
    items, scores = items[keep], scores[keep]
    if len(items) > k:
        top = np.argpartition(-scores, k)[:k]
        items = items[top]
    return items


def explore_candidates(table: ItemTable, profile: MemberProfile, sig: Signals,
                       als_items: I64, sizes: CandidateSizes, banned: I64) -> I64:
    """Products the member never bought, from every source, ascending and distinct.
    ``als_items`` is the ALS/FAISS search (best first); ``banned`` what may never be
    offered (postage, fees)."""
    never = np.zeros(table.n_items, dtype=bool)
    never[profile.items] = True
    never[banned] = True
    parts = [
        _best(als_items, -np.arange(len(als_items), dtype=np.float64), sizes.als, never),
        _best(sig.cooc_items, sig.cooc_sum, sizes.cooc, never),
        _best(sig.nbr_items, sig.nbr_share, sizes.neighbours, never),
        _best(table.trending.astype(np.int64),
              -np.arange(len(table.trending), dtype=np.float64), sizes.trending, never),
    ]
    return np.unique(np.concatenate(parts))


def all_candidates(explore: I64, profile: MemberProfile, banned: I64) -> I64:
    """Explore candidates and everything the member bought (the repeat side)."""
    mine = profile.items[~np.isin(profile.items, banned)] if len(banned) else profile.items
    return np.union1d(explore, mine)
