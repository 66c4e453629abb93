"""Features of the two-stage ranker: per product (computed once at training), per member
(from their own purchases, at request time) and per (member, product) pair.

Everything is indexed by the model's item positions, so the offline evaluation and a web
process compute the very same numbers from the same arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix

from recommender.train import DAY

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]

COOC_KEEP = 30  # co-purchase neighbours kept per product
TRENDING_KEEP = 200
RECENCY_HALF_LIFE_DAYS = 60.0

FEATURES: tuple[str, ...] = (
    "als_score", "als_rel", "cooc_sum", "cooc_max", "cooc_hits", "neighbour_share",
    "pop_30d", "pop_90d", "pop_trend", "item_age_days", "price_vs_member", "log_price",
    "category_affinity", "member_idle_days", "member_purchase_days", "member_items",
    "own_days", "own_recency", "own_idle_days", "is_repeat",
)
ITEM_STATS = ("pop_30d", "pop_90d", "pop_trend", "item_age_days", "log_price")


@dataclass
class ItemTable:
    """What the ranker knows of every product, and who bought what (for neighbours)."""

    cooc_indptr: I64  # products x co-purchase neighbours, CSR, cosine of buyers
    cooc_indices: I32
    cooc_weights: F32
    user_indptr: I64  # trained users x products they bought, CSR
    user_items: I32
    stats: F32  # products x ITEM_STATS
    category: I32  # -1 unknown
    trending: I32  # products by recent buyers, best first

    @property
    def n_items(self) -> int:
        return int(self.stats.shape[0])

    def arrays(self) -> dict[str, npt.NDArray[np.generic]]:
        return {k: v for k, v in self.__dict__.items() if isinstance(v, np.ndarray)}


def build_item_table(
    users: I64, items: I64, ts: npt.NDArray[np.float64], n_users: int, n_items: int,
    now: float, price: F32 | None = None, category: I32 | None = None,
) -> ItemTable:
    """The product table from purchases before ``now`` (``price`` NaN and ``category`` -1
    where unknown)."""
    keep = ts < now
    users, items, ts = users[keep], items[keep], ts[keep]
    pairs = np.unique(np.stack([users, items]), axis=1)
    bought = csr_matrix((np.ones(pairs.shape[1], dtype=np.float32), (pairs[0], pairs[1])),
                        shape=(n_users, n_items))
    buyers = np.asarray(bought.sum(axis=0)).ravel().astype(np.float64)
    cooc = (bought.T @ bought).tocsr()
    indptr, indices, weights = [0], [], []
    for i in range(n_items):
        lo, hi = cooc.indptr[i], cooc.indptr[i + 1]
        nb, c = cooc.indices[lo:hi], cooc.data[lo:hi].astype(np.float64)
        mask = nb != i
        nb, c = nb[mask], c[mask] / np.sqrt(buyers[i] * buyers[nb[mask]] + 1e-9)
        if len(nb) > COOC_KEEP:
            top = np.argpartition(-c, COOC_KEEP)[:COOC_KEEP]
            nb, c = nb[top], c[top]
        indices.append(nb.astype(np.int32))
        weights.append(c.astype(np.float32))
        indptr.append(indptr[-1] + len(nb))

    def distinct_buyers(lo: float, hi: float) -> npt.NDArray[np.float64]:
        sel = (ts >= lo) & (ts < hi)
        p = np.unique(np.stack([users[sel], items[sel]]), axis=1)
        return np.bincount(p[1], minlength=n_items).astype(np.float64)

    pop30 = distinct_buyers(now - 30 * DAY, now)
    prev30 = distinct_buyers(now - 60 * DAY, now - 30 * DAY)
    pop90 = distinct_buyers(now - 90 * DAY, now)
    first = np.full(n_items, now)
    np.minimum.at(first, items, ts)
    stats = np.stack([
        np.log1p(pop30), np.log1p(pop90), np.log((pop30 + 1.0) / (prev30 + 1.0)),
        (now - first) / DAY,
        np.log(price) if price is not None else np.full(n_items, np.nan),
    ], axis=1).astype(np.float32)
    order = np.lexsort((-pop90, -pop30))[:TRENDING_KEEP]
    return ItemTable(
        np.array(indptr, dtype=np.int64),
        np.concatenate(indices) if indices else np.zeros(0, np.int32),
        np.concatenate(weights) if weights else np.zeros(0, np.float32),
        bought.indptr.astype(np.int64), bought.indices.astype(np.int32), stats,
        category if category is not None else np.full(n_items, -1, np.int32),
        order.astype(np.int32),
    )


@dataclass
class MemberProfile:
    """A member's own purchases, summed up at ``now``."""

    items: I64  # distinct products bought, ascending
    days: F32  # separate days each was bought
    recency: F32  # the same, each day halved every RECENCY_HALF_LIFE_DAYS
    idle: F32  # days since each was last bought
    log_price: float  # the member's median log price paid (NaN: unknown)
    category_share: dict[int, float]
    idle_days: float  # since the last purchase
    purchase_days: int
    now: float

    @property
    def bought(self) -> set[int]:
        return set(self.items.tolist())


def member_profile(items: Sequence[int], ts: Sequence[float], now: float,
                   table: ItemTable) -> MemberProfile:
    """The profile from a member's purchases (product positions and times before ``now``)."""
    per: dict[int, set[int]] = {}
    for i, t in zip(items, ts, strict=True):
        if t < now:
            per.setdefault(int(i), set()).add(int(t // DAY))
    arr = np.array(sorted(per), dtype=np.int64)
    today = now / DAY
    days = np.array([len(per[i]) for i in arr], dtype=np.float32)
    recency = np.array([sum(0.5 ** ((today - d) / RECENCY_HALF_LIFE_DAYS) for d in per[i])
                        for i in arr], dtype=np.float32)
    idle = np.array([today - max(per[i]) for i in arr], dtype=np.float32)
    all_days = {d for s in per.values() for d in s}
    prices = table.stats[arr, 4] if len(arr) else np.zeros(0, np.float32)
    prices = prices[~np.isnan(prices)]
    shares: dict[int, float] = {}
    if len(arr):
        cats = table.category[arr]
        known = cats[cats >= 0]
        for c in known.tolist():
            shares[c] = shares.get(c, 0.0) + 1.0 / len(known)
    return MemberProfile(
        arr, days, recency, idle, float(np.median(prices)) if len(prices) else math.nan,
        shares, float(today - max(all_days)) if all_days else 999.0, len(all_days), now)


@dataclass
class Signals:
    """Co-purchase and neighbour scores of the products they name, sorted by product."""

    cooc_items: I64
    cooc_sum: F32
    cooc_max: F32
    cooc_hits: F32
    nbr_items: I64
    nbr_share: F32


def _ranges(starts: I64, lens: I64) -> I64:
    """The concatenation of ``arange(s, s + n)`` for each start and length."""
    total = int(lens.sum())
    if not total:
        return np.zeros(0, np.int64)
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
    return (offsets + np.arange(total)).astype(np.int64)


def signals(table: ItemTable, profile: MemberProfile, neighbours: I64) -> Signals:
    """Co-purchase strength from the member's products and the share of ``neighbours`` (the
    nearest customers) who bought each product."""
    it = profile.items
    if len(it):
        lo, hi = table.cooc_indptr[it], table.cooc_indptr[it + 1]
        lens = hi - lo
        idx = _ranges(lo, lens)
        nb = table.cooc_indices[idx].astype(np.int64)
        raw = table.cooc_weights[idx]
        w = raw * np.repeat(np.log1p(profile.recency), lens)
        ci, inv = np.unique(nb, return_inverse=True)
        csum = np.bincount(inv, weights=w, minlength=len(ci)).astype(np.float32)
        cmax = np.zeros(len(ci), np.float32)
        np.maximum.at(cmax, inv, raw)
        chits = np.bincount(inv, minlength=len(ci)).astype(np.float32)
    else:
        ci = np.zeros(0, np.int64)
        csum = cmax = chits = np.zeros(0, np.float32)
    if len(neighbours):
        lo, hi = table.user_indptr[neighbours], table.user_indptr[neighbours + 1]
        idx = _ranges(lo, hi - lo)
        ni, counts = np.unique(table.user_items[idx], return_counts=True)
        share = (counts / len(neighbours)).astype(np.float32)
    else:
        ni, share = np.zeros(0, np.int64), np.zeros(0, np.float32)
    return Signals(ci, csum, cmax, chits, ni.astype(np.int64), share)


def _lookup(keys: I64, values: F32, wanted: I64) -> F32:
    if not len(keys):
        return np.zeros(len(wanted), np.float32)
    pos = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return np.where(keys[pos] == wanted, values[pos], 0.0).astype(np.float32)


def pair_features(table: ItemTable, profile: MemberProfile, sig: Signals, als: F32,
                  cands: I64) -> F32:
    """The ``FEATURES`` matrix of candidates ``cands`` with ALS scores ``als``."""
    n = len(cands)
    out = np.empty((n, len(FEATURES)), dtype=np.float32)
    out[:, 0] = als
    out[:, 1] = als / (float(np.abs(als).max()) if n and als.any() else 1.0)
    out[:, 2] = _lookup(sig.cooc_items, sig.cooc_sum, cands)
    out[:, 3] = _lookup(sig.cooc_items, sig.cooc_max, cands)
    out[:, 4] = _lookup(sig.cooc_items, sig.cooc_hits, cands)
    out[:, 5] = _lookup(sig.nbr_items, sig.nbr_share, cands)
    stats = table.stats[cands]
    out[:, 6:10] = stats[:, 0:4]
    out[:, 10] = stats[:, 4] - profile.log_price
    out[:, 11] = stats[:, 4]
    cats = table.category[cands]
    out[:, 12] = [profile.category_share.get(c, 0.0) for c in cats.tolist()]
    out[:, 13] = profile.idle_days
    out[:, 14] = math.log1p(profile.purchase_days)
    out[:, 15] = math.log1p(len(profile.items))
    mine = profile.items
    if len(mine):
        pos = np.minimum(np.searchsorted(mine, cands), len(mine) - 1)
        hit = mine[pos] == cands
    else:
        pos, hit = np.zeros(n, np.int64), np.zeros(n, bool)
    out[:, 16] = np.where(hit, profile.days[pos] if len(mine) else 0.0, 0.0)
    out[:, 17] = np.where(hit, profile.recency[pos] if len(mine) else 0.0, 0.0)
    out[:, 18] = np.where(hit, profile.idle[pos] if len(mine) else np.nan, np.nan)
    out[:, 19] = hit
    return out
