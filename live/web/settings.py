"""Settings read once from the environment (``NEWRETAIL_*``): the one place the service
reads it, validated at start with a clear error."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Mode = Literal["dev", "demo", "prod"]

_ROOT = Path(__file__).resolve().parents[2]


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc
    if not value > 0:
        raise ValueError(f"{name} must be above 0, got {raw!r}")
    return value


def _addresses(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """Comma-separated addresses or networks (``10.0.0.0/8``); set but empty means none."""
    raw = env.get(name)
    if raw is None:
        return default
    items = tuple(a.strip() for a in raw.split(",") if a.strip())
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError as exc:
            raise ValueError(f"{name}: {item!r} is not an address or network") from exc
    return items


def _int(env: Mapping[str, str], name: str, default: int, lo: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc
    if lo is not None and value < lo:
        raise ValueError(f"{name} must be {lo} or more, got {raw!r}")
    return value


def _rate(env: Mapping[str, str], name: str) -> float:
    """A probability: a number from 0 to 1 (0 when unset)."""
    raw = env.get(name)
    if raw is None or raw == "":
        return 0.0
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number from 0 to 1, got {raw!r}") from exc
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number from 0 to 1, got {raw!r}")
    return value


def _currency(env: Mapping[str, str]) -> str:
    """``NEWRETAIL_CURRENCY``: the catalog's ISO 4217 code (GBP when unset)."""
    raw = (env.get("NEWRETAIL_CURRENCY") or "GBP").strip()
    if len(raw) != 3 or not raw.isascii() or not raw.isalpha() or not raw.isupper():
        raise ValueError(f"NEWRETAIL_CURRENCY must be an ISO 4217 code of three capital "
                         f"letters, e.g. GBP, got {raw!r}")
    return raw


def _payments(env: Mapping[str, str], mode: str) -> dict[str, object]:
    """The payment settings: ``NEWRETAIL_PAYMENTS`` is ``fake`` (the default outside prod,
    where it must be named) or ``stripe`` (which needs its keys)."""
    provider = env.get("NEWRETAIL_PAYMENTS") or ("fake" if mode != "prod" else "")
    if provider not in ("fake", "stripe"):
        raise ValueError("NEWRETAIL_PAYMENTS must be fake or stripe"
                         + (" in prod mode" if not provider else f", got {provider!r}"))
    secret = env.get("NEWRETAIL_STRIPE_SECRET_KEY", "")
    hook = env.get("NEWRETAIL_STRIPE_WEBHOOK_SECRET", "")
    if provider == "stripe" and not (secret and hook):
        raise ValueError("NEWRETAIL_PAYMENTS=stripe needs NEWRETAIL_STRIPE_SECRET_KEY and "
                         "NEWRETAIL_STRIPE_WEBHOOK_SECRET")
    api_base = env.get("NEWRETAIL_STRIPE_API_BASE") or "https://api.stripe.com"
    public = env.get("NEWRETAIL_PUBLIC_URL") or None
    for name, url in (("NEWRETAIL_STRIPE_API_BASE", api_base), ("NEWRETAIL_PUBLIC_URL", public)):
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"{name} must be an http:// or https:// URL, got {url!r}")
    seed = env.get("NEWRETAIL_FAKE_PAY_SEED")
    return {
        "payments": provider, "public_url": public.rstrip("/") if public else None,
        "fake_pay_secret": env.get("NEWRETAIL_FAKE_PAY_SECRET", ""),
        "fake_pay_timeout_rate": _rate(env, "NEWRETAIL_FAKE_PAY_TIMEOUT_RATE"),
        "fake_pay_latency": _float(env, "NEWRETAIL_FAKE_PAY_LATENCY", 0.0),
        "fake_pay_duplicate_rate": _rate(env, "NEWRETAIL_FAKE_PAY_DUPLICATE_RATE"),
        "fake_pay_reorder_rate": _rate(env, "NEWRETAIL_FAKE_PAY_REORDER_RATE"),
        "fake_pay_seed": _int(env, "NEWRETAIL_FAKE_PAY_SEED", 0) if seed else None,
        "stripe_secret_key": secret, "stripe_webhook_secret": hook,
        "stripe_api_base": api_base.rstrip("/"),
    }


def _renamed(env: Mapping[str, str], name: str, old: str) -> Mapping[str, str]:
    """``env`` with ``name`` taken from its earlier name ``old`` when only that is set."""
    if env.get(name) is None and env.get(old) is not None:
        return {**env, name: env[old]}
    return env


def _choice(env: Mapping[str, str], name: str, options: tuple[str, ...]) -> str:
    """One of ``options``; the first when unset."""
    raw = env.get(name, options[0])
    if raw not in options:
        raise ValueError(f"{name} must be {' or '.join(options)}, got {raw!r}")
    return raw


def project_var_dir() -> Path:
    """The ``var/`` of the project this package runs from (a source checkout)."""
    return _ROOT / "var"


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment.

    Attributes:
        redis_url: the datastore; ``None`` starts the embedded server under ``var_dir``.
        var_dir: where the embedded store, the signing keys and the models live.
        mode: ``dev`` and ``demo`` write one-time codes to an outbox; ``prod`` needs a
            real SMS sender and explicit signing keys.
        jwt_keys: ``kid:secret`` pairs separated by commas, the first one signs;
            empty means a key generated once and kept in ``var_dir``.
    """

    redis_url: str | None = None
    var_dir: Path = field(default_factory=lambda: Path("var"))
    mode: Mode = "dev"
    jwt_keys: str = ""
    log_level: str = "INFO"
    static_dir: Path = _ROOT / "static"
    ws_max_frame: int = 64 * 1024
    ws_send_buffer: int = 256 * 1024
    db_fsync: str = "always"
    # Faults and floods (see docs/operations.md): how long one datastore command may take,
    # and WebSocket handshakes per client address (addresses in ws_trusted are exempt).
    db_timeout: float = 2.0
    ws_conn_per_address: int = 256
    ws_conn_rate: float = 20.0
    ws_conn_burst: int = 100
    ws_trusted: tuple[str, ...] = ("127.0.0.1", "::1")
    # Keep what offers read from the datastore in each process, dropped as the datastore announces
    # writes to it (client-side caching); off: every offer reads the datastore.
    offers_copy: bool = True
    # Pepper of identifier digests; empty outside prod: one generated once under var_dir.
    identity_pepper: str = ""
    # Where phone numbers without a country code are taken to be.
    phone_region: str = "GB"
    # How long a store screen shows a member's greeting before going idle, in seconds.
    screen_clear: float = 60.0
    # The live hub: session events kept for resume, coalescing and viewer-count periods,
    # pub/sub mode (auto, sharded, plain), connections written per event-loop turn (0: a
    # whole room), and whether frames go straight to the socket when the server allows.
    live_history: int = 1000
    live_coalesce: float = 0.25
    live_viewers_every: float = 1.0
    live_pubsub: str = "auto"
    live_fanout_chunk: int = 0
    ws_direct_send: bool = True
    # Video (live/media): the RTMP ingest port, and the ingest URL hosts are shown when
    # it is not this host's name and port (a load balancer in front).
    rtmp_port: int = 1935
    rtmp_url: str = ""
    # The ffmpeg binary; empty: the one the imageio-ffmpeg wheel ships.
    ffmpeg: str = ""
    # Payments (docs/payments.md): the provider, the service's own address (the fake
    # provider's webhooks go to it), the fake's behaviour, Stripe's keys and API address.
    payments: str = "fake"
    # ISO 4217 code of every price of this deployment's catalog (NEWRETAIL_CURRENCY).
    currency: str = "GBP"
    public_url: str | None = None
    fake_pay_secret: str = ""
    fake_pay_timeout_rate: float = 0.0
    fake_pay_latency: float = 0.0
    fake_pay_duplicate_rate: float = 0.0
    fake_pay_reorder_rate: float = 0.0
    fake_pay_seed: int | None = None
    stripe_secret_key: str = ""
    stripe_webhook_secret: str = ""
    stripe_api_base: str = "https://api.stripe.com"
    # Whether NEWRETAIL_VAR_DIR was set (rather than ./var by default).
    var_dir_set: bool = False

    @property
    def model_dir(self) -> Path:
        return self.var_dir / "models"

    @property
    def media_dir(self) -> Path:
        return self.var_dir / "media"

    @property
    def db_dir(self) -> Path:
        # "store" on disk: the folder name of earlier versions, so their data is found.
        return self.var_dir / "store"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``env`` (default: the process environment)."""
        env = os.environ if env is None else env
        env = _renamed(env, "NEWRETAIL_DB_FSYNC", "NEWRETAIL_STORE_FSYNC")
        env = _renamed(env, "NEWRETAIL_DB_TIMEOUT", "NEWRETAIL_STORE_TIMEOUT")
        mode = env.get("NEWRETAIL_MODE", "dev")
        if mode not in ("dev", "demo", "prod"):
            raise ValueError(f"NEWRETAIL_MODE must be dev, demo or prod, got {mode!r}")
        return cls(
            redis_url=env.get("NEWRETAIL_REDIS_URL") or env.get("REDIS_URL") or None,
            var_dir=Path(env.get("NEWRETAIL_VAR_DIR", "var")),
            var_dir_set=bool(env.get("NEWRETAIL_VAR_DIR")),
            mode=mode,  # type: ignore[arg-type]
            jwt_keys=env.get("NEWRETAIL_JWT_KEYS", ""),
            log_level=env.get("NEWRETAIL_LOG_LEVEL", "INFO").upper(),
            static_dir=Path(env.get("NEWRETAIL_STATIC_DIR", str(_ROOT / "static"))),
            ws_max_frame=_int(env, "NEWRETAIL_WS_MAX_FRAME", 64 * 1024),
            ws_send_buffer=_int(env, "NEWRETAIL_WS_SEND_BUFFER", 256 * 1024),
            db_fsync=_choice(env, "NEWRETAIL_DB_FSYNC", ("always", "everysec")),
            db_timeout=_float(env, "NEWRETAIL_DB_TIMEOUT", 2.0),
            ws_conn_per_address=_int(env, "NEWRETAIL_WS_CONN_PER_ADDRESS", 256),
            ws_conn_rate=_float(env, "NEWRETAIL_WS_CONN_RATE", 20.0),
            ws_conn_burst=_int(env, "NEWRETAIL_WS_CONN_BURST", 100),
            ws_trusted=_addresses(env, "NEWRETAIL_WS_TRUSTED", ("127.0.0.1", "::1")),
            offers_copy=_choice(env, "NEWRETAIL_OFFERS_COPY", ("on", "off")) == "on",
            identity_pepper=env.get("NEWRETAIL_IDENTITY_PEPPER", ""),
            phone_region=env.get("NEWRETAIL_PHONE_REGION", "GB").upper(),
            screen_clear=_float(env, "NEWRETAIL_SCREEN_CLEAR", 60.0),
            live_history=_int(env, "NEWRETAIL_LIVE_HISTORY", 1000, lo=1),
            live_coalesce=_float(env, "NEWRETAIL_LIVE_COALESCE", 0.25),
            live_viewers_every=_float(env, "NEWRETAIL_LIVE_VIEWERS_EVERY", 1.0),
            live_pubsub=_choice(env, "NEWRETAIL_LIVE_PUBSUB", ("auto", "sharded", "plain")),
            live_fanout_chunk=_int(env, "NEWRETAIL_LIVE_FANOUT_CHUNK", 0, lo=0),
            ws_direct_send=_choice(env, "NEWRETAIL_WS_DIRECT_SEND", ("1", "0")) == "1",
            rtmp_port=_int(env, "NEWRETAIL_RTMP_PORT", 1935, lo=1),
            rtmp_url=env.get("NEWRETAIL_RTMP_URL", ""),
            ffmpeg=env.get("NEWRETAIL_FFMPEG", ""),
            currency=_currency(env),
            **_payments(env, mode),  # type: ignore[arg-type]
        )
