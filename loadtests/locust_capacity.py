"""The capacity run for Locust: the live sale's users under a load shape that climbs the
steps of ``loadtests/steps.toml`` (``loadtests/sale/shape.py``). ``loadtests/capacity.py``
runs it (``make capacity``); by hand, see loadtests/README.md ("Distributed")."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from loadtests.sale import shape  # noqa: E402
from loadtests.sale.players import HttpProbe, VideoViewer, WsProbe  # noqa: E402
from loadtests.sale.users import Host, Shopper, StoreScreen, Viewers  # noqa: E402


class CapacitySteps(shape.SaleSteps):
    user_classes = (Viewers, Host, Shopper, StoreScreen, VideoViewer, HttpProbe, WsProbe)


__all__ = ["CapacitySteps", "Host", "HttpProbe", "Shopper", "StoreScreen", "VideoViewer",
           "Viewers", "WsProbe"]
