"""Two-stage discovery on synthetic data with a planted answer: the ranker learns it, its
training window cannot see the evaluated months, the rankers travel in the model version,
the baselines compute what their papers say, and ``GET /offers?slate=discover`` answers
only products the member never bought."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from starlette.testclient import TestClient

from live.money import Money
from live.types import WAREHOUSE, Product, Sku
from recommender.baselines import (
    TifuParams,
    baskets,
    discovery_metrics,
    slate_metrics,
    tifu_vectors,
    top_rows,
    user_knn_scores,
)
from recommender.candidates import nearest_users, unit_rows
from recommender.discovery import Discovery, Purchases, dense_als_top, fit_als, fit_discovery
from recommender.features import FEATURES, member_profile
from recommender.model import read_version, write_version
from recommender.rank import Candidate
from recommender.ranker import RankerParams
from recommender.slates import audience_ranked, only_new, session_ranked
from recommender.train import DAY, AlsParams, FoldIn
from recommender.types import RecommenderError

PAIRS, DISTRACTORS, USERS = 12, 8, 360
NOW = 1_300_000_000.0
ALS = AlsParams(factors=8, iterations=10)
RANKER = RankerParams(rounds=40, min_data_in_leaf=10)


def planted(seed: int = 4) -> Purchases:
    """Whoever buys starter k (item k) buys its follower (item PAIRS + k) 20-40 days later;
    everyone also buys 3 of the popular distractors at random times. Only co-purchase
    tells the follower: popularity points at the distractors."""
    rng = np.random.default_rng(seed)
    uu, ii, tt = [], [], []
    start = NOW - 200 * DAY
    for u in range(USERS):
        k = u % PAIRS
        t0 = start + float(rng.uniform(0, 195)) * DAY
        for item, t in ((k, t0), (PAIRS + k, t0 + float(rng.uniform(20, 40)) * DAY)):
            uu.append(u)
            ii.append(item)
            tt.append(t)
        for d in rng.choice(DISTRACTORS, 3, replace=False):
            uu.append(u)
            ii.append(2 * PAIRS + int(d))
            tt.append(start + float(rng.uniform(0, 230)) * DAY)
    n = len(uu)
    return Purchases(np.array(uu, np.int64), np.array(ii, np.int64), np.array(tt),
                     np.ones(n, np.int64), USERS, 2 * PAIRS + DISTRACTORS)


def waiting(p: Purchases) -> list[int]:
    """Members who bought their starter before NOW and not yet its follower."""
    before = p.before(NOW)
    have = set(zip(before.users.tolist(), before.items.tolist(), strict=True))
    return [u for u in range(USERS) if (u, u % PAIRS) in have
            and (u, PAIRS + u % PAIRS) not in have]


def test_ranker_learns_the_planted_follower() -> None:
    """The discovery slate of a member who bought a starter puts its follower first, where
    popularity would put a distractor first."""
    p = planted()
    disc = fit_discovery(p, NOW, als=ALS, ranker=RANKER)
    user_f, item_f = fit_als(p.before(NOW), NOW, ALS)
    unit, hist = unit_rows(user_f), p.before(NOW).by_user()
    members = waiting(p)
    assert len(members) >= 20
    first, pop_first = 0, 0
    pop = np.bincount(p.before(NOW).items, minlength=p.n_items)
    for u in members:
        prof = member_profile(hist[u][0], hist[u][1], NOW, disc.table)
        als_items = dense_als_top(item_f, user_f[u], 20, prof.items)
        ranked, _ = disc.rank(prof, user_f[u], item_f, unit, als_items, u,
                              np.zeros(0, np.int64))
        assert not set(ranked.tolist()) & set(prof.items.tolist())
        first += int(ranked[0]) == PAIRS + u % PAIRS
        new = [i for i in np.argsort(-pop).tolist() if i not in set(prof.items.tolist())]
        pop_first += new[0] == PAIRS + u % PAIRS
    assert first / len(members) >= 0.9
    assert pop_first / len(members) <= 0.1


def test_training_window_cannot_see_the_evaluated_months() -> None:
    """Purchases at or after the evaluation time change nothing the rankers learn: the same
    trees and the same product table with or without them."""
    p = planted()
    rng = np.random.default_rng(11)
    extra = 3000
    later = Purchases(
        np.concatenate([p.users, rng.integers(0, USERS, extra)]),
        np.concatenate([p.items, rng.integers(0, p.n_items, extra)]),
        np.concatenate([p.ts, NOW + rng.uniform(0, 60, extra) * DAY]),
        np.ones(len(p.users) + extra, np.int64), p.n_users, p.n_items)
    plain = fit_discovery(p.before(NOW), NOW, als=ALS, ranker=RANKER)
    leaky = fit_discovery(later, NOW, als=ALS, ranker=RANKER)
    assert plain.explore.dump() == leaky.explore.dump()
    assert plain.full.dump() == leaky.full.dump()
    for name, arr in plain.table.arrays().items():
        np.testing.assert_array_equal(arr, leaky.table.arrays()[name], err_msg=name)


def _write(tmp_path: Path, p: Purchases, disc: Discovery | None) -> str:
    user_f, item_f = fit_als(p.before(NOW), NOW, ALS)
    items = [f"{20000 + i}" for i in range(p.n_items)]
    users = [f"u{u}" for u in range(p.n_users)]
    return write_version(tmp_path, items, users, item_f, user_f,
                         np.ones(p.n_items, np.float32), ALS, 1000, disc)


def test_rankers_travel_in_the_model_version(tmp_path: Path) -> None:
    """A version written with rankers reads back scoring the same; a damaged ranker file
    is a refused version; a version without rankers reads back without them."""
    p = planted()
    disc = fit_discovery(p, NOW, als=ALS, ranker=RANKER)
    v = _write(tmp_path, p, disc)
    model = read_version(tmp_path, v)
    assert model.discovery is not None
    x = np.random.default_rng(1).random((50, len(FEATURES)), dtype=np.float32)
    np.testing.assert_array_equal(model.discovery.explore.predict(x), disc.explore.predict(x))
    (tmp_path / v / "discovery" / "ranker_full.txt").write_text("tree\nbroken")
    with pytest.raises(RecommenderError):
        read_version(tmp_path, v)
    plain = _write(tmp_path, p, None)
    assert read_version(tmp_path, plain).discovery is None


def test_tifu_vectors_decay_within_and_across_groups() -> None:
    """TIFU-KNN's vector: baskets weighted rb^(age in group) / group size, groups
    rg^(age) / number of groups (Hu et al., 2020)."""
    users = np.array([0, 0, 0], np.int64)
    items = np.array([0, 1, 2], np.int64)
    ts = np.array([0.0, DAY, 2 * DAY])
    b = baskets(users, items, ts)
    assert b == {0: [[0], [1], [2]]}
    v = tifu_vectors(b, 1, 3, TifuParams(group=2, rb=0.5, rg=0.5)).toarray()[0]
    # groups [[0]] and [[1], [2]]: item 0 0.5 x 1/2; item 1 1/2 x 0.5 x 1/2; item 2 1/2 x 1/2
    np.testing.assert_allclose(v, [0.25, 0.125, 0.25])


def test_user_knn_recommends_what_twins_bought() -> None:
    """user-kNN gives a member what their nearest (most similar) members bought."""
    rows = [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 3), (2, 4)]
    m = csr_matrix((np.ones(len(rows)), ([r[0] for r in rows], [r[1] for r in rows])),
                   shape=(3, 5))
    scores = user_knn_scores(m, [0], k=1)
    assert top_rows(scores, 1, [{0, 1}])[0] == [2]


def test_metrics_split_repeat_and_explore() -> None:
    """recall@20's repeat and explore parts add up to it; a discovery slate holding a
    product the member bought is refused."""
    m = slate_metrics({0: [1, 2, 3, 4]}, {0: {1, 3, 9, 10}}, {0: {1, 2}})
    assert m["recall@20 repeat"] == pytest.approx(0.25)
    assert m["recall@20 explore"] == pytest.approx(0.25)
    assert m["recall@20"] == pytest.approx(0.5)
    assert discovery_metrics({0: [3, 9]}, {0: {9}}, {0: {1}})["explore recall@10"] == 1.0
    with pytest.raises(ValueError):
        discovery_metrics({0: [1, 9]}, {0: {9}}, {0: {1}})


def test_only_new_keeps_the_discovery_rule() -> None:
    """The discovery slate drops bought products and buy_again, and says for_you for a
    trending filler."""
    pool = [Candidate("a", 1.0, "buy_again"), Candidate("b", 0.9, "trending"),
            Candidate("c", 0.8, "in_this_live"), Candidate("d", 0.7, "for_you")]
    out = only_new(pool, {"d"})
    assert [(c.sku, c.reason) for c in out] == [("b", "for_you"), ("c", "in_this_live")]


# through the app -------------------------------------------------------------------------

SKUS = [f"9{i:03d}" for i in range(2 * PAIRS + DISTRACTORS)]


def _seed_app(client: TestClient) -> str:
    """The planted catalogue (as skus 9000...) in stock, a model with rankers over it
    loaded, and a member with consent; returns the member id."""
    svc: Any = client.app.state.services  # type: ignore[attr-defined]
    p = planted()
    disc = fit_discovery(p, NOW, als=ALS, ranker=RANKER)
    user_f, item_f = fit_als(p.before(NOW), NOW, ALS)
    pop = np.bincount(p.items, minlength=p.n_items).astype(np.float32)
    version = write_version(svc.recommender.model_dir, SKUS, [f"u{u}" for u in range(USERS)],
                            item_f, user_f, pop, ALS, 1000, disc)
    assert svc.recommender.load(version)

    async def create() -> str:
        await svc.catalog.put_products(
            Product(Sku(s), f"Thing {s}", f"c{i % 7}",
                    Money(500, "GBP"), "") for i, s in enumerate(SKUS))
        for s in SKUS:
            await svc.catalog.set_stock(s, WAREHOUSE, 3)
        m = await svc.members.create("Di", consent={"personalization": True})
        return str(m.id)
    return str(client.portal.call(create))  # type: ignore[union-attr]


def _auth(client: TestClient, sub: str) -> dict[str, str]:
    keyring: Any = client.app.state.keyring  # type: ignore[attr-defined]
    return {"authorization": f"Bearer {keyring.issue(sub, 'member', ttl=600)}"}


def test_discover_slate_offers_only_never_bought(client: TestClient) -> None:
    """slate=discover answers products the member never bought, for_you first the planted
    follower (slate=all has it too); an unknown slate is a 400."""
    mid = _seed_app(client)
    me = _auth(client, mid)
    now = time.time()
    bought = [SKUS[3], SKUS[2 * PAIRS], SKUS[2 * PAIRS + 1]]
    r = client.post("/events", headers=me, json=[
        {"member_id": mid, "sku": s, "kind": "purchase", "ts": now - 86400 * (i + 1)}
        for i, s in enumerate(bought)])
    assert r.status_code == 202
    body = client.get("/offers", params={"n": 6, "slate": "discover"}, headers=me).json()
    skus = [o["sku"] for o in body["offers"]]
    assert len(skus) == 6 and not set(skus) & set(bought)
    assert {o["reason"] for o in body["offers"]} <= {"for_you", "in_this_live"}
    assert skus[0] == SKUS[PAIRS + 3]
    full = client.get("/offers", params={"n": 10}, headers=me).json()["offers"]
    assert SKUS[PAIRS + 3] in [o["sku"] for o in full]
    bad = client.get("/offers", params={"slate": "new"}, headers=me)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"


def test_fresh_purchase_changes_the_next_discover_slate(client: TestClient) -> None:
    """Buying the first discovered product takes it out of the very next discovery slate."""
    mid = _seed_app(client)
    me = _auth(client, mid)
    client.post("/events", headers=me, json=[
        {"member_id": mid, "sku": SKUS[5], "kind": "purchase", "ts": time.time() - 3600}])
    first = client.get("/offers", params={"n": 5, "slate": "discover"}, headers=me).json()
    top = first["offers"][0]["sku"]
    client.post("/events", headers=me, json=[
        {"member_id": mid, "sku": top, "kind": "purchase"}])
    again = client.get("/offers", params={"n": 5, "slate": "discover"}, headers=me).json()
    assert top not in [o["sku"] for o in again["offers"]]


def test_audience_and_session_ranked_by_the_rankers(tmp_path: Path) -> None:
    """An audience that bought starter 3 wants its follower first; a live session's
    products come back with the follower of what the member bought first."""
    p = planted()
    disc = fit_discovery(p, NOW, als=ALS, ranker=RANKER)
    model = read_version(tmp_path, _write(tmp_path, p, disc))
    sku = model.item_ids
    fold = FoldIn(model.item_factors, model.params)
    hist = [(sku[3], "purchase", time.time() - 86400.0, 1)]
    vec = fold.user_vector([3], [8.0])
    wants = audience_ranked(model, [hist, hist], vec * 2, {sku[0]}, 5)
    assert wants is not None and wants[0].sku == sku[PAIRS + 3]
    assert sku[0] not in [c.sku for c in wants]
    live = [sku[2 * PAIRS], sku[PAIRS + 3], sku[PAIRS + 5], "unknown-sku"]
    ranked = session_ranked(model, None, hist, vec, live)
    assert ranked is not None and ranked[0].sku == sku[PAIRS + 3]
    assert ranked[-1].sku == "unknown-sku" and {c.reason for c in ranked} == {"in_this_live"}


def test_erased_members_are_nobodys_neighbours(tmp_path: Path) -> None:
    """Once a member is erased from a loaded model, their purchases no longer reach anyone
    through the nearest customers."""
    p = planted()
    disc = fit_discovery(p, NOW, als=ALS, ranker=RANKER)
    model = read_version(tmp_path, _write(tmp_path, p, disc))
    vec = model.user_factors[5].copy()
    assert 5 in nearest_users(model.user_unit, vec, k=5).tolist()
    model.forget_users({"u5"})
    assert 5 not in nearest_users(model.user_unit, vec, k=model.user_unit.shape[0]).tolist()
