"""``make bench``: every benchmark of the project, one after the other.

Each benchmark prints its own table and writes its results under ``loadtests/results/``.
Arguments go to the fan-out benchmark (``make bench BENCH_ARGS="--ns 1000 --reps 1"``);
the others run with their defaults.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from loadtests import bench_checkin, bench_checkout, bench_fanout, bench_offers


def _offers(argv: list[str] | None) -> int:
    sys.argv = [sys.argv[0]]
    bench_offers.main()
    return 0


BENCHES: list[tuple[str, Callable[[list[str] | None], int]]] = [
    ("fan-out", bench_fanout.main),
    ("checkout", lambda argv: bench_checkout.main([])),
    ("check-in", lambda argv: bench_checkin.main([])),
    ("offers", _offers),
]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    worst = 0
    for name, run in BENCHES:
        print(f"== {name} ==", flush=True)
        worst = max(worst, run(args))
    return worst


if __name__ == "__main__":
    sys.exit(main())
