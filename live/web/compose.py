"""The services of one process, built once from the settings and shared by app and CLI."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aredis

from identity.members import Members
from identity.service import IdentityConfig, IdentityService
from identity.tokens import KeyRing
from live.commerce.catalog import Catalog
from live.commerce.migrate import migrate_money
from live.commerce.service import Commerce
from live.db.client import bounded, connect
from live.db.server import EmbeddedValkey
from live.db.tracked import Tracked
from live.hub.hub import Hub
from live.hub.rooms import HubConfig
from live.hub.session_ops import SessionOps
from live.offers.screens import ScreenGreeter
from live.offers.service import COPY_MAX_KEYS, COPY_PREFIXES, OfferService
from live.payments.delivery import FakeDelivery
from live.payments.fake import FakeConfig, FakeProvider
from live.payments.port import PaymentProvider
from live.payments.service import Payments
from live.payments.stripe_provider import StripeProvider
from live.web.commerce_ops import register_commerce_ops
from live.web.settings import Settings
from recommender.events import EventLog
from recommender.service import Recommender

log = logging.getLogger("newretail.live")


def secret_file(path: Path, nbytes: int = 32) -> bytes:
    """Random bytes kept at ``path`` (made with mode 0600 the first time)."""
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_bytes(nbytes)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(value.hex())
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return value


def load_keyring(settings: Settings) -> KeyRing:
    if settings.jwt_keys:
        return KeyRing.from_spec(settings.jwt_keys)
    if settings.mode == "prod":
        raise ValueError("NEWRETAIL_JWT_KEYS must be set in prod mode")
    return KeyRing.load_or_create(settings.var_dir / "secrets" / "jwt-keys.json")


def load_pepper(settings: Settings) -> bytes:
    if settings.identity_pepper:
        return settings.identity_pepper.encode()
    if settings.mode == "prod":
        raise ValueError("NEWRETAIL_IDENTITY_PEPPER must be set in prod mode")
    return secret_file(settings.var_dir / "secrets" / "identity-pepper")


@dataclass
class PaymentParts:
    """The payments of a process and what runs beside them (the fake's webhook sender)."""

    payments: Payments
    delivery: FakeDelivery | None = None
    stripe: StripeProvider | None = None

    async def close(self) -> None:
        if self.delivery is not None:
            await self.delivery.stop()
        if self.stripe is not None:
            await self.stripe.close()


def build_payments(settings: Settings, redis: aredis.Redis) -> PaymentParts:
    """The provider named by ``NEWRETAIL_PAYMENTS``; the fake's page only in dev and demo."""
    if settings.payments == "stripe":
        stripe = StripeProvider(settings.stripe_secret_key, settings.stripe_webhook_secret,
                                settings.stripe_api_base)
        return PaymentParts(Payments(redis, stripe), stripe=stripe)
    secret = (settings.fake_pay_secret.encode() if settings.fake_pay_secret
              else secret_file(settings.var_dir / "secrets" / "fake-pay-secret"))
    config = FakeConfig(secret=secret, timeout_rate=settings.fake_pay_timeout_rate,
                        latency=settings.fake_pay_latency,
                        duplicate_rate=settings.fake_pay_duplicate_rate,
                        reorder_rate=settings.fake_pay_reorder_rate, seed=settings.fake_pay_seed)
    url = (f"{settings.public_url}/payments/webhook/fake" if settings.public_url else None)
    if url is None:
        log.warning("NEWRETAIL_PUBLIC_URL is not set: the fake payment provider cannot "
                    "deliver its webhooks")
    fake = FakeProvider(redis, config)
    delivery = FakeDelivery(redis, url, fake.signed, duplicate_rate=config.duplicate_rate,
                            seed=config.seed)
    fake.delivery = delivery
    provider: PaymentProvider = fake
    page = fake if settings.mode != "prod" else None
    return PaymentParts(Payments(redis, provider, fake_page=page), delivery=delivery)


def _erase_from(recommender: Recommender) -> Callable[[str, list[str]], Awaitable[None]]:
    async def erase(member_id: str, user_ids: list[str]) -> None:
        await recommender.erase_user(user_ids)
    return erase


@dataclass
class Services:
    """What a web process (or a CLI command) works with."""

    settings: Settings
    redis: aredis.Redis
    keyring: KeyRing
    members: Members
    events: EventLog
    catalog: Catalog
    identity: IdentityService
    commerce: Commerce
    hub: Hub
    recommender: Recommender
    offers: OfferService
    payments: Payments
    payment_parts: PaymentParts
    embedded: EmbeddedValkey | None = None


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Connect to the datastore (starting the embedded one when no URL is set) and build
    the services; stop what was started on exit."""
    embedded: EmbeddedValkey | None = None
    url = settings.redis_url
    if url is None:
        embedded = EmbeddedValkey(settings.db_dir, fsync=settings.db_fsync)
        url = embedded.start()
    redis = connect(url, settings.db_timeout)
    copy: Tracked | None = None
    try:
        await redis.ping()
        await migrate_money(redis, settings.currency)  # v0.1.0 prices: once, idempotent
        keyring = load_keyring(settings)
        pepper = load_pepper(settings)
        identity = IdentityService(
            redis, keyring, pepper,
            config=IdentityConfig(region=settings.phone_region,
                                  dev_outbox=settings.mode != "prod"),
        )
        events = EventLog(redis)
        catalog = Catalog(redis, settings.currency)
        hub = Hub(redis, HubConfig(
            history=settings.live_history, coalesce_interval=settings.live_coalesce,
            viewers_interval=settings.live_viewers_every, send_buffer=settings.ws_send_buffer,
            pubsub=settings.live_pubsub, fanout_chunk=settings.live_fanout_chunk,
            direct_send=settings.ws_direct_send,
        ), erased_among=identity.erased_among)
        session_ops = SessionOps(hub, catalog, identity.members, is_erased=identity.is_erased)
        recommender = Recommender(redis, settings.model_dir, identity.erased_among)
        if settings.offers_copy:
            copy = Tracked(url, COPY_PREFIXES, max_keys=COPY_MAX_KEYS)
            await copy.start()
        offers = OfferService(recommender, catalog, identity.members, hub.session_products,
                              copy)
        commerce = Commerce(
            redis, catalog, identity.members, events, notifier=hub, record=recommender.record,
            sessions=hub.sessions, is_erased=identity.is_erased,
        )
        register_commerce_ops(hub, commerce)
        # A check-in at a store screen shows the member's offers there, then clears.
        screens = ScreenGreeter(redis, offers, identity.members, hub,
                                clear_after=settings.screen_clear)
        identity.on_checkin.append(screens.on_checkin)
        for on_stitch in (commerce.stitch, recommender.stitch):
            identity.on_stitch.append(on_stitch)
        identity.on_erase.append(commerce.erase_users)
        identity.on_erase.append(session_ops.erase_users)
        identity.on_erase.append(_erase_from(recommender))
        identity.on_checkin.append(offers.record_checkin)
        parts = build_payments(settings, redis)
        yield Services(
            settings=settings,
            redis=redis,
            keyring=keyring,
            members=identity.members,
            identity=identity,
            events=events,
            catalog=catalog,
            commerce=commerce,
            hub=hub,
            recommender=recommender,
            offers=offers,
            payments=parts.payments,
            payment_parts=parts,
            embedded=embedded,
        )
    finally:
        if copy is not None:
            await bounded(copy.stop(), "store announcements")
        await bounded(redis.aclose(), "datastore client")
        if embedded is not None:
            embedded.stop()
