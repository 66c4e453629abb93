"""The recommender service and offers against a real store: fold-in, filters, consent,
erasure in every process, stitching, model swaps under concurrent requests."""

from __future__ import annotations

import asyncio
import gc
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aredis

from identity.members import Members
from live.commerce.catalog import Catalog
from live.money import Money
from live.offers.service import OfferService
from live.types import WAREHOUSE, Product, Sku
from recommender.events import EventLog, erased_tag, index_key
from recommender.keys import ERASED
from recommender.model import current_version, read_version
from recommender.rank import Candidate
from recommender.service import Recommender
from recommender.serving import TASTE_LOOKUPS
from recommender.trainer import train_from_log
from recommender.types import Event
from tests.rec_support import GROUPS, PARAMS, never_erased, seed, sku

Setup = Callable[..., Awaitable[tuple[Recommender, OfferService, Members]]]


@pytest.fixture
def setup(redis: aredis.Redis, tmp_path: Path) -> Setup:
    async def make(erased_among: Callable[[Sequence[str]], Awaitable[set[str]]] = never_erased
                   ) -> tuple[Recommender, OfferService, Members]:
        catalog, members = await seed(redis, time.time())
        await train_from_log(redis, tmp_path / "models", PARAMS)
        rec = Recommender(redis, tmp_path / "models", erased_among)
        await rec.refresh()

        async def session_products(sid: str) -> list[str]:
            return [sku(3, 0), sku(3, 1), sku(2, 5)] if sid == "live1" else []
        return rec, OfferService(rec, catalog, members, session_products), members
    return make


async def member(members: Members, consent: bool = True, spend: float = 0.0) -> str:
    m = await members.create("Ann Lee", consent={"personalization": consent}, spend=spend)
    return m.id


async def test_fold_in_changes_next_offer(setup: Setup) -> None:
    """A new member's clicks on group 1 make group 1 their top offers at once (for_you), and
    a purchase comes back as buy_again."""
    rec, svc, members = await setup()
    mid = await member(members)
    before = await svc.offers(mid, 5, None, None)
    assert all(o["reason"] == "trending" for o in before["offers"])
    now = time.time()
    await rec.record([Event(mid, sku(1, i), "click", now) for i in range(4)])
    after = await svc.offers(mid, 3, None, None)
    assert after["personalized"] is True and after["model_version"]
    assert [(o["sku"][0], o["reason"]) for o in after["offers"]] == [("1", "for_you")] * 3
    await rec.record([Event(mid, sku(2, 9), "purchase", now)])
    again = await svc.offers(mid, 3, None, None)
    assert again["offers"][0]["sku"] == sku(2, 9)
    assert again["offers"][0]["reason"] == "buy_again"


async def test_consent_off_uses_no_history(setup: Setup) -> None:
    """Without personalization consent: personalized false, only trending offers."""
    rec, svc, members = await setup()
    mid = await member(members, consent=False)
    await rec.record([Event(mid, sku(1, i), "purchase", time.time()) for i in range(4)])
    body = await svc.offers(mid, 6, None, None)
    assert body["personalized"] is False
    assert {o["reason"] for o in body["offers"]} == {"trending"}


async def test_store_filter_and_tier_price(setup: Setup) -> None:
    """At store s1 only its in-stock products come; a gold member pays 10 % less."""
    rec, svc, members = await setup()
    mid = await member(members, spend=5000)
    await rec.record([Event(mid, sku(1, i), "purchase", time.time()) for i in range(4)])
    body = await svc.offers(mid, 5, "s1", None)
    assert body["offers"] and {o["sku"][0] for o in body["offers"]} == {"0"}
    for o in body["offers"]:
        listed = o["price"]["amount"]
        assert o["offer_price"] == {"amount": listed - (listed + 5) // 10, "currency": "GBP"}


async def test_in_this_live_ranked_for_member(setup: Setup) -> None:
    """With a session, its products come first as in_this_live, the member's taste first."""
    rec, svc, members = await setup()
    mid = await member(members)
    await rec.record([Event(mid, sku(2, i), "purchase", time.time()) for i in range(4)])
    body = await svc.offers(mid, 6, None, "live1")
    assert body["offers"][0] == {**body["offers"][0], "sku": sku(2, 5), "reason": "in_this_live"}
    assert {o["sku"] for o in body["offers"] if o["reason"] == "in_this_live"} <= {
        sku(3, 0), sku(3, 1), sku(2, 5)}


async def test_suggestions_follow_audience(setup: Setup) -> None:
    """Viewers who like group 3 get group 3 suggested, pinned products left out."""
    _, svc, _ = await setup()
    viewers = [f"u3-{k}" for k in range(5)]
    out = await svc.suggestions("live1", viewers, {sku(3, 0)}, 4)
    assert len(out) == 4 and {s["sku"][0] for s in out} == {"3"}
    assert sku(3, 0) not in {s["sku"] for s in out}


async def test_erasure_everywhere(setup: Setup, redis: aredis.Redis) -> None:
    """Erasing forgets events, history and factors here and in another process, late events
    are refused, and the next model has no trace of the user."""
    rec, svc, _ = await setup()
    peer = Recommender(redis, rec.model_dir, never_erased)
    await peer.refresh()
    peer.start()
    try:
        assert await peer.user_vector("u2-0") is not None
        await rec.erase_user(["u2-0"])
        deadline = time.monotonic() + 10
        while await peer.user_vector("u2-0") is not None:
            assert time.monotonic() < deadline, "the other process kept the factors"
            await asyncio.sleep(0.02)
        assert await rec.record([Event("u2-0", sku(2, 1), "view", time.time())]) == 0
        assert await peer.record([Event("u2-0", sku(2, 1), "view", time.time())]) == 0
        assert await rec.history("u2-0") == []
        async for _, e in rec.events.read():
            assert e.user != "u2-0"
        await train_from_log(redis, rec.model_dir, PARAMS)
        await rec.refresh()
        assert rec.model is not None and "u2-0" not in rec.model.user_ids
    finally:
        await peer.stop()


async def test_erased_callable_refuses(setup: Setup) -> None:
    """Events of a user the identity service reports erased are refused."""
    asked: list[list[str]] = []

    async def erased(users: Sequence[str]) -> set[str]:
        asked.append(sorted(users))
        return {u for u in users if u == "gone"}
    rec, _, _ = await setup(erased)
    assert await rec.record([Event("gone", sku(0, 1), "view", time.time()),
                             Event("here", sku(0, 1), "view", time.time())]) == 1
    assert asked == [["gone", "here"]]  # one question for the batch


async def test_stitch_moves_history(setup: Setup, redis: aredis.Redis) -> None:
    """An anonymous viewer's events follow the member into offers and training."""
    rec, svc, members = await setup()
    mid = await member(members)
    await rec.record([Event("anon1", sku(1, i), "click", time.time()) for i in range(4)])
    await rec.stitch("anon1", mid)
    assert await rec.history("anon1") == []
    body = await svc.offers(mid, 3, None, None)
    assert [(o["sku"][0], o["reason"]) for o in body["offers"]] == [("1", "for_you")] * 3
    await train_from_log(redis, rec.model_dir, PARAMS)
    await rec.refresh()
    assert rec.model is not None and mid in rec.model.user_ids
    assert "anon1" not in rec.model.user_ids


async def test_swap_under_concurrent_requests(setup: Setup, redis: aredis.Redis) -> None:
    """Requests running while new versions are loaded, and a corrupt one tried, all
    succeed; the corrupt version leaves the previous model serving."""
    rec, svc, members = await setup()
    mid = await member(members)
    await rec.record([Event(mid, sku(1, i), "purchase", time.time()) for i in range(3)])
    first = rec.model_version
    stop = asyncio.Event()
    served: list[str | None] = []

    async def load() -> None:
        while not stop.is_set():
            body = await svc.offers(mid, 5, None, None)
            assert len(body["offers"]) == 5
            served.append(body["model_version"])

    workers = [asyncio.create_task(load()) for _ in range(8)]
    second = (await train_from_log(redis, rec.model_dir, PARAMS)).version
    await rec.refresh()
    third = (await train_from_log(redis, rec.model_dir, PARAMS)).version
    shutil.rmtree(rec.model_dir / third)
    await rec.refresh()
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.gather(*workers)
    assert current_version(rec.model_dir) == third
    assert rec.model_version == second
    assert first in served or second in served
    assert len(served) > 8


async def test_session_filter_on_hnsw(redis: aredis.Redis, tmp_path: Path) -> None:
    """With an HNSW index, a session's products are all ranked (the narrow filter is topped
    up exactly) and the member's group comes first."""
    catalog, members = await seed(redis, time.time())
    await train_from_log(redis, tmp_path / "m", PARAMS, hnsw_threshold=10)
    rec = Recommender(redis, tmp_path / "m", never_erased)
    await rec.refresh()
    assert rec.model is not None and rec.model.index.kind == "hnsw"
    mid = await member(members)
    await rec.record([Event(mid, sku(2, i), "purchase", time.time()) for i in range(4)])
    live = [sku(0, 1), sku(3, 2), sku(2, 7), sku(1, 4)]
    ranked = await rec.rank_within(mid, live)
    assert sorted(c.sku for c in ranked) == sorted(live)
    assert ranked[0].sku == sku(2, 7)


async def test_late_event_after_erasure_refused(setup: Setup, redis: aredis.Redis) -> None:
    """The append script itself refuses users in the erased set: an event that passed the
    identity check just before an erasure still does not land in the log or history."""
    rec, _, _ = await setup()
    await rec.erase_user(["late"])
    log = EventLog(redis)
    before = await log.length()
    assert await log.append([Event("late", sku(0, 1), "view", time.time()),
                             Event("kept", sku(0, 1), "view", time.time())]) == 1
    assert await log.length() == before + 1
    assert await rec.history("late") == []
    assert await rec.record([Event("late", sku(0, 2), "click", time.time())]) == 0


async def test_erasure_uses_the_member_index(setup: Setup, redis: aredis.Redis) -> None:
    """Erasure deletes exactly the user's events (through their index) and no one else's,
    and leaves no index behind."""
    rec, _, _ = await setup()
    now = time.time()
    await rec.record([Event(u, sku(1, i), "view", now) for i in range(30) for u in ("a", "b")])
    total = await rec.events.length()
    await rec.erase_user(["a"])
    assert await rec.events.length() == total - 30
    users = [e.user async for _, e in rec.events.read()]
    assert "a" not in users and users.count("b") == 30
    assert not await redis.exists(index_key("a"))
    assert await redis.llen(index_key("b")) == 30


async def test_erasure_while_training_leaves_no_trace(setup: Setup, redis: aredis.Redis
                                                      ) -> None:
    """A user erased while a model is being fitted is not in the version written."""
    rec, _, _ = await setup()
    erased = False

    def on_iteration(_: int) -> None:
        nonlocal erased
        if not erased:
            erased = True
            asyncio.run_coroutine_threadsafe(redis.sadd(ERASED, erased_tag("u1-3")), loop)

    loop = asyncio.get_running_loop()
    version = (await train_from_log(redis, rec.model_dir, PARAMS,
                                    on_iteration=on_iteration)).version
    model = read_version(rec.model_dir, version)
    assert erased and "u1-3" not in model.user_ids and "u1-4" in model.user_ids


async def test_out_of_stock_favourites_overfetched(setup: Setup, redis: aredis.Redis) -> None:
    """When a member's best candidates are out of stock the slate is still full, from
    further down their ranking, and holds nothing out of stock."""
    rec, svc, members = await setup()
    catalog = Catalog(redis)
    mid = await member(members)
    await rec.record([Event(mid, sku(1, i), "click", time.time()) for i in range(4)])
    for i in range(8):
        await catalog.set_stock(sku(1, i), WAREHOUSE, 0)
    body = await svc.offers(mid, 6, None, None)
    got = [o["sku"] for o in body["offers"]]
    assert len(got) == 6 and not {sku(1, i) for i in range(8)} & set(got)
    assert {sku(1, 8), sku(1, 9)} <= set(got)


async def test_non_product_codes_never_offered(setup: Setup, redis: aredis.Redis) -> None:
    """Postage bought by everyone tops popularity, yet is never offered, to anyone."""
    rec, svc, members = await setup()
    catalog = Catalog(redis)
    await catalog.put_products([Product(Sku("POST"), "Postage", "fees", Money(1800, "GBP"), "")])
    await catalog.set_stock("POST", WAREHOUSE, 100)
    now = time.time()
    await rec.record([Event(f"u{g}-{k}", "POST", "purchase", now - 3600)
                      for g in range(GROUPS) for k in range(25)])
    await train_from_log(redis, rec.model_dir, PARAMS)
    await rec.refresh()
    assert rec.model is not None and "POST" in rec.model.item_ids
    mid = await member(members)
    await rec.record([Event(mid, "POST", "purchase", now)])
    for who in (mid, None):
        body = await svc.offers(who, 20, None, None)
        assert body["offers"] and "POST" not in {o["sku"] for o in body["offers"]}
    wants = await rec.audience_wants(["u0-1", "u2-2"], set(), 20)
    assert "POST" not in {c.sku for c in wants}


async def test_catalog_change_reaches_cached_offers(setup: Setup, redis: aredis.Redis) -> None:
    """Titles and prices are cached per process, yet a product written through the
    catalog shows its new title and price in the very next offers."""
    rec, svc, members = await setup()
    mid = await member(members)
    await rec.record([Event(mid, sku(2, 0), "purchase", time.time())])
    first = await svc.offers(mid, 3, None, None)
    assert first["offers"][0]["sku"] == sku(2, 0)
    assert first["offers"][0]["title"] == "Item 2 0"
    await Catalog(redis).put_products([Product(Sku(sku(2, 0)), "Renamed", "cat2",
                                               Money(9900, "GBP"), "")])
    again = await svc.offers(mid, 3, None, None)
    assert again["offers"][0]["title"] == "Renamed" and again["offers"][0]["price"] == {
        "amount": 9900, "currency": "GBP"}


async def test_consent_withdrawn_stops_personal_offers(setup: Setup, redis: aredis.Redis
                                                       ) -> None:
    """A member who withdraws consent gets trending offers only, even with a history and
    trained factors; suggestions leave them out of the audience."""
    rec, svc, members = await setup()
    mid = await member(members)
    await rec.record([Event(mid, sku(3, i), "purchase", time.time()) for i in range(5)])
    assert (await svc.offers(mid, 4, None, None))["personalized"] is True
    await members.update(mid, consent={"personalization": {"given": False, "at": time.time()}})
    body = await svc.offers(mid, 4, None, None)
    assert body["personalized"] is False and {o["reason"] for o in body["offers"]} == {
        "trending"}
    alone = await svc.suggestions("live1", [mid], set(), 3)
    assert {s["sku"][0] for s in alone} != {"3"}


async def test_checkin_recorded_not_trained(setup: Setup, redis: aredis.Redis) -> None:
    """A check-in goes to the event log with its store, and training gives it no product."""
    rec, svc, members = await setup()
    mid = await member(members)
    await svc.record_checkin(mid, "screen-1", "s1")
    found = [e async for _, e in rec.events.read() if e.user == mid]
    assert [(e.kind, e.store_id, e.sku) for e in found] == [("checkin", "s1", "")]
    await train_from_log(redis, rec.model_dir, PARAMS)
    await rec.refresh()
    assert rec.model is not None and "" not in rec.model.item_ids


async def test_a_kept_taste_serves_until_history_model_or_erasure_changes(
    setup: Setup, redis: aredis.Redis,
) -> None:
    """Asking again with the same history is served from the member's kept taste (same
    offers); an event of theirs, a new model and their erasure each compute it afresh."""
    rec, svc, members = await setup()
    mid = await member(members)
    await rec.record([Event(mid, sku(1, i), "click", time.time()) for i in range(4)])

    def lookups() -> dict[str, float]:
        return {r: TASTE_LOOKUPS.labels(r)._value.get() for r in ("kept", "computed")}

    start = lookups()
    first = await svc.offers(mid, 3, None, None)
    again = await svc.offers(mid, 3, None, None)
    assert again["offers"] == first["offers"]
    assert lookups() == {"kept": start["kept"] + 1, "computed": start["computed"] + 1}

    await rec.record([Event(mid, sku(2, 9), "purchase", time.time())])
    changed = await svc.offers(mid, 3, None, None)
    assert changed["offers"][0]["sku"] == sku(2, 9)  # buy_again at once
    assert lookups()["computed"] == start["computed"] + 2

    await train_from_log(redis, rec.model_dir, PARAMS)
    await rec.refresh()
    await svc.offers(mid, 3, None, None)
    assert lookups()["computed"] == start["computed"] + 3

    rec.forget([mid])
    assert rec.taste(mid, await rec.history(mid), 12) == (None, [])
    assert mid not in rec._tastes


async def test_kept_tastes_stay_out_of_the_cycle_collectors_walk(setup: Setup) -> None:
    """A process keeps thousands of tastes: after one collection a kept taste's candidates
    are no longer tracked by the cycle collector (as tracked objects they made each full
    collection stall every request for tens of ms), and they come back as the same
    candidates."""
    rec, _, members = await setup()
    mid = await member(members)
    await rec.record([Event(mid, sku(1, i), "click", time.time()) for i in range(4)])
    hist = await rec.history(mid)
    _, computed = rec.taste(mid, hist, 12)
    assert computed and all(isinstance(c, Candidate) for c in computed)
    gc.collect()
    gc.collect()  # a tuple of tuples is let go on the pass after its contents
    kept = rec._tastes[mid]
    assert not gc.is_tracked(kept.rows)
    assert not any(gc.is_tracked(row) for row in kept.rows)
    _, again = rec.taste(mid, hist, 12)
    assert again == computed and all(isinstance(c, Candidate) for c in again)
    assert rec.kept_skus(mid, 3) == [c.sku for c in computed[:3]]


async def test_a_kept_taste_reads_its_stock_with_the_member(
    setup: Setup, redis: aredis.Redis,
) -> None:
    """With the taste kept, the stock of its products comes back with the member's record
    (no second store trip), read fresh: a product sold out since the last offer is gone
    from the next one, and the slate is still full."""
    rec, svc, members = await setup()
    catalog = Catalog(redis)
    mid = await member(members)
    await rec.record([Event(mid, sku(1, i), "click", time.time()) for i in range(4)])
    trips = 0
    stock_script = svc._stock

    async def counted(**kwargs: Any) -> Any:
        nonlocal trips
        trips += 1
        return await stock_script(**kwargs)

    svc._stock = counted  # type: ignore[method-assign]
    first = [o["sku"] for o in (await svc.offers(mid, 4, None, None))["offers"]]
    assert trips >= 1 and len(first) == 4
    trips = 0
    assert [o["sku"] for o in (await svc.offers(mid, 4, None, None))["offers"]] == first
    assert trips == 0
    await catalog.set_stock(first[0], WAREHOUSE, 0)
    after = [o["sku"] for o in (await svc.offers(mid, 4, None, None))["offers"]]
    assert first[0] not in after and len(after) == 4
    assert after[:3] == first[1:]
    at_store = (await svc.offers(mid, 4, "s1", None))["offers"]
    assert all(o["sku"].startswith("0") for o in at_store)  # s1 holds group 0 only
