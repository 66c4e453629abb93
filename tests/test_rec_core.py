"""The recommender's pure core: training with a known answer, the index, ranking rules,
model files, event validation and the offline evaluation on a synthetic CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from live.errors import LiveError
from live.offers.routes import parse_events
from recommender.evaluate import evaluate, is_product_code, parse_time, read_retail
from recommender.index import ItemIndex
from recommender.model import current_version, read_version, write_version
from recommender.rank import Candidate, ProductInfo, compose_offers, is_offerable
from recommender.train import AlsParams, FoldIn, confidence_matrix, event_weight, train_als
from recommender.types import RecommenderError
from tests.rec_support import write_csv

GROUPS, PER_GROUP, USERS_PER_GROUP = 4, 10, 30


def planted() -> tuple[np.ndarray, np.ndarray]:
    """Users of group g bought 6 random items of group g (and nothing else)."""
    rng = np.random.default_rng(3)
    uu, ii = [], []
    for g in range(GROUPS):
        for k in range(USERS_PER_GROUP):
            user = g * USERS_PER_GROUP + k
            for item in rng.choice(PER_GROUP, 6, replace=False):
                uu.append(user)
                ii.append(g * PER_GROUP + int(item))
    return np.array(uu), np.array(ii)


def test_planted_taste_comes_first() -> None:
    """A new user who bought half of group 2 gets the rest of group 2 as their top items."""
    uu, ii = planted()
    matrix = confidence_matrix(uu, ii, np.full(len(uu), 8.0), GROUPS * USERS_PER_GROUP,
                               GROUPS * PER_GROUP)
    _, items = train_als(matrix, AlsParams(factors=8, iterations=15))
    bought = [20, 21, 22, 23, 24]
    vec = FoldIn(items, AlsParams(factors=8)).user_vector(bought, [8.0] * 5)
    found = ItemIndex.build(items).search(vec, 5, excluded=bought)
    assert {i for i, _ in found} == {25, 26, 27, 28, 29}


def test_fold_in_solves_implicits_equations() -> None:
    """The fold-in gives the vector implicit's own ``recalculate_user`` gives for the same
    events, on trained factors, whatever the number of events and their weights."""
    from scipy.sparse import csr_matrix

    from recommender.train import new_als

    uu, ii = planted()
    params = AlsParams(factors=8, iterations=10)
    matrix = confidence_matrix(uu, ii, np.full(len(uu), 4.0), GROUPS * USERS_PER_GROUP,
                               GROUPS * PER_GROUP)
    _, items = train_als(matrix, params)
    reference: Any = new_als(params)
    reference.item_factors = items
    fold = FoldIn(items, params)
    rng = np.random.default_rng(5)
    for size in (1, 3, 12, 40):
        bought = sorted(rng.choice(GROUPS * PER_GROUP, size, replace=False).tolist())
        weights = rng.uniform(0.1, 9.0, size).tolist()
        row = csr_matrix((np.array(weights, dtype=np.float32), bought, [0, size]),
                         shape=(1, GROUPS * PER_GROUP))
        want = reference.recalculate_user(0, row)
        got = fold.user_vector(bought, weights)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-4)


def test_hnsw_recall_against_exact() -> None:
    """HNSW above the threshold finds at least 95 % of the exact top 20."""
    rng = np.random.default_rng(0)
    items = rng.standard_normal((5000, 32)).astype(np.float32)
    exact, approx = ItemIndex.build(items), ItemIndex.build(items, hnsw_threshold=1000)
    assert (exact.kind, approx.kind) == ("flat", "hnsw")
    hits = total = 0
    for q in rng.standard_normal((50, 32)).astype(np.float32):
        truth = {i for i, _ in exact.search(q, 20)}
        hits += len(truth & {i for i, _ in approx.search(q, 20)})
        total += 20
    assert hits / total >= 0.95


@pytest.mark.parametrize("threshold", [10_000, 100])
def test_id_selectors_filter(threshold: int) -> None:
    """Allowed and excluded ID selectors keep results inside / outside the given ids."""
    items = np.random.default_rng(1).standard_normal((500, 8)).astype(np.float32)
    index = ItemIndex.build(items, hnsw_threshold=threshold)
    q = items[0]
    allowed = {3, 7, 11, 400}
    assert {i for i, _ in index.search(q, 10, allowed=allowed)} <= allowed
    assert not {i for i, _ in index.search(q, 50, excluded=[0, 1, 2])} & {0, 1, 2}


def test_event_weights_order_and_decay() -> None:
    """Purchase > cart > click > view; a 90-day-old event counts half; checkin nothing."""
    now = 1e9
    w = {k: event_weight(k, now, now) for k in ("view", "click", "cart", "purchase")}
    assert w["view"] < w["click"] < w["cart"] < w["purchase"]
    assert event_weight("purchase", now - 90 * 86400, now) == pytest.approx(w["purchase"] / 2)
    assert event_weight("checkin", now, now) == 0.0


def _products() -> dict[str, ProductInfo]:
    return {f"p{i}": ProductInfo(f"P{i}", "a" if i < 6 else "b", 1000) for i in range(10)} | {
        "POST": ProductInfo("Postage", "a", 500), "gift_0001_20": ProductInfo("Gift", "a", 2000)}


def test_rules_stock_codes_cap_and_tier() -> None:
    """Out of stock and non-product codes are dropped, 3 per category, list prices kept in
    minor units (the member's price is the service's ``price_for``)."""
    cands = [Candidate(s, 1.0, "for_you") for s in
             ["POST", "gift_0001_20", "p0", "p1", "p2", "p3", "p4", "p6", "p7"]]
    in_stock = {"POST", "gift_0001_20", "p0", "p2", "p3", "p4", "p6", "p7"}
    offers = compose_offers(cands, _products(), in_stock, 4)
    assert [o["sku"] for o in offers] == ["p0", "p2", "p3", "p6"]
    assert offers[0]["price"] == 1000
    assert not is_offerable("DOT") and not is_offerable("DCGS0003") and is_offerable("85123A")


def test_cap_spills_when_slate_short() -> None:
    """When only one category is in stock, the cap gives way rather than a short slate."""
    cands = [Candidate(f"p{i}", 1.0, "for_you") for i in range(6)]
    offers = compose_offers(cands, _products(), {f"p{i}" for i in range(6)}, 5)
    assert len(offers) == 5


def test_model_files_roundtrip_and_corruption(tmp_path: Path) -> None:
    """A version reads back equal; a damaged file is an error, the pointer unchanged."""
    rng = np.random.default_rng(2)
    items, users = rng.random((6, 4), dtype=np.float32), rng.random((3, 4), dtype=np.float32)
    v = write_version(tmp_path, [f"s{i}" for i in range(6)], ["u0", "u1", "u2"], items, users,
                      np.ones(6, np.float32), AlsParams(factors=4), 100)
    assert current_version(tmp_path) == v
    model = read_version(tmp_path, v)
    assert np.array_equal(model.item_factors, items) and model.user_pos["u2"] == 2
    (tmp_path / v / "item_factors.npy").write_bytes(b"garbage")
    with pytest.raises(RecommenderError):
        read_version(tmp_path, v)
    assert not list(tmp_path.glob("**/*.pkl"))


@pytest.mark.parametrize("body", [
    {}, [], [{"sku": "a", "kind": "view"}], [{"member_id": "m", "anon_id": "a", "sku": "x",
                                              "kind": "view"}],
    [{"member_id": "m", "sku": "", "kind": "view"}], [{"member_id": "m", "sku": "x",
                                                       "kind": "like"}],
    [{"member_id": "m", "sku": "x", "kind": "view", "ts": "yesterday"}],
    [{"member_id": "m", "sku": "x", "kind": "view", "ts": 4e12}],
    [{"member_id": "m", "sku": "x", "kind": "view", "session_id": 5}],
])
def test_bad_event_bodies_refused(body: object) -> None:
    """Each malformed events body is a bad_request naming the problem."""
    with pytest.raises(LiveError) as err:
        parse_events(body, 1e9)
    assert err.value.code == "bad_request"


def test_retail_quirks(tmp_path: Path) -> None:
    """Cancellations, negative quantities, missing ids, postage and duplicates are dropped."""
    path = write_csv(tmp_path / "r.csv.gz", [
        "1,85123A,HEART ,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom",
        "1,85123A,HEART ,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom",
        "C2,85123A,HEART ,-6,2010-12-02 08:26:00,2.55,17850.0,United Kingdom",
        "3,22633,\"HAND WARMER, UNION JACK\",-3,2010-12-02 08:26:00,0,,United Kingdom",
        "4,POST,POSTAGE,1,2010-12-02 08:26:00,18,17850.0,United Kingdom",
        "5,22633,HAND WARMER,2,2010-12-02 08:26:00,1.85,,United Kingdom",
        "A6,B,Adjust bad debt,1,2010-12-02 08:26:00,-11062.06,,United Kingdom",
    ])
    rows = list(read_retail(path))
    assert [(r.sku, r.customer, r.description) for r in rows] == [("85123A", "17850", "HEART")]
    assert is_product_code("22633") and not is_product_code("BANK CHARGES")


def test_engine_beats_baselines_on_synthetic_repeaters(tmp_path: Path) -> None:
    """On shoppers who re-buy their favourites and explore their group, the engine beats
    popularity and personal frequency on every metric."""
    rng = np.random.default_rng(5)
    lines, inv = [], 0
    for c in range(120):
        group = c % 4
        favs = rng.choice(25, 3, replace=False)
        for month in range(1, 10):
            inv += 1
            picks = [*favs[: 1 + month % 3], *rng.choice(25, 2, replace=False)]
            for p in picks:
                sku = 10000 + group * 100 + int(p)
                lines.append(f"{inv},{sku},ITEM {sku},2,2011-0{month}-{5 + c % 20:02d} 10:00:00,"
                             f"1.5,{13000 + c}.0,United Kingdom")
    results = evaluate(list(read_retail(write_csv(tmp_path / "s.csv.gz", lines))),
                       parse_time("2011-07-01"))
    for metric in ("recall@20", "ndcg@20", "precision@10"):
        assert results["engine"][metric] > results["popularity_90d"][metric]
        assert results["engine"][metric] > results["frequency_then_popularity"][metric]
