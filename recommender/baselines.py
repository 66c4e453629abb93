"""Baselines the engine must beat, and metrics split into repeat and explore items.

- TIFU-KNN (Hu et al., KDD 2020): a member's baskets (their purchase days) in groups of
  ``group`` from the newest, decayed within a group by ``rb`` and across groups by ``rg``;
  the member's vector blended (``alpha``) with the mean vector of their ``k`` nearest
  members (cosine).
- user-kNN: the ``k`` nearest members by cosine of who bought what, their purchases summed
  by similarity.
- As "A Next Basket Recommendation Reality Check" (Li et al., TOIS 2023) asks, every slate's
  hits are counted apart for repeat items (bought before by that member) and explore items.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix

from recommender.train import DAY

Dense = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TifuParams:
    group: int = 7
    rb: float = 0.9
    rg: float = 0.7
    k: int = 300
    alpha: float = 0.9


TIFU_GRID = tuple(
    TifuParams(group=m, rg=rg, k=k, alpha=a)
    for m in (3, 7) for rg in (0.6, 0.9) for k in (100, 300) for a in (0.7, 0.9)
)


def baskets(users: npt.NDArray[np.int64], items: npt.NDArray[np.int64],
            ts: npt.NDArray[np.float64]) -> dict[int, list[list[int]]]:
    """Each member's baskets (the products of one purchase day), oldest first."""
    days = np.floor(ts / DAY).astype(np.int64)
    trip = np.unique(np.stack([users, days, items]), axis=1)
    out: dict[int, list[list[int]]] = {}
    last: tuple[int, int] | None = None
    for u, d, i in zip(trip[0].tolist(), trip[1].tolist(), trip[2].tolist(), strict=True):
        if last != (u, d):
            out.setdefault(u, []).append([])
            last = (u, d)
        out[u][-1].append(i)
    return out


def tifu_vectors(bask: dict[int, list[list[int]]], n_users: int, n_items: int,
                 p: TifuParams) -> csr_matrix:
    """The members' time-decayed item-frequency vectors (users x items, sparse)."""
    rows, cols, vals = [], [], []
    for u, seq in bask.items():
        groups = [seq[max(0, e - p.group):e] for e in range(len(seq), 0, -p.group)][::-1]
        acc: dict[int, float] = {}
        for gi, grp in enumerate(groups):
            g_w = p.rg ** (len(groups) - 1 - gi) / len(groups)
            for bi, basket in enumerate(grp):
                w = g_w * p.rb ** (len(grp) - 1 - bi) / len(grp)
                for i in basket:
                    acc[i] = acc.get(i, 0.0) + w
        rows += [u] * len(acc)
        cols += list(acc)
        vals += list(acc.values())
    return csr_matrix((vals, (rows, cols)), shape=(n_users, n_items), dtype=np.float64)


def _unit(m: csr_matrix) -> csr_matrix:
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    inv = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0)
    return csr_matrix(m.multiply(inv[:, None]))


def _neighbour_mean(vectors: csr_matrix, users: list[int], k: int,
                    weighted: bool) -> Dense:
    """Per given user: the (similarity-weighted when ``weighted``) mean of the rows of
    their ``k`` nearest other users."""
    unit = _unit(vectors)
    sims = np.asarray((unit[users] @ unit.T).todense())
    sims[np.arange(len(users)), users] = -np.inf
    k = min(k, vectors.shape[0] - 1)
    top = np.argpartition(-sims, k, axis=1)[:, :k]
    w = np.take_along_axis(sims, top, axis=1)
    w = np.maximum(w, 0.0) if weighted else np.where(w > 0, 1.0 / k, 0.0)
    mix = csr_matrix((w.ravel(), (np.repeat(np.arange(len(users)), k), top.ravel())),
                     shape=(len(users), vectors.shape[0]))
    return np.asarray((mix @ vectors).todense())


def tifu_scores(vectors: csr_matrix, users: list[int], p: TifuParams) -> Dense:
    """TIFU-KNN's prediction for ``users`` (rows in that order)."""
    own = np.asarray(vectors[users].todense())
    return p.alpha * own + (1.0 - p.alpha) * _neighbour_mean(vectors, users, p.k, False)


def user_knn_scores(bought: csr_matrix, users: list[int], k: int = 50) -> Dense:
    """user-kNN on who bought what: the neighbours' purchases weighted by similarity."""
    binary = csr_matrix((np.ones(bought.nnz), bought.indices, bought.indptr),
                        shape=bought.shape)
    return _neighbour_mean(binary, users, k, True)


def top_rows(scores: Dense, k: int, banned: list[set[int]] | None = None) -> list[list[int]]:
    """Best ``k`` columns of each row, ``banned[r]`` left out."""
    out = []
    for r in range(scores.shape[0]):
        row = scores[r].copy()
        if banned is not None and banned[r]:
            row[list(banned[r])] = -np.inf
        part = np.argpartition(-row, k)[:k]
        out.append([int(x) for x in part[np.argsort(-row[part], kind="stable")]])
    return out


def slate_metrics(slates: dict[int, list[int]], truth: dict[int, set[int]],
                  bought: dict[int, set[int]]) -> dict[str, float]:
    """recall@20, ndcg@20, precision@10 over the members in ``truth``, and recall@20's
    parts from repeat items and from explore items (they add up to recall@20)."""
    rec, rep, exp, ndcg, prec = [], [], [], [], []
    for u, got in truth.items():
        slate = slates[u][:20]
        before = bought.get(u, set())
        hits = [1.0 if i in got else 0.0 for i in slate]
        denom = min(len(got), 20)
        rec.append(sum(hits) / denom)
        rep.append(sum(h for i, h in zip(slate, hits, strict=True) if i in before) / denom)
        exp.append(sum(h for i, h in zip(slate, hits, strict=True) if i not in before)
                   / denom)
        dcg = sum(h / math.log2(p + 2) for p, h in enumerate(hits))
        ndcg.append(dcg / sum(1.0 / math.log2(p + 2) for p in range(denom)))
        prec.append(sum(hits[:10]) / 10.0)
    return {"recall@20": float(np.mean(rec)), "ndcg@20": float(np.mean(ndcg)),
            "precision@10": float(np.mean(prec)), "recall@20 repeat": float(np.mean(rep)),
            "recall@20 explore": float(np.mean(exp))}


def explore_truth(truth: dict[int, set[int]], bought: dict[int, set[int]]
                  ) -> dict[int, set[int]]:
    """What each member bought for the first time (members with at least one such)."""
    out = {u: got - bought.get(u, set()) for u, got in truth.items()}
    return {u: s for u, s in out.items() if s}


def discovery_metrics(slates: dict[int, list[int]], first_time: dict[int, set[int]],
                      bought: dict[int, set[int]]) -> dict[str, float]:
    """explore recall@10 and ndcg@10 of slates of never-bought products against what was
    then bought for the first time (a slate naming a product bought before is an error)."""
    rec, ndcg = [], []
    for u, got in first_time.items():
        slate = slates[u][:10]
        if set(slate) & bought.get(u, set()):
            raise ValueError(f"the discovery slate of member {u} holds a product they bought")
        hits = [1.0 if i in got else 0.0 for i in slate]
        denom = min(len(got), 10)
        rec.append(sum(hits) / denom)
        dcg = sum(h / math.log2(p + 2) for p, h in enumerate(hits))
        ndcg.append(dcg / sum(1.0 / math.log2(p + 2) for p in range(denom)))
    return {"explore recall@10": float(np.mean(rec)), "explore ndcg@10": float(np.mean(ndcg))}


def tune_tifu(bask: dict[int, list[list[int]]], labels: dict[int, set[int]], n_users: int,
              n_items: int, grid: Iterable[TifuParams] = TIFU_GRID) -> TifuParams:
    """The grid point with the best recall@20 on ``labels`` (a window before the split)."""
    users = sorted(u for u in labels if u in bask)
    best, best_rec = TifuParams(), -1.0
    for p in grid:
        vectors = tifu_vectors(bask, n_users, n_items, p)
        slates = dict(zip(users, top_rows(tifu_scores(vectors, users, p), 20), strict=True))
        rec = float(np.mean([len(set(slates[u]) & labels[u]) / min(len(labels[u]), 20)
                             for u in users]))
        if rec > best_rec:
            best, best_rec = p, rec
    return best
