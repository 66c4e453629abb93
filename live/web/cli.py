"""The ``newretail`` command."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from identity.types import ROLES
from live.commerce import keys
from live.db.server import EmbeddedValkey
from live.demo.script import DemoUrls, start_in_thread
from live.money import Money, exponent
from live.web.compose import load_keyring, open_services
from live.web.settings import Settings, project_var_dir

if TYPE_CHECKING:
    from live.commerce.catalog import Catalog

log = logging.getLogger("newretail.live")


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def run_uvicorn(settings: Settings, host: str, port: int, workers: int) -> None:
    """Serve the app; with no store URL, start the embedded store here first so every
    worker process shares it."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from live.uvicorn.http import HTTP_PROTOCOL
    from live.uvicorn.listener import TcpConfig
    from live.uvicorn.ws import WS_PROTOCOL

    # uvicorn shuts down on SIGTERM, then raises the signal again with the handler it
    # found: with the default one the process dies at once and the embedded store it
    # started outlives it. Exiting through Python stops the datastore on the way out.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    embedded: EmbeddedValkey | None = None
    if settings.redis_url is None:
        embedded = EmbeddedValkey(settings.db_dir, fsync=settings.db_fsync)
        os.environ["NEWRETAIL_REDIS_URL"] = embedded.start()
        embedded.supervise()
    os.environ["NEWRETAIL_VAR_DIR"] = str(settings.var_dir)
    os.environ["NEWRETAIL_MODE"] = settings.mode
    # The service's own address, where the fake payment provider sends its webhooks.
    local = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    os.environ["NEWRETAIL_PUBLIC_URL"] = settings.public_url or f"http://{local}:{port}"
    config = TcpConfig(
        "live.web.app:create_app", factory=True, host=host, port=port, workers=workers,
        # uvicorn's httptools protocol, writing a response's head with its body.
        http=HTTP_PROTOCOL,
        # uvicorn's sans-I/O websockets protocol (the fastest of its implementations for
        # fan-out and the leanest per connection, see loadtests/README.md), without a
        # pause in reading per message.
        ws=WS_PROTOCOL, ws_max_size=settings.ws_max_frame, ws_per_message_deflate=False,
        log_level=settings.log_level.lower(), access_log=False, lifespan="on",
        # Longer than clients' and proxies' idle pools, so the server is not the one
        # closing a kept-alive connection just as a client reuses it.
        timeout_keep_alive=75,
    )
    try:
        # What ``uvicorn.run`` does, with the listening socket of ``TcpConfig``.
        if workers > 1:
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        else:
            server = uvicorn.Server(config)
            server.run()
            if not server.started:
                raise SystemExit(3)  # uvicorn's status for a failed start-up
    finally:
        if embedded is not None:
            embedded.stop()


def cmd_serve(args: argparse.Namespace) -> int:
    run_uvicorn(Settings.from_env(), args.host, args.port, args.workers)
    return 0


async def _prepare_demo(settings: Settings) -> None:
    from live.demo.seed import seed_demo

    async with open_services(settings) as svc:
        started = time.perf_counter()
        made = await seed_demo(svc.catalog, svc.members, svc.events, now=time.time())
        if made:
            print(f"demo data made in {time.perf_counter() - started:.1f} s: "
                  + ", ".join(f"{v:,} {k}" for k, v in made.items()))
        else:
            print("demo data found in the datastore; kept as it is")


def cmd_demo(args: argparse.Namespace) -> int:
    settings = dataclasses.replace(Settings.from_env(), mode="demo")
    if settings.public_url is None:  # where the fake payment provider sends its webhooks
        settings = dataclasses.replace(settings, public_url=f"http://{args.host}:{args.port}")
    embedded: EmbeddedValkey | None = None
    if settings.redis_url is None:
        embedded = EmbeddedValkey(settings.db_dir, fsync=settings.db_fsync)
        settings = dataclasses.replace(settings, redis_url=embedded.start())
        embedded.supervise()
    try:
        asyncio.run(_prepare_demo(settings))
        if not (settings.model_dir / "current").exists():
            asyncio.run(_train(settings, watch=False, min_new=0, interval=0))
        ring = load_keyring(settings)
        base = f"http://{args.host}:{args.port}"
        # Video: the media server in this process, and a generated picture streamed
        # into the demo session's ingest (live/demo/video.py).
        from live.demo.video import DemoVideo

        assert settings.redis_url is not None  # the embedded datastore was started above
        video = DemoVideo(settings.redis_url, settings.rtmp_port, settings.media_dir)
        video.start()

        def ready_with_video(urls: DemoUrls) -> None:
            _print_urls(urls)
            video.publish(urls.session_id)

        _, urls, ready = start_in_thread(
            base, ring, [f"m_demo{i:05d}" for i in range(8)], DEMO_LINEUP,
            on_ready=ready_with_video,
        )
        try:
            run_uvicorn(settings, args.host, args.port, 1)
        finally:
            video.stop()
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


DEMO_LINEUP = ["1003", "2001", "2010", "3002", "5004", "7003"]


def _print_urls(urls: DemoUrls) -> None:
    base = urls.viewer.split("/live/")[0]
    print(f"\nnewretail demo on {base}")
    print(f"  viewer        {urls.viewer}")
    print(f"  presenter     {urls.host}")
    print(f"  store screen  {urls.screen}")
    print(f"  home          {base}/   (lives now, scheduled lives and replays)")
    print(f"  member phone  {urls.me}   (demo phones +447700900000 to +447700900999;")
    print("                codes appear in the log and in the dev outbox below)")
    print(f"  dev outbox    {base}/identity/dev/outbox   (admin only: send")
    print(f"                Authorization: Bearer {urls.admin_token})")
    print(f"  health        {base}/healthz   metrics {base}/metrics")
    print(f"  host token    {urls.host.split('token=')[1]}")
    print(f"  admin token   {urls.admin_token}\n", flush=True)


JWT_KEYS_FILE = Path("secrets") / "jwt-keys.json"


def token_settings(settings: Settings, project_var: Path) -> Settings:
    """The settings whose signing keys the running service verifies: NEWRETAIL_JWT_KEYS;
    else NEWRETAIL_VAR_DIR's (made there when new, as the service run with it makes them);
    else those of ./var, or of the project's var/ when run from elsewhere. Never new keys
    in a folder no service reads: such a token would be refused, so this refuses first,
    and says why."""
    if settings.jwt_keys:
        return settings
    if (settings.var_dir / JWT_KEYS_FILE).exists():
        return settings
    if settings.var_dir_set:
        # Named on purpose: the service run with the same NEWRETAIL_VAR_DIR reads these.
        return settings
    if (project_var / JWT_KEYS_FILE).exists():
        print(f"newretail: using the signing keys under {project_var}", file=sys.stderr)
        return dataclasses.replace(settings, var_dir=project_var)
    raise ValueError(
        f"no signing keys under ./{settings.var_dir} nor {project_var}: start the service "
        "once (make demo, or newretail serve) so it makes them, run this in its folder, "
        "or set NEWRETAIL_VAR_DIR or NEWRETAIL_JWT_KEYS as the service has them")


def cmd_token(args: argparse.Namespace) -> int:
    ring = load_keyring(token_settings(Settings.from_env(), project_var_dir()))
    print(ring.issue(args.sub, args.role, ttl=args.ttl, store=args.store))
    return 0


def void(_: object) -> None:
    """Drop a value (tqdm's update returns one; the callbacks return nothing)."""


async def _train(settings: Settings, watch: bool, min_new: int, interval: float) -> None:
    from tqdm import tqdm

    from recommender.trainer import train_from_log, watch_and_train

    async with open_services(settings) as svc:
        async def train_once() -> None:
            total = await svc.events.length()
            params = svc.recommender.blend.als
            with tqdm(total=total, unit="event", desc="read") as events_bar, \
                    tqdm(total=params.iterations, unit="iter", desc="ALS") as iter_bar:
                result = await train_from_log(
                    svc.redis, settings.model_dir, params,
                    on_events=lambda k: void(events_bar.update(k)),
                    on_iteration=lambda _: void(iter_bar.update(1)),
                    attributes=lambda skus: product_attributes(svc.catalog, skus))
            print(f"model {result.version}: {result.events:,} events, {result.users:,} users, "
                  f"{result.items:,} items, {result.seconds:.1f} s")

        if watch:
            await watch_and_train(svc.redis, settings.model_dir, min_new, interval, train_once)
        else:
            await train_once()


async def product_attributes(catalog: Catalog, skus: list[str]) -> dict[str, tuple[float, str]]:
    """Price and category of the catalog's products among ``skus``, for the rankers."""
    out: dict[str, tuple[float, str]] = {}
    for start in range(0, len(skus), 1000):
        part = skus[start:start + 1000]
        for sku, p in zip(part, await catalog.get_many(part), strict=True):
            if p is not None:
                out[sku] = (p.price.amount / 10 ** exponent(p.price.currency), str(p.category))
    return out


def cmd_train(args: argparse.Namespace) -> int:
    asyncio.run(_train(Settings.from_env(), args.watch, args.min_new_events, args.interval))
    return 0


async def _import_retail(settings: Settings, path: str, stock: int) -> None:
    from pathlib import Path

    from tqdm import tqdm

    from live.types import WAREHOUSE, Product, Sku
    from recommender.evaluate import read_retail
    from recommender.types import Event

    rows = list(tqdm(read_retail(Path(path)), unit="row", desc="read"))
    products: dict[str, Product] = {}
    customers: set[str] = set()
    for r in rows:
        # the file's decimal text (repr is its shortest exact spelling), quantized once
        price = Money.from_decimal(repr(r.price), settings.currency)
        products[r.sku] = Product(Sku(r.sku), r.description or r.sku, "retail", price,
                                  f"/catalog/images/{r.sku}.svg")
        customers.add(r.customer)
    async with open_services(settings) as svc:
        await svc.catalog.put_products(products.values())
        pipe = svc.redis.pipeline(transaction=False)
        for sku in products:
            pipe.hset(keys.stock(sku), WAREHOUSE, stock)
        await pipe.execute()
        ids: dict[str, str] = {}

        async def member_for(customer: str) -> None:
            member_id = await svc.members.resolve("loyalty_card", customer)
            if member_id is None:
                member = await svc.members.create(
                    f"Customer {customer}", consent={"personalization": True})
                await svc.members.link(member.id, "loyalty_card", customer)
                member_id = member.id
            ids[customer] = member_id

        ordered = sorted(customers)
        with tqdm(total=len(ordered), unit="member", desc="members") as bar:
            for start in range(0, len(ordered), 64):  # 64 at a time: round trips overlap
                part = ordered[start:start + 64]
                await asyncio.gather(*(member_for(c) for c in part))
                bar.update(len(part))
        events = [Event(ids[r.customer], r.sku, "purchase", r.ts, qty=r.qty) for r in rows]
        with tqdm(total=len(events), unit="event", desc="events") as bar:
            for start in range(0, len(events), 10_000):
                chunk = events[start:start + 10_000]
                await svc.recommender.record(chunk)
                bar.update(len(chunk))
    print(f"imported {len(products):,} products, {len(customers):,} members, "
          f"{len(rows):,} purchase events")


def cmd_import(args: argparse.Namespace) -> int:
    asyncio.run(_import_retail(Settings.from_env(), args.path, args.stock))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Convert a v0.1.0 store's prices and orders to exact money (also done on start)."""
    from live.commerce.migrate import migrate_money
    from live.db.client import connect

    settings = Settings.from_env()

    async def run() -> str:
        embedded: EmbeddedValkey | None = None
        url = settings.redis_url
        if url is None:
            embedded = EmbeddedValkey(settings.db_dir, fsync=settings.db_fsync)
            url = embedded.start()
        redis = connect(url, settings.db_timeout)
        try:
            return str(await migrate_money(redis, settings.currency, force=args.force))
        finally:
            await redis.aclose()
            if embedded is not None:
                embedded.stop()

    print(asyncio.run(run()))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from recommender.evaluate import parse_time, read_retail
    from recommender.evaluate_discovery import evaluate_splits, format_reports

    rows = list(read_retail(Path(args.data)))
    dates = [d.strip() for d in (args.splits or args.split).split(",") if d.strip()]
    reports = evaluate_splits(rows, [(d, parse_time(d)) for d in dates], args.horizon_days,
                              lambda m: print(m, file=sys.stderr, flush=True))
    print(format_reports(reports))
    return 0


def cmd_media(args: argparse.Namespace) -> int:
    from live.web.media import run_media_process

    return run_media_process(Settings.from_env(), args.host, args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="newretail", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser("demo", help="demo data, a live session and the service")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.set_defaults(func=cmd_demo)

    media = sub.add_parser("media", help="RTMP ingest and HLS for live video")
    media.add_argument("--host", default="127.0.0.1")
    media.add_argument("--port", type=int, default=None, help="default NEWRETAIL_RTMP_PORT")
    media.set_defaults(func=cmd_media)

    token = sub.add_parser("token", help="print a signed token")
    token.add_argument("--role", required=True, choices=ROLES)
    token.add_argument("--sub", required=True)
    token.add_argument("--store", default=None)
    token.add_argument("--ttl", type=int, default=12 * 3600, help="seconds (default 12 h)")
    token.set_defaults(func=cmd_token)

    train = sub.add_parser("train", help="train a model version from the event log")
    train.add_argument("--watch", action="store_true", help="retrain as new events arrive")
    train.add_argument("--min-new-events", type=int, default=1000)
    train.add_argument("--interval", type=float, default=30.0, help="seconds between checks")
    train.set_defaults(func=cmd_train)

    imp = sub.add_parser("import", help="import a data set")
    imp.add_argument("dataset", choices=["online-retail"])
    imp.add_argument("path")
    imp.add_argument("--stock", type=int, default=1000, help="units of each in the warehouse")
    imp.set_defaults(func=cmd_import)

    mig = sub.add_parser("migrate", help="convert a v0.1.0 store to exact money")
    mig.add_argument("--force", action="store_true",
                     help="look at every record even in a store marked migrated")
    mig.set_defaults(func=cmd_migrate)

    ev = sub.add_parser("eval", help="offline quality against the baselines")
    ev.add_argument("--data", default="../shared/data/online_retail_dev.csv.gz")
    ev.add_argument("--split", default="2011-07-01")
    ev.add_argument("--splits", default=None,
                    help="several split dates, comma separated (instead of --split)")
    ev.add_argument("--horizon-days", type=float, default=None,
                    help="score on purchases this many days after each split (default: all)")
    ev.set_defaults(func=cmd_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        level = Settings.from_env().log_level  # a bad setting is said here, before any work
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
        code: int = args.func(args)
    except ValueError as exc:
        print(f"newretail: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
