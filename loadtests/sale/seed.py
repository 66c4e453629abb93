"""Prepare a store for the live-sale load test: demo data, a model, devices, sale stock.

Runs in the process that starts the service (``loadtests/run.py``, or a test), never in
Locust: it talks to the store through the service's own classes, the way ``newretail demo``
does, so the data is what the service itself would have written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from identity.tokens import KeyRing
from live.demo.seed import STORES, seed_demo
from live.web.compose import load_keyring, open_services
from live.web.settings import Settings
from loadtests.sale.plan import Plan
from recommender.trainer import train_from_log

# Stock of each flash-sale product in the warehouse: a sale never runs out during a run.
FLASH_STOCK = 1_000_000
TOKEN_TTL = 6 * 3600


@dataclass(frozen=True)
class Seeded:
    """What ``seed`` made: members, devices and sale products, and the key ring to sign
    the run's tokens with."""

    ring: KeyRing
    member_ids: list[str]
    devices: list[list[str]]
    lineup: list[str]
    flash_skus: list[str]
    model_version: str | None


async def seed(settings: Settings, members: int, devices: int, train: bool = True,
               lineup_size: int = 12, flash_products: int = 3) -> Seeded:
    """Demo catalog, stores, ``members`` members with history; a trained model; ``devices``
    signed-in devices (ten per member, from the first members on); flash-sale stock."""
    async with open_services(settings) as svc:
        await seed_demo(svc.catalog, svc.members, svc.events, now=time.time(),
                        member_count=members)
        member_ids = [f"m_demo{i:05d}" for i in range(members)]
        made: list[list[str]] = []
        for i in range(devices):
            device = await svc.identity.devices.register(member_ids[i // 10 % members],
                                                         f"loadtest-{i}")
            made.append([device.index, device.secret.hex()])
        listed: Any = await svc.redis.zrange("nr:catalog", 0, -1)
        skus = [str(p.sku) for p in await svc.catalog.get_many(
            [s.decode() if isinstance(s, bytes) else str(s) for s in listed]) if p is not None]
        # A lineup across the categories; sale products apart from it.
        stride = max(1, len(skus) // (lineup_size + flash_products))
        spread = skus[::stride]
        lineup = spread[:lineup_size]
        flash = spread[lineup_size:lineup_size + flash_products]
        for sku in flash:
            await svc.catalog.set_stock(sku, "warehouse", FLASH_STOCK)
        version = None
        if train:
            result = await train_from_log(svc.redis, settings.model_dir, svc.recommender.blend.als)
            version = result.version
        return Seeded(load_keyring(settings), member_ids, made, lineup, flash, version)


def open_session(base_url: str, seeded: Seeded, timeout: float = 30.0) -> tuple[str, str]:
    """Open the live session over HTTP, as a host would; returns its id and the host token."""
    host_token = seeded.ring.issue("loadtest-host", "host", TOKEN_TTL)
    res = httpx.post(f"{base_url}/live/sessions", timeout=timeout,
                     headers={"authorization": f"Bearer {host_token}"},
                     json={"title": "Load test: the Friday flash sale",
                           "products": seeded.lineup + seeded.flash_skus})
    res.raise_for_status()
    return str(res.json()["session_id"]), host_token


def make_plan(base_url: str, seeded: Seeded, screens: int = 12,
              anonymous_viewers: int = 2000, ws_base: str = "") -> Plan:
    """Open the session and sign every token the run needs; WebSockets go to ``ws_base``
    when given."""
    session_id, host_token = open_session(base_url, seeded)
    ring = seeded.ring
    store_ids = [s.id for s in STORES]
    return Plan(
        base_url=base_url,
        session_id=session_id,
        host_token=host_token,
        lineup=seeded.lineup,
        flash_skus=seeded.flash_skus,
        members=[[m, ring.issue(m, "member", TOKEN_TTL)] for m in seeded.member_ids],
        stores=store_ids,
        screens=[[f"screen-lt-{i}", ring.issue(f"screen-lt-{i}", "screen", TOKEN_TTL,
                                               store=store_ids[i % len(store_ids)])]
                 for i in range(screens)],
        devices=seeded.devices,
        viewer_tokens=[ring.issue(f"a_loadtest{i:05d}", "viewer", TOKEN_TTL)
                       for i in range(anonymous_viewers)],
        ws_base=ws_base,
    )


def write_plan(path: Path, plan: Plan) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    plan.save(path)
    return path
