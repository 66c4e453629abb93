"""The load as data (loadtests/steps.toml), the capacity report's knee and table, the
synthetic live stream the players fetch, and the pool hand-out of distributed runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from live.media.playlist import parse_media_playlist
from loadtests.capacity_report import StepResult, judge, knee, plot, render_markdown
from loadtests.check_budget import Limit, Row
from loadtests.sale.video import TS_PACKET, SyntheticStream, segment_bytes, segment_name
from loadtests.steps import STEPS, Load, load_steps

LIMITS = [Limit("GET", "/offers", 5, 0, rate_of="offers_rate", rate_share=0.9),
          Limit("WS", "pin to viewer", 100, 0, rate_of="viewers", rate_share=0.9)]


def rows(offers_p99: float, pin_p99: float, load: Load) -> dict[tuple[str, str], Row]:
    return {
        ("GET", "/offers"): Row("GET", "/offers", 1000, 0, 1, offers_p99, load.offers_rate),
        ("WS", "pin to viewer"): Row("WS", "pin to viewer", 5000, 0, 20, pin_p99,
                                     float(load.viewers)),
        ("GET", "/healthz"): Row("GET", "/healthz", 400, 0, 1, 3, 10),
        ("WS", "probe to error"): Row("WS", "probe to error", 400, 0, 2, 8, 10),
    }


def step(n: int, offers_p99: float, pin_p99: float) -> StepResult:
    load = Load(viewers=100 * n, offers_rate=25.0 * n, checkin_rate=2.0 * n)
    return judge(n, load, rows(offers_p99, pin_p99, load), LIMITS,
                 {"service web": 0.4, "store": 0.1, "wall": 40})


def test_project_steps_are_valid() -> None:
    """The project's steps file has a default load and rising steps; the peak is the most
    of each dimension."""
    steps = load_steps(STEPS)
    assert steps.steps and steps.default.viewers > 0
    viewers = [s.viewers for s in steps.steps]
    assert viewers == sorted(viewers)  # groups join as steps rise, never leave
    peak = steps.peak()
    assert peak.viewers == max(viewers) and peak.hls_viewers >= steps.default.hls_viewers
    assert 0 < steps.seconds() < 15 * 60  # the whole run fits the machine's slot


@pytest.mark.parametrize(("text", "error"), [
    ("[[step]]\nviewers = 1\noffers_rate = 1\ncheckin_rate = 1\n", "no \\[default\\]"),
    ("[default]\nviewers = 1\noffers_rate = 1\n", "needs checkin_rate"),
    ("[default]\nviewers = 1\noffers_rate = -1\ncheckin_rate = 1\n", "offers_rate must be"),
    ("[default]\nviewers = 1\noffers_rate = 1\ncheckin_rate = 1\nsellers = 3\n", "unknown"),
    ("[default]\nviewers = 1\noffers_rate = 1\ncheckin_rate = 1\nbuy_chance = 2\n", "share"),
    ("[default]\nviewers = 1\noffers_rate = 1\ncheckin_rate = 1\n[capacity]\nsettle = 1\n",
     "capacity"),
])
def test_bad_steps_are_refused(tmp_path: Path, text: str, error: str) -> None:
    """A load without its figures, with a negative or unknown one, is an error naming it."""
    path = tmp_path / "steps.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=error):
        load_steps(path)


def test_load_round_trips_as_a_message() -> None:
    """The load sent to Locust workers comes back the same."""
    load = Load(viewers=900, offers_rate=225, checkin_rate=22.5, buy_chance=0.3, hls_viewers=100)
    assert Load.from_dict(load.as_dict()) == load


def test_knee_is_the_first_step_over() -> None:
    """Capacity is the last held step before the first miss; the knee is that miss, and
    the type furthest over its ceiling is named first."""
    results = [step(1, 2, 40), step(2, 4, 60), step(3, 9, 80), step(4, 3, 300)]
    capacity, broke = knee(results)
    assert capacity is not None and capacity.number == 2
    assert broke is not None and broke.number == 3
    md = render_markdown(results, LIMITS, "test")
    assert "Capacity: step 2" in md and "Knee: step 3" in md and "GET /offers" in md
    assert "1 / 3" in md and "2 / 8" in md  # the floors (p50 / p99) of each step
    assert "40 %" in md  # the web process's CPU


def test_no_step_held_and_every_step_held() -> None:
    """No capacity when the first step misses; no knee when every step holds."""
    assert knee([step(1, 9, 40), step(2, 2, 40)]) == (None, knee([step(1, 9, 40)])[1])
    capacity, broke = knee([step(1, 2, 40), step(2, 2, 40)])
    assert capacity is not None and capacity.number == 2 and broke is None


def test_plot_is_written(tmp_path: Path) -> None:
    """The plot of p99 and floors against the steps is a PNG file."""
    path = tmp_path / "capacity.png"
    plot([step(1, 2, 40), step(2, 9, 300)], LIMITS, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_segments_have_the_bitrate() -> None:
    """A synthetic segment is whole TS packets, its size the bitrate x duration."""
    data = segment_bytes(500, 1.0)
    assert len(data) % TS_PACKET == 0 and data[0] == 0x47
    assert math.isclose(len(data), 500_000 / 8, rel_tol=0.01)


def test_synthetic_stream_writes_a_live_playlist(tmp_path: Path) -> None:
    """Each step writes a segment, then a live playlist of the last ``window`` segments,
    in the media process's names; segments past ``keep`` are deleted."""
    stream = SyntheticStream(tmp_path / "sid", kbit_per_s=100, window=4, keep=6)
    for _ in range(10):
        stream.write_next()
    text = (tmp_path / "sid" / "index.m3u8").read_text()
    segments = parse_media_playlist(text)
    assert [s.uri for s in segments] == [segment_name(n) for n in range(6, 10)]
    assert "#EXT-X-ENDLIST" not in text and "#EXT-X-MEDIA-SEQUENCE:6" in text
    on_disk = sorted(p.name for p in (tmp_path / "sid").glob("*.ts"))
    assert on_disk == [segment_name(n) for n in range(4, 10)]


def test_profile_summary_names_the_hot_leaf() -> None:
    """py-spy's collapsed stacks are summed per leaf function, the busiest first."""
    from loadtests.capacity_report import summarize_collapsed

    text = ("main (app.py:1);serve (app.py:9);encode (json.py:3) 60\n"
            "main (app.py:1);serve (app.py:9);epoll (sel.py:2) 30\n"
            "main (app.py:1);write (net.py:5) 10\n")
    out = summarize_collapsed(text).splitlines()
    assert out[0] == "100 samples"
    assert "60.0 % self" in out[1] and "encode" in out[1]
    assert "main (app.py:1)" not in "".join(out)  # never a leaf here


def test_each_type_has_its_own_last_held_step() -> None:
    """The report names, per type, the last step it held: offers to step 2, pins to 3."""
    from loadtests.capacity_report import held_by_type

    results = [step(1, 2, 40), step(2, 4, 60), step(3, 9, 80), step(4, 3, 300)]
    assert [(lim.name, n) for lim, n in held_by_type(results, LIMITS)] == [
        ("/offers", 2), ("pin to viewer", 3)]
    assert "- WS pin to viewer (≤ 100 ms): 3" in render_markdown(results, LIMITS)
