"""``make bench``: every benchmark of the project, one after the other.

Each benchmark prints its own table and writes its results and plot under
``loadtests/results/``. ``--only NAME[,NAME]`` runs some of them (``fan-out``,
``checkout``, ``check-in``, ``offers``, ``floods``); the other arguments go to the fan-out benchmark
(``make bench BENCH_ARGS="--only fan-out --ns 1000 --reps 1"``); the others run with
their defaults.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from loadtests import bench_checkin, bench_checkout, bench_fanout, bench_floods, bench_offers


def _offers(argv: list[str] | None) -> int:
    sys.argv = [sys.argv[0]]
    bench_offers.main()
    return 0


BENCHES: list[tuple[str, Callable[[list[str] | None], int]]] = [
    ("fan-out", bench_fanout.main),
    ("checkout", lambda argv: bench_checkout.main([])),
    ("check-in", lambda argv: bench_checkin.main([])),
    ("offers", _offers),
    ("floods", lambda argv: bench_floods.main([])),
]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    names = [name for name, _ in BENCHES]
    only = names
    if "--only" in args:
        at = args.index("--only")
        if at + 1 >= len(args):
            print("bench: --only needs a list of names: " + ",".join(names), file=sys.stderr)
            return 2
        only = args[at + 1].split(",")
        del args[at:at + 2]
        unknown = set(only) - set(names)
        if unknown:
            print(f"bench: unknown benchmark {', '.join(sorted(unknown))}; "
                  f"choose from {','.join(names)}", file=sys.stderr)
            return 2
    worst = 0
    for name, run in BENCHES:
        if name in only:
            print(f"== {name} ==", flush=True)
            worst = max(worst, run(args))
    return worst


if __name__ == "__main__":
    sys.exit(main())
