"""Two-stage offers: candidates (``candidates``), features (``features``), two learned
rankers (``ranker``): one over products the member never bought (the discovery slate),
one over those and the member's own products (the full slate, buy_again and discovery).

The rankers learn from an earlier window: features from purchases before ``now - label
days``, labels from what was bought in the ``label days`` up to ``now``. Nothing at or
after ``now`` is read, so an evaluation at ``now`` sees nothing of the months it scores.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from recommender.candidates import (
    CandidateSizes,
    all_candidates,
    explore_candidates,
    nearest_users,
    unit_rows,
)
from recommender.features import (
    F32,
    I32,
    I64,
    ItemTable,
    MemberProfile,
    Signals,
    build_item_table,
    member_profile,
    pair_features,
    signals,
)
from recommender.ranker import Ranker, RankerParams
from recommender.train import DAY, AlsParams, confidence_matrix, event_weight, train_als

LABEL_DAYS = 30.0
WINDOWS = 3  # label windows the rankers learn from, the newest first
ALS_CANDIDATES = 40  # as many as CandidateSizes.als: FAISS excludes the bought already
DIRNAME = "discovery"

Ranked = tuple[I64, npt.NDArray[np.float64]]  # products best first, their scores


@dataclass
class Discovery:
    """What serving needs beside the factors: the product table and both rankers."""

    table: ItemTable
    explore: Ranker
    full: Ranker
    sizes: CandidateSizes = CandidateSizes()

    def rank(self, profile: MemberProfile, vec: F32 | None, item_factors: F32,
             user_unit: F32, als_items: I64, self_pos: int | None, banned: I64,
             full: bool = False) -> Ranked:
        """The member's explore candidates (or, with ``full``, explore and repeat ones)
        ranked, best first. ``als_items`` is the ALS search for ``vec``, best first."""
        neighbours = nearest_users(user_unit, vec, self_pos=self_pos)
        sig = signals(self.table, profile, neighbours)
        cands = explore_candidates(self.table, profile, sig, als_items, self.sizes, banned)
        if full:
            cands = all_candidates(cands, profile, banned)
        return self.rank_given(profile, vec, item_factors, sig, cands, full)

    def rank_within(self, profile: MemberProfile, vec: F32 | None, item_factors: F32,
                    user_unit: F32, cands: I64, self_pos: int | None,
                    full: bool = False) -> Ranked:
        """Given products (a live session's) ranked by one of the rankers."""
        sig = signals(self.table, profile, nearest_users(user_unit, vec, self_pos=self_pos))
        return self.rank_given(profile, vec, item_factors, sig, np.unique(cands), full)

    def rank_given(self, profile: MemberProfile, vec: F32 | None, item_factors: F32,
                   sig: Signals, cands: I64, full: bool) -> Ranked:
        """``cands`` scored by the explore ranker (or the full one), best first."""
        als = (item_factors[cands] @ vec if vec is not None
               else np.zeros(len(cands))).astype(np.float32)
        x = pair_features(self.table, profile, sig, als, cands)
        scores = (self.full if full else self.explore).predict(x)
        order = np.argsort(-scores, kind="stable")
        return cands[order], scores[order]

    def save(self, path: Path) -> None:
        folder = path / DIRNAME
        folder.mkdir()
        for name, arr in self.table.arrays().items():
            np.save(folder / f"{name}.npy", arr, allow_pickle=False)
        self.explore.save(folder / "ranker_explore.txt")
        self.full.save(folder / "ranker_full.txt")
        (folder / "sizes.json").write_text(json.dumps(self.sizes.__dict__))

    @classmethod
    def load(cls, path: Path) -> Discovery | None:
        """The version's discovery part, or None for a version trained without one."""
        folder = path / DIRNAME
        if not folder.is_dir():
            return None
        names = ItemTable.__dataclass_fields__
        table = ItemTable(**{n: np.load(folder / f"{n}.npy", allow_pickle=False)
                             for n in names})
        sizes = CandidateSizes(**json.loads((folder / "sizes.json").read_text()))
        return cls(table, Ranker.load(folder / "ranker_explore.txt"),
                   Ranker.load(folder / "ranker_full.txt"), sizes)


@dataclass(frozen=True)
class Purchases:
    """Purchase lines as arrays over user and product positions."""

    users: I64
    items: I64
    ts: npt.NDArray[np.float64]
    qty: I64
    n_users: int
    n_items: int

    def before(self, t: float) -> Purchases:
        keep = self.ts < t
        return Purchases(self.users[keep], self.items[keep], self.ts[keep], self.qty[keep],
                         self.n_users, self.n_items)

    def by_user(self) -> dict[int, tuple[list[int], list[float]]]:
        out: dict[int, tuple[list[int], list[float]]] = {}
        for u, i, t in zip(self.users.tolist(), self.items.tolist(), self.ts.tolist(),
                           strict=True):
            row = out.setdefault(u, ([], []))
            row[0].append(i)
            row[1].append(t)
        return out


def fit_als(p: Purchases, now: float, params: AlsParams) -> tuple[F32, F32]:
    """ALS on purchases before ``now`` (purchase weight, recency, quantity)."""
    w = np.array([event_weight("purchase", t, now, q)
                  for t, q in zip(p.ts.tolist(), p.qty.tolist(), strict=True)])
    return train_als(confidence_matrix(p.users, p.items, w, p.n_users, p.n_items), params)


def dense_als_top(item_factors: F32, vec: F32, k: int, skip: I64) -> I64:
    """The exact inner-product search (what the flat FAISS index answers)."""
    scores = item_factors @ vec
    scores[skip] = -np.inf
    k = min(k, len(scores) - 1)
    top = np.argpartition(-scores, k)[:k]
    return top[np.argsort(-scores[top], kind="stable")].astype(np.int64)


Labels = dict[int, set[int]]


def training_groups(p: Purchases, now: float, label_days: float, params: AlsParams,
                    price: F32 | None, category: I32 | None, banned: I64,
                    sizes: CandidateSizes
                    ) -> tuple[list[tuple[F32, F32]], list[tuple[F32, F32]], ItemTable]:
    """Query groups for both rankers: features before ``now - label_days``, labels in
    ``[now - label_days, now)``; nothing at or after ``now`` is read."""
    cutoff = now - label_days * DAY
    seen = p.before(now)
    past = seen.before(cutoff)
    window = (seen.ts >= cutoff)
    labels: Labels = {}
    for u, i in zip(seen.users[window].tolist(), seen.items[window].tolist(), strict=True):
        labels.setdefault(u, set()).add(i)
    user_f, item_f = fit_als(past, cutoff, params)
    table = build_item_table(past.users, past.items, past.ts, p.n_users, p.n_items, cutoff,
                             price, category)
    unit = unit_rows(user_f)
    hist = past.by_user()
    explore_groups: list[tuple[F32, F32]] = []
    full_groups: list[tuple[F32, F32]] = []
    for u in sorted(labels):
        if u not in hist:
            continue
        prof = member_profile(hist[u][0], hist[u][1], cutoff, table)
        vec = user_f[u]
        als_items = dense_als_top(item_f, vec, ALS_CANDIDATES, prof.items)
        sig = signals(table, prof, nearest_users(unit, vec, self_pos=u))
        ex = explore_candidates(table, prof, sig, als_items, sizes, banned)
        full = all_candidates(ex, prof, banned)
        for cands, groups in ((ex, explore_groups), (full, full_groups)):
            als = (item_f[cands] @ vec).astype(np.float32)
            x = pair_features(table, prof, sig, als, cands)
            y = np.isin(cands, list(labels[u])).astype(np.float32)
            groups.append((x, y))
    return explore_groups, full_groups, table


def fit_discovery(p: Purchases, now: float, *, label_days: float = LABEL_DAYS,
                  als: AlsParams | None = None, ranker: RankerParams | None = None,
                  price: F32 | None = None, category: I32 | None = None,
                  banned: I64 | None = None, sizes: CandidateSizes | None = None,
                  windows: int = WINDOWS,
                  on_step: Callable[[str], None] | None = None) -> Discovery:
    """Both rankers trained on the ``windows`` label windows before ``now`` (each with
    features from before it), and the product table at ``now`` (from every purchase
    before it) for serving or evaluating at ``now``."""
    sizes = sizes or CandidateSizes()
    ban = banned if banned is not None else np.zeros(0, np.int64)
    ex: list[tuple[F32, F32]] = []
    full: list[tuple[F32, F32]] = []
    for w in range(windows):
        end = now - w * label_days * DAY
        if w and not (p.ts < end - label_days * DAY).any():
            break  # no purchases before this window: nothing to learn from
        more_ex, more_full, _ = training_groups(p, end, label_days, als or AlsParams(),
                                                price, category, ban, sizes)
        ex += more_ex
        full += more_full
        if on_step is not None:
            on_step(f"ranker window {w + 1}: {len(more_ex)} members")
    seen = p.before(now)
    table = build_item_table(seen.users, seen.items, seen.ts, p.n_users, p.n_items, now,
                             price, category)
    return Discovery(table, Ranker.train(ex, ranker), Ranker.train(full, ranker), sizes)
