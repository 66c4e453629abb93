"""A live session's figures as its hosts see them: carts, orders, revenue and stock,
pushed at most a few times a second."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import redis.asyncio as aredis

from live.commerce import keys
from live.commerce.catalog import Catalog
from live.commerce.flash import FlashSales
from live.commerce.inventory import Inventory
from live.commerce.keys import figures_key, figures_orders_key
from live.commerce.types import (
    ORDERS_WINDOW,
    Notifier,
)
from live.db.client import text
from live.errors import LiveError
from live.money import Money
from live.types import HostedSession, SessionDirectory

log = logging.getLogger("newretail.live")

FIGURES_DELAY = 0.25  # host figures are pushed at most this often per session and process


class HostFigures:
    """The host-figures part of ``Commerce`` (which sets these attributes)."""

    redis: aredis.Redis
    catalog: Catalog
    notifier: Notifier | None
    clock: Callable[[], float]
    flash: FlashSales
    inventory: Inventory
    sessions: SessionDirectory[HostedSession] | None
    _figures_due: set[str]
    _spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]

    async def session_stock(
        self, session_id: str, skus: Sequence[str] | None = None,
    ) -> dict[str, int]:
        """Units left of ``skus``, by default the products sold in this session (the flash
        sale's for its sku)."""
        if skus is None:
            raw: Any = await self.redis.smembers(keys.figure_skus(session_id))
            products = (await self._session(session_id))[0]
            skus = sorted({text(s) for s in raw} | set(products))
        stock = await self.inventory.available(skus)
        sale = await self.flash.get(session_id)
        if sale is not None and sale.running(self.clock()) and sale.sku in stock:
            stock[sale.sku] = max(0, sale.qty_left)
        return stock

    async def figures(self, session_id: str) -> dict[str, Any]:
        """Carts, orders, revenue and stock of a session, as shown to its hosts."""
        now = self.clock()
        pipe = self.redis.pipeline(transaction=False)
        pipe.scard(keys.figure_carts(session_id))
        pipe.hmget(figures_key(session_id), ["orders", "revenue_cents"])
        pipe.zcount(figures_orders_key(session_id), now - ORDERS_WINDOW, "+inf")
        carts, (orders, cents), recent = await pipe.execute()
        return {
            "type": "figures", "carts": int(carts), "orders": int(orders or 0),
            "revenue": Money(int(cents or 0), self.catalog.currency).to_wire(),
            "stock": await self.session_stock(session_id),
            # orders in the last ``orders_window`` seconds, whoever pushed the figures
            "orders_recent": int(recent), "orders_window": int(ORDERS_WINDOW),
        }

    async def watch_figures(self, session_id: str, host: str) -> None:
        """``host`` gets this session's figures pushed from now on."""
        await self.redis.sadd(keys.figure_hosts(session_id), host)

    async def figure_watchers(self, session_id: str) -> set[str]:
        """The session's host and every host who ran a sale in it."""
        raw: Any = await self.redis.smembers(keys.figure_hosts(session_id))
        watchers = {text(h) for h in raw}
        host = (await self._session(session_id))[1]
        if host:
            watchers.add(host)
        return watchers

    async def _session(self, session_id: str) -> tuple[list[str], str | None]:
        """A session's lineup and host; nothing for a session nobody knows."""
        if self.sessions is None:
            return [], None
        try:
            info = await self.sessions.get(session_id)
        except LiveError:
            return [], None
        return list(info.products), info.host

    def _push_figures(self, session_id: str) -> None:
        if self.notifier is None or session_id in self._figures_due:
            return
        self._figures_due.add(session_id)
        self._spawn(self._send_figures(session_id))

    async def _send_figures(self, session_id: str) -> None:
        await asyncio.sleep(FIGURES_DELAY)
        self._figures_due.discard(session_id)
        notifier = self.notifier
        if notifier is None:
            return
        try:
            figures = await self.figures(session_id)
            for host in sorted(await self.figure_watchers(session_id)):
                await notifier.send_to_user(host, figures)
        except Exception:  # figures are advisory; a failed push is retried by the next change
            log.exception("pushing figures of session %s failed", session_id)
