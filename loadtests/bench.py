"""``make bench``: every benchmark of the project, one after the other.

Each benchmark prints its own table and writes its results under ``loadtests/results/``.
Arguments are passed to each (``make bench BENCH_ARGS="--ns 1000 --reps 1"``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from loadtests import bench_fanout

BENCHES: list[tuple[str, Callable[[list[str] | None], int]]] = [
    ("fan-out", bench_fanout.main),
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
