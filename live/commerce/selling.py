"""Flash sales as the host runs them: start, stop, the end announced once, and the sweep
that ends sales whose time is up."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import redis.asyncio as aredis

from live.commerce import keys
from live.commerce.catalog import Catalog
from live.commerce.checkout import RECORD_GRACE
from live.commerce.flash import FlashSale, FlashSales, parse_flash_start
from live.commerce.inventory import Inventory
from live.commerce.types import (
    HOST_ROLES,
    Caller,
    Notifier,
    check_caller,
)
from live.errors import LiveError

log = logging.getLogger("newretail.live")

EXPIRY_SWEEP = 0.25


class FlashSelling:
    """The flash-sale part of ``Commerce`` (which sets these attributes)."""

    redis: aredis.Redis
    catalog: Catalog
    notifier: Notifier | None
    clock: Callable[[], float]
    flash: FlashSales
    inventory: Inventory
    _push_figures: Callable[[str], None]
    record_owed: Callable[[], Coroutine[Any, Any, int]]

    async def start_flash(
        self, caller: Caller, session_id: str, payload: Mapping[str, Any],
    ) -> FlashSale:
        check_caller(caller, HOST_ROLES, "a flash sale")
        request = parse_flash_start(payload, self.catalog.currency)
        product = await self.catalog.get(request.sku)
        if request.price >= product.price:
            raise LiveError("invalid_price", f"a flash sale price must be below the list "
                            f"price {product.price}; got {request.price}")
        units = (await self.inventory.available([request.sku]))[request.sku]
        if units < request.qty:
            raise LiveError("insufficient_stock",
                            f"only {units} units of {request.sku} in stock", 409)
        await self.expire(session_id)
        sale, replaced = await self.flash.start(session_id, request, self.clock())
        pipe = self.redis.pipeline(transaction=False)
        pipe.sadd(keys.figure_hosts(session_id), caller.user)
        pipe.sadd(keys.figure_skus(session_id), sale.sku)
        await pipe.execute()
        if self.notifier is not None:
            if replaced:
                await self.notifier.publish(session_id, {
                    "type": "flash_sale_ended", "id": replaced, "reason": "expired"})
            await self.notifier.publish(session_id, dict(sale.message()))
            await self.notifier.publish_coalesced(session_id, "stock", sale.sku, sale.qty_left)
        self._push_figures(session_id)
        return sale

    async def stop_flash(self, caller: Caller, session_id: str) -> None:
        check_caller(caller, HOST_ROLES, "a flash sale")
        sale = await self.flash.get(session_id)
        if sale is None or not sale.running(self.clock()):
            await self.expire(session_id)
            raise LiveError("no_flash_sale", "no flash sale is running in this session", 404)
        if await self.flash.end(session_id, "stopped", self.clock(), sale_id=sale.id):
            await self._announce_end(session_id)

    async def _announce_end(self, session_id: str) -> None:
        sale = await self.flash.get(session_id)
        if sale is None or self.notifier is None:
            return
        # The end, and the stock the sale leaves (its units back in the pool, or none), in
        # one write to each viewer.
        await self.notifier.publish_with_figures(
            session_id, dict(sale.ended_message(sale.reason)), "stock", [sale.sku])
        # A flush that read the figure before the end may publish after it: the next
        # flush reads it again (and sends nothing if it is the one just shown).
        await self.notifier.publish_coalesced(session_id, "stock", sale.sku, sale.qty_left)

    async def expire(self, session_id: str) -> bool:
        """End the session's sale if its time is up; True for the process that did it."""
        if await self.flash.end(session_id, "expired", self.clock(), only_if_expired=True):
            await self._announce_end(session_id)
            return True
        return False

    async def flash_sale(self, session_id: str) -> dict[str, Any] | None:
        """The running sale as a ``flash_sale`` message (the snapshot part), or None."""
        sale = await self.flash.get(session_id)
        if sale is None or sale.state != "active":
            return None
        if not sale.running(self.clock()):
            await self.expire(session_id)
            return None
        return dict(sale.message())

    async def expire_due(self) -> int:
        """End every sale whose time is up (the sweep); returns how many this call ended."""
        ended = 0
        for session_id in await self.flash.due(self.clock()):
            ended += await self.expire(session_id)
        return ended

    async def run_expiry(self, interval: float = EXPIRY_SWEEP) -> None:
        """Sweep for expired sales, and now and then for owed purchase events, until
        cancelled (one task per web process)."""
        owed_at = 0.0
        while True:
            try:
                await self.expire_due()
                if time.monotonic() >= owed_at:
                    owed_at = time.monotonic() + RECORD_GRACE / 6
                    await self.record_owed()
            except Exception:  # a datastore hiccup must not stop the sweep
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # Cancelled, and a client library answered with an error of its own
                    # (a read cut short): stop, or shutdown would wait for ever.
                    raise asyncio.CancelledError from None
                log.exception("flash sale expiry sweep failed")
            await asyncio.sleep(interval)
