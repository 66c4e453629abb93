"""Shared set-up of the browser tests: a served site with data the tests seed themselves,
tokens, the dev outbox, a proxy that drops connections, console-error capture and
screenshots."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis as redis_sync
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Error, Page, expect

from identity.members import Members
from live.commerce.catalog import Catalog
from live.db.client import connect
from live.money import Money
from live.types import WAREHOUSE, Product, Sku, Store
from tests.commerce_helpers import JWT_SPEC, PEPPER, keyring
from tests.utils import ServerProcess, run_server

SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
# Assertions wait for their condition up to this long: the machine may be busy.
expect.set_options(timeout=15_000)
SCREEN_CLEAR_SECONDS = 3
ENV = {
    "NEWRETAIL_JWT_KEYS": JWT_SPEC,
    "NEWRETAIL_IDENTITY_PEPPER": PEPPER.decode(),
    "NEWRETAIL_SCREEN_CLEAR": str(SCREEN_CLEAR_SECONDS),
}
STORE = "store-a"
SCREEN = "screen-a1"
HOST = "host-1"
MEMBER_NAME = "Ada Lovelace"
MEMBER_PHONE = "+447700900123"   # Ofcom's drama range: never a real line
MEMBER_ID = "m_ada00001"
STORES = (Store(STORE, "Soho", "London"), Store("store-b", "Leith", "Edinburgh"))
PRODUCTS = (
    Product(Sku("kite"), "Racing Kite", "toys", Money(1999, "GBP"), "/catalog/images/kite.svg"),
    Product(Sku("mug"), "Enamel Mug", "kitchen", Money(1250, "GBP"), "/catalog/images/mug.svg"),
    Product(Sku("pot"), "Copper Teapot", "kitchen", Money(4000, "GBP"), "/catalog/images/pot.svg"),
    Product(Sku("lamp"), "Oak Lamp", "home", Money(7500, "GBP"), "/catalog/images/lamp.svg"),
    Product(Sku("scarf"), "Silk Scarf", "fashion", Money(2900, "GBP"), "/catalog/images/scarf.svg"),
    Product(Sku("soap"), "Rose Soap", "beauty", Money(450, "GBP"), "/catalog/images/soap.svg"),
)
STOCK = {
    "kite": {WAREHOUSE: 500, STORE: 4},
    "mug": {WAREHOUSE: 50, STORE: 5, "store-b": 2},
    "pot": {WAREHOUSE: 3, STORE: 1},
    "lamp": {WAREHOUSE: 9, "store-b": 1},   # none at store-a: never offered on its screen
    "scarf": {WAREHOUSE: 20, STORE: 2},
    "soap": {WAREHOUSE: 40, STORE: 12},
}
LINEUP = ["kite", "mug", "pot", "scarf"]


def in_stock_at(store: str) -> set[str]:
    return {sku for sku, shelf in STOCK.items() if shelf.get(store, 0) > 0}


def token(sub: str, role: str, store: str | None = None, ttl: int = 3600,
          **extra: Any) -> str:
    return keyring().issue(sub, role, ttl=ttl, store=store,  # type: ignore[arg-type]
                           extra=extra or None)


async def _seed(url: str) -> None:
    redis = connect(url)
    try:
        catalog = Catalog(redis)
        await catalog.put_stores(STORES)
        await catalog.put_products(PRODUCTS)
        for sku, shelf in STOCK.items():
            for location, qty in shelf.items():
                await catalog.set_stock(sku, location, qty)
        members = Members(redis, PEPPER)
        await members.create(MEMBER_NAME, home_store=STORE, member_id=MEMBER_ID,
                             consent={"personalization": True, "marketing": False})
        await members.link(MEMBER_ID, "phone", MEMBER_PHONE)
    finally:
        await redis.aclose()


@dataclass
class Site:
    """A served site on a seeded store."""

    server: ServerProcess
    url: str

    def http(self, role: str = "admin", sub: str = "admin-1") -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10,
                            headers={"authorization": f"Bearer {token(sub, role)}"})

    def new_session(self, title: str = "Spring drop", products: list[str] | None = None) -> str:
        with self.http("host", HOST) as http:
            r = http.post("/live/sessions", json={"title": title, "products": products or LINEUP})
            r.raise_for_status()
            sid: str = r.json()["session_id"]
            return sid

    def host_url(self, sid: str) -> str:
        return f"{self.url}/host/{sid}?token={token(HOST, 'host')}"

    def screen_url(self, screen: str = SCREEN, store: str = STORE) -> str:
        return f"{self.url}/screen/{screen}?token={token(screen, 'screen', store)}"

    def sign_in_code(self, phone: str) -> str:
        """The latest one-time code texted to ``phone`` (the dev outbox, admin only)."""
        with self.http() as http:
            for message in http.get("/identity/dev/outbox").json()["messages"]:
                if message["phone"] == phone:
                    code: str = message["code"]
                    return code
        raise AssertionError(f"no code was sent to {phone}")


@contextmanager
def serve_site(store_url: str, var_dir: Path,
               env: dict[str, str] | None = None) -> Iterator[Site]:
    """Flush the store, seed it, and serve it (``env`` over the tests' settings)."""
    client = redis_sync.Redis.from_url(store_url)
    try:
        client.flushdb()
    finally:
        client.close()
    # Playwright's sync API keeps an event loop on this thread: seed from another one.
    seeder = threading.Thread(target=asyncio.run, args=(_seed(store_url),))
    seeder.start()
    seeder.join(timeout=30)
    with run_server(store_url, var_dir, env={**ENV, **(env or {})}) as server:
        yield Site(server, server.url)


def sign_in(page: Page, site: Site, typed: str, e164: str, scope: str = "") -> None:
    """Type a phone number, ask for a code, read it from the outbox and sign in."""
    page.fill(f"{scope} #phone".strip(), typed)
    page.click(f"{scope} #send-code".strip())
    page.locator(f"{scope} #signin-error".strip()).filter(has_text="Code sent").wait_for()
    page.fill(f"{scope} #otp".strip(), site.sign_in_code(e164))
    page.click(f"{scope} #verify".strip())


@dataclass
class ConsoleWatch:
    """Console errors and uncaught exceptions of the pages it watches."""

    problems: list[str] = field(default_factory=list)

    def watch(self, page: Page, name: str) -> Page:
        def on_console(msg: ConsoleMessage) -> None:
            if msg.type == "error":
                self.problems.append(f"{name}: console error: {msg.text} ({msg.location})")

        def on_error(err: Error) -> None:
            self.problems.append(f"{name}: page error: {err}")

        page.on("console", on_console)
        page.on("pageerror", on_error)
        return page


def new_context(browser: Browser, width: int = 1280, height: int = 800) -> BrowserContext:
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(15_000)
    return context


def screenshot(page: Page, name: str) -> Path:
    """Save a screenshot of ``page`` under tests/screenshots/ (git-ignored)."""
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def visible_text(page: Page) -> str:
    return str(page.evaluate("document.body.innerText"))


def chat_texts(page: Page) -> list[str]:
    """The chat lines' texts (beside each sender's name), top to bottom."""
    texts = page.locator("#chat li").evaluate_all(
        "lines => lines.map(li => [...li.childNodes].filter(n => n.nodeType === 3)"
        ".map(n => n.textContent).join(''))")
    return [str(t) for t in texts]


def wait_until(condition: Callable[[], bool], page: Page, seconds: float = 15.0) -> bool:
    """Poll a condition of the test process while the page runs (Playwright's own
    waits poll the page only)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        page.wait_for_timeout(100)
    return False


def digits(text: str) -> str:
    return re.sub(r"\D", "", text)


class DroppingProxy:
    """A TCP proxy in front of the server that can drop every connection at once and
    turn new ones away (closed at once), as a lost network does to a browser."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = int(self.listener.getsockname()[1])
        self.down = False
        self.ws_attempts_while_down = 0
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.down:
                self._turn_away(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._conns |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _turn_away(self, client: socket.socket) -> None:
        client.settimeout(2)
        try:
            first = client.recv(1024)
        except OSError:
            first = b""
        if b"/ws/live/" in first:
            with self._lock:
                self.ws_attempts_while_down += 1
        client.close()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                self._close(s)

    def _close(self, s: socket.socket) -> None:
        with self._lock:
            self._conns.discard(s)
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

    def cut(self) -> None:
        """Drop every open connection and turn new ones away until ``restore``."""
        self.down = True
        with self._lock:
            conns = list(self._conns)
        for s in conns:
            self._close(s)

    def restore(self) -> None:
        self.down = False

    def close(self) -> None:
        self._stopped.set()
        self.cut()
        self.listener.close()
        self._thread.join(timeout=5)


def json_of(response: httpx.Response) -> Any:
    response.raise_for_status()
    return response.json()
