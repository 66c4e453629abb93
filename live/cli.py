"""The ``newretail`` command."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Sequence

from identity.types import ROLES
from live.config import Settings
from live.services import load_keyring, open_services
from live.store import EmbeddedStore

log = logging.getLogger("newretail.live")

# uvicorn's sans-I/O websockets protocol: the fastest of its implementations for
# fan-out and the leanest per connection (see loadtests/README.md).
WS_IMPL = "websockets-sansio"


def run_uvicorn(settings: Settings, host: str, port: int, workers: int) -> None:
    """Serve the app; with no store URL, start the embedded store here first so every
    worker process shares it."""
    import uvicorn

    embedded: EmbeddedStore | None = None
    if settings.redis_url is None:
        embedded = EmbeddedStore(settings.store_dir, fsync=settings.store_fsync)
        os.environ["NEWRETAIL_REDIS_URL"] = embedded.start()
    os.environ["NEWRETAIL_VAR_DIR"] = str(settings.var_dir)
    os.environ["NEWRETAIL_MODE"] = settings.mode
    try:
        uvicorn.run(
            "live.app:create_app", factory=True, host=host, port=port, workers=workers,
            ws=WS_IMPL, ws_max_size=settings.ws_max_frame, ws_per_message_deflate=False,
            log_level=settings.log_level.lower(), access_log=False, lifespan="on",
        )
    finally:
        if embedded is not None:
            embedded.stop()


def cmd_serve(args: argparse.Namespace) -> int:
    run_uvicorn(Settings.from_env(), args.host, args.port, args.workers)
    return 0


async def _prepare_demo(settings: Settings) -> None:
    from live.demo import seed_demo

    async with open_services(settings) as svc:
        started = time.perf_counter()
        made = await seed_demo(svc.catalog, svc.members, svc.events, now=time.time())
        if made:
            print(f"demo data made in {time.perf_counter() - started:.1f} s: "
                  + ", ".join(f"{v:,} {k}" for k, v in made.items()))
        else:
            print("demo data found in the store; kept as it is")


def cmd_demo(args: argparse.Namespace) -> int:
    settings = dataclasses.replace(Settings.from_env(), mode="demo")
    embedded: EmbeddedStore | None = None
    if settings.redis_url is None:
        embedded = EmbeddedStore(settings.store_dir, fsync=settings.store_fsync)
        settings = dataclasses.replace(settings, redis_url=embedded.start())
    try:
        asyncio.run(_prepare_demo(settings))
        ring = load_keyring(settings)
        host_token = ring.issue("demo-host", "host", ttl=12 * 3600)
        base = f"http://{args.host}:{args.port}"
        print(f"\nnewretail demo on {base}")
        print(f"  health        {base}/healthz")
        print(f"  catalog       {base}/catalog/products?q=mug")
        print(f"  metrics       {base}/metrics")
        print(f"  host token    {host_token}\n", flush=True)
        run_uvicorn(settings, args.host, args.port, 1)
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    ring = load_keyring(Settings.from_env())
    print(ring.issue(args.sub, args.role, ttl=args.ttl, store=args.store))
    return 0


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

    token = sub.add_parser("token", help="print a signed token")
    token.add_argument("--role", required=True, choices=ROLES)
    token.add_argument("--sub", required=True)
    token.add_argument("--store", default=None)
    token.add_argument("--ttl", type=int, default=12 * 3600, help="seconds (default 12 h)")
    token.set_defaults(func=cmd_token)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("NEWRETAIL_LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        code: int = args.func(args)
    except ValueError as exc:
        print(f"newretail: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
