"""The live-sale load test for Locust: ``loadtests/run.py`` runs it (``make loadtest``).

By hand, against a service prepared by ``python -m loadtests.run --serve-only``::

    locust -f loadtests/locustfile.py --headless --plan PLAN -u USERS -r 100 -t 60s \\
        --csv out/lt --reset-stats [--processes 2]

The user classes and their options are in ``loadtests/sale/users.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Locust imports this file by path; the project's packages live one folder up.
ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from loadtests.sale.users import Host, Shopper, StoreScreen, Viewers  # noqa: E402

__all__ = ["Host", "Shopper", "StoreScreen", "Viewers"]
