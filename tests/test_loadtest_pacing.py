"""The arrival process of the load test's shoppers and screens (``loadtests.sale.plan``)."""

from __future__ import annotations

import random
import statistics

import pytest

from loadtests.sale.plan import Pacing


def test_a_paced_user_acts_at_its_rate() -> None:
    """Acting at once each time it is due, a user averages its rate over a long run, with
    intervals as irregular as a Poisson process's (their spread equals their mean)."""
    pace = Pacing(10.0, rng=random.Random(7))
    now, starts = 0.0, []
    while now < 2000.0:
        now += pace.wait(now)
        starts.append(now)
        now += 0.001  # the request itself
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert len(starts) / 2000.0 == pytest.approx(10.0, rel=0.03)
    assert statistics.pstdev(gaps) == pytest.approx(statistics.mean(gaps), rel=0.1)


def test_users_held_up_together_do_not_move_in_step() -> None:
    """Fifty users all answered at the same instant after a stall act (those due by then
    at once); their next actions are at fifty different moments spread over more than
    their period (with a constant period they would all come again together)."""
    rate = 10.0
    paces = [Pacing(rate, rng=random.Random(i)) for i in range(50)]
    for pace in paces:
        pace.wait(0.0)
    stalled_until = 0.3  # every request in flight was answered at this instant
    acted = [stalled_until + pace.wait(stalled_until) for pace in paces]
    again = sorted(t + pace.wait(t) for t, pace in zip(acted, paces, strict=True))
    assert len(set(again)) == 50
    assert again[-1] - again[0] > 1 / rate


def test_a_late_user_acts_once_and_does_not_catch_up() -> None:
    """After a long stall a user acts at once, once, then waits again: no burst to make
    up for the minute it missed."""
    pace = Pacing(20.0, rng=random.Random(3))
    pace.wait(0.0)
    assert pace.wait(60.0) == 0.0
    assert pace.wait(60.0) > 0.0


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Pacing(0.0)
