"""The offline table of ``newretail eval``: every engine and baseline on temporal splits,
recall split into repeat and explore items, and the discovery slate (the 10 best products
a member never bought) against what they then bought for the first time.

Everything a split's scores use is computed from purchases before the split: ALS, the
product table, TIFU-KNN's tuning (on the 30 days before the split, with vectors from before
those days) and the rankers (``discovery.fit_discovery``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import csr_matrix

from recommender.baselines import (
    baskets,
    discovery_metrics,
    explore_truth,
    slate_metrics,
    tifu_scores,
    tifu_vectors,
    top_rows,
    tune_tifu,
    user_knn_scores,
)
from recommender.candidates import unit_rows
from recommender.discovery import (
    ALS_CANDIDATES,
    LABEL_DAYS,
    Purchases,
    dense_als_top,
    fit_als,
    fit_discovery,
)
from recommender.evaluate import (
    BlendParams,
    RetailRow,
    engine_slates,
    frequency_slates,
    make_split,
    popularity,
    popularity_slates,
)
from recommender.features import F32, I32, member_profile
from recommender.train import DAY

FULL = ("recall@20", "ndcg@20", "precision@10", "recall@20 repeat", "recall@20 explore")
DISCOVER = ("explore recall@10", "explore ndcg@10")
TWO_STAGE = "two-stage ranker"
EXPLORE_RIVALS = ("popularity_90d", "user_knn", "tifu_knn", "als")
FULL_RIVALS = ("frequency_then_popularity", "tifu_knn")


@dataclass
class SplitReport:
    """One split's rows: engine or baseline -> metric -> value (a metric absent when it
    does not apply)."""

    split: str
    members: int
    first_time_members: int
    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def discovery_lift(self) -> float:
        """The two-stage discovery slate's explore recall@10 over the best rival's."""
        if TWO_STAGE not in self.rows:
            return float("nan")
        best = max(self.rows[r]["explore recall@10"] for r in EXPLORE_RIVALS)
        return self.rows[TWO_STAGE]["explore recall@10"] / best - 1.0 if best else float("inf")

    def full_margins(self) -> dict[str, float]:
        """Per full-slate metric: the two-stage value minus the better rival's."""
        if TWO_STAGE not in self.rows:
            return {}
        return {m: self.rows[TWO_STAGE][m] - max(self.rows[r][m] for r in FULL_RIVALS)
                for m in FULL[:3]}


def item_attributes(rows: list[RetailRow], items: list[str], before: float
                    ) -> tuple[F32, I32]:
    """Each product's last price before ``before`` and a category: the last word of its
    description (``HOLDER``, ``BAG``, ``MUG``), the data set having none of its own."""
    pos = {s: i for i, s in enumerate(items)}
    price = np.full(len(items), np.nan, dtype=np.float32)
    words: dict[int, str] = {}
    for r in rows:
        if r.ts >= before:
            break
        i = pos.get(r.sku)
        if i is not None:
            price[i] = r.price
            if r.description:
                words[i] = r.description.split()[-1]
    names: dict[str, int] = {}
    category = np.full(len(items), -1, dtype=np.int32)
    for i, w in words.items():
        category[i] = names.setdefault(w, len(names))
    return price, category


def _explore(scores: np.ndarray, users: list[int], bought: dict[int, set[int]]
             ) -> dict[int, list[int]]:
    return dict(zip(users, top_rows(scores, 10, [bought.get(u, set()) for u in users]),
                    strict=True))


def evaluate_split(rows: list[RetailRow], split_ts: float, label: str,
                   horizon_days: float | None = None,
                   progress: Callable[[str], None] | None = None) -> SplitReport:
    """Every engine and baseline on one split (``rows`` in time order)."""
    say = progress or (lambda _m: None)
    until = split_ts + horizon_days * DAY if horizon_days else None
    split = make_split(rows, split_ts, until)
    if not split.truth:
        raise ValueError(f"no member bought anything both before and after {label}")
    nu, ni = len(split.users), len(split.items)
    p = Purchases(split.train_u, split.train_i, split.train_t, split.train_q, nu, ni)
    bought: dict[int, set[int]] = {}
    for u, i in zip(split.train_u.tolist(), split.train_i.tolist(), strict=True):
        bought.setdefault(u, set()).add(i)
    truth = split.truth
    first = explore_truth(truth, bought)
    users, fusers = sorted(truth), sorted(first)
    rep = SplitReport(label, len(truth), len(first))
    blend = BlendParams()

    def full(slates: dict[int, list[int]]) -> dict[str, float]:
        return slate_metrics(slates, truth, bought)

    say("baselines")
    pop = popularity(split)
    rep.rows["popularity_90d"] = full(popularity_slates(split)) | discovery_metrics(
        _explore(np.tile(pop, (len(fusers), 1)), fusers, bought), first, bought)
    rep.rows["frequency_then_popularity"] = full(frequency_slates(split))
    binary = csr_matrix((np.ones(len(p.users)), (p.users, p.items)), shape=(nu, ni))
    binary.sum_duplicates()
    knn = user_knn_scores(binary, users)
    rep.rows["user_knn"] = full(dict(zip(users, top_rows(knn, 20), strict=True))) | (
        discovery_metrics(_explore(user_knn_scores(binary, fusers), fusers, bought), first,
                          bought))
    say("TIFU-KNN, tuned on the 30 days before the split")
    cutoff = split_ts - LABEL_DAYS * DAY
    early = p.before(cutoff)
    window: dict[int, set[int]] = {}
    for u, i, t in zip(p.users.tolist(), p.items.tolist(), p.ts.tolist(), strict=True):
        if t >= cutoff:
            window.setdefault(u, set()).add(i)
    tp = tune_tifu(baskets(early.users, early.items, early.ts), window, nu, ni)
    rep.notes.append(f"TIFU-KNN {tp}")
    vectors = tifu_vectors(baskets(p.users, p.items, p.ts), nu, ni, tp)
    rep.rows["tifu_knn"] = full(dict(zip(users, top_rows(tifu_scores(vectors, users, tp), 20),
                                         strict=True))) | discovery_metrics(
        _explore(tifu_scores(vectors, fusers, tp), fusers, bought), first, bought)
    say("ALS")
    user_f, item_f = fit_als(p, split_ts, blend.als)
    rep.rows["als"] = full({u: dense_als_top(item_f, user_f[u], 20, np.zeros(0, np.int64)).tolist()
                            for u in users}) | discovery_metrics(
        {u: dense_als_top(item_f, user_f[u], 10, np.array(sorted(bought[u]))).tolist()
         for u in fusers}, first, bought)
    rep.rows["engine (ALS blend)"] = full(engine_slates(split, blend))
    say("two-stage: rankers on the window before the split")
    price, category = item_attributes(rows, split.items, split_ts)
    try:
        disc = fit_discovery(p, split_ts, price=price, category=category, on_step=say)
    except ValueError as exc:  # too little data before the split to learn a ranking
        rep.notes.append(f"two-stage ranker not trained: {exc}")
        return rep
    say("two-stage: scoring")
    unit = unit_rows(user_f)
    hist = p.by_user()
    none = np.zeros(0, np.int64)
    two_full: dict[int, list[int]] = {}
    two_exp: dict[int, list[int]] = {}
    for u in users:
        prof = member_profile(hist[u][0], hist[u][1], split_ts, disc.table)
        als_items = dense_als_top(item_f, user_f[u], ALS_CANDIDATES, prof.items)
        ranked, _ = disc.rank(prof, user_f[u], item_f, unit, als_items, u, none, full=True)
        two_full[u] = ranked[:20].tolist()
        if u in first:
            ranked, _ = disc.rank(prof, user_f[u], item_f, unit, als_items, u, none)
            two_exp[u] = ranked[:10].tolist()
    rep.rows[TWO_STAGE] = full(two_full) | discovery_metrics(two_exp, first, bought)
    gains = disc.explore.importance()
    top = sorted(gains, key=lambda k: -gains[k])[:5]
    rep.notes.append("discovery ranker's top features by gain: " + ", ".join(top))
    return rep


def evaluate_splits(rows: list[RetailRow], splits: list[tuple[str, float]],
                    horizon_days: float | None = None,
                    progress: Callable[[str], None] | None = None) -> list[SplitReport]:
    """``evaluate_split`` on each (label, time) of ``splits``."""
    reports = []
    for label, ts in splits:
        tell = None if progress is None else functools.partial(_tagged, progress, label)
        reports.append(evaluate_split(rows, ts, label, horizon_days, tell))
    return reports


def _tagged(progress: Callable[[str], None], label: str, message: str) -> None:
    progress(f"{label}: {message}")


def format_reports(reports: list[SplitReport]) -> str:
    """The table ``newretail eval`` prints (Markdown)."""
    cols = FULL + DISCOVER
    head = "| split | engine / baseline | " + " | ".join(cols) + " |"
    lines = [head, "|---|---|" + "---:|" * len(cols)]
    for rep in reports:
        for name, m in rep.rows.items():
            vals = [f"{m[c]:.4f}" if c in m else "-" for c in cols]
            lines.append(f"| {rep.split} | {name} | " + " | ".join(vals) + " |")
    lines.append("")
    for rep in reports:
        margins = ", ".join(f"{k} {v:+.4f}" for k, v in rep.full_margins().items())
        lines.append(
            f"- {rep.split}: {rep.members} members scored, {rep.first_time_members} with a "
            f"first-time purchase; discovery explore recall@10 {rep.discovery_lift():+.1%} "
            f"over the best of {', '.join(EXPLORE_RIVALS)}; full slate minus the better of "
            f"GP-TopFreq and TIFU-KNN: {margins}")
        lines += [f"  - {n}" for n in rep.notes]
    return "\n".join(lines)
