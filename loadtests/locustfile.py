"""The live-sale load test for Locust: ``loadtests/run.py`` runs it (``make loadtest``).

By hand, against a service and plan kept by ``python -m loadtests.run --keep``::

    locust -f loadtests/locustfile.py --headless --plan PLAN -u USERS -r 100 -t 60s \\
        --csv out/lt --reset-stats [--processes 2]

The user classes and their options are in ``loadtests/sale/users.py`` (viewers, host,
shoppers, screens) and ``loadtests/sale/players.py`` (HLS players, the floor probes).
``loadtests/locust_capacity.py`` is the same with the capacity run's load shape.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Locust imports this file by path; the project's packages live one folder up.
ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from loadtests.sale.players import HttpProbe, VideoViewer, WsProbe  # noqa: E402
from loadtests.sale.users import Host, Shopper, StoreScreen, Viewers  # noqa: E402

__all__ = ["Host", "HttpProbe", "Shopper", "StoreScreen", "VideoViewer", "Viewers", "WsProbe"]
