"""The foundation: store, tokens, app factory, operations endpoints, CLI."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import httpx
import jwt
import pytest
from starlette.testclient import TestClient

from identity.errors import IdentityError
from identity.tokens import KeyRing
from live.db.client import bounded, connect
from live.db.server import EmbeddedValkey
from live.demo.seed import make_products, seed_demo
from live.uvicorn.listener import TcpConfig, as_tcp
from live.web.cli import main as cli_main
from live.web.compose import open_services
from live.web.settings import Settings
from tests.utils import run_server


def test_settings_reject_bad_values() -> None:
    """A wrong setting is refused with its name in the message, not ignored."""
    with pytest.raises(ValueError, match="NEWRETAIL_MODE"):
        Settings.from_env({"NEWRETAIL_MODE": "staging"})
    with pytest.raises(ValueError, match="NEWRETAIL_WS_MAX_FRAME"):
        Settings.from_env({"NEWRETAIL_WS_MAX_FRAME": "big"})
    s = Settings.from_env({"REDIS_URL": "redis://h:1/2", "NEWRETAIL_VAR_DIR": "/x"})
    assert s.redis_url == "redis://h:1/2" and s.var_dir == Path("/x")


def test_keyring_rotation() -> None:
    """A token verifies while its key is in the ring and fails once the key is retired."""
    old = KeyRing({"k1": b"a" * 32})
    token = old.issue("alice", "host", ttl=60)
    rotated = KeyRing({"k2": b"b" * 32, "k1": b"a" * 32})
    assert rotated.verify(token).sub == "alice"
    new_token = rotated.issue("bob", "admin", ttl=60)
    assert jwt.get_unverified_header(new_token)["kid"] == "k2"
    retired = KeyRing({"k2": b"b" * 32})
    with pytest.raises(IdentityError, match="retired"):
        retired.verify(token)
    assert retired.verify(new_token).role == "admin"


def test_keyring_refuses_expired_forged_and_unknown_roles() -> None:
    """Expired tokens, tokens signed with another secret and unknown roles are refused."""
    ring = KeyRing({"k1": b"a" * 32})
    expired = jwt.encode(
        {"sub": "x", "role": "host", "exp": int(time.time()) - 5, "iss": "newretail"},
        b"a" * 32, algorithm="HS256", headers={"kid": "k1"},
    )
    with pytest.raises(IdentityError, match="expired"):
        ring.verify(expired)
    forged = jwt.encode(
        {"sub": "x", "role": "admin", "exp": int(time.time()) + 60, "iss": "newretail"},
        b"z" * 32, algorithm="HS256", headers={"kid": "k1"},
    )
    with pytest.raises(IdentityError):
        ring.verify(forged)
    with pytest.raises(ValueError, match="unknown role"):
        ring.issue("x", "root", ttl=60)  # type: ignore[arg-type]


def test_keyring_keeps_verified_tokens_until_they_expire(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A token verified once is known by its text until its ``exp``; a copy that differs
    in any byte is verified in full; the ring keeps a bounded number of tokens."""
    now = [time.time()]
    ring = KeyRing({"k1": b"a" * 32}, clock=lambda: now[0])
    token = ring.issue("alice", "member", ttl=60)
    first = ring.verify(token)
    assert ring.verify(token) is first  # known: not decoded again
    head, payload, signature = token.split(".")
    tampered = f"{head}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    with pytest.raises(IdentityError, match="invalid"):
        ring.verify(tampered)
    # the token's exp is a whole second: from then on it is refused, known or not
    now[0] = first.exp - 0.001
    assert ring.verify(token).sub == "alice"
    now[0] = first.exp
    with pytest.raises(IdentityError, match="expired"):
        ring.verify(token)
    with pytest.raises(IdentityError, match="expired"):
        ring.verify(token)  # forgotten, and refused in full by the same clock
    monkeypatch.setattr("identity.tokens.VERIFIED_KEPT", 3)
    now[0] = time.time()
    tokens = [ring.issue(f"m{i}", "member", ttl=60) for i in range(5)]
    assert [ring.verify(t).sub for t in tokens] == [f"m{i}" for i in range(5)]
    assert list(ring._verified) == tokens[2:]  # the oldest went first


def test_keyring_is_kept_under_var(tmp_path: Path) -> None:
    """The dev key ring is made once and read back the same."""
    path = tmp_path / "secrets" / "jwt-keys.json"
    first = KeyRing.load_or_create(path)
    token = first.issue("a", "viewer", ttl=60)
    assert KeyRing.load_or_create(path).verify(token).sub == "a"
    assert path.stat().st_mode & 0o777 == 0o600


def test_ops_endpoints(client: TestClient) -> None:
    """/healthz, /readyz and /metrics answer; metrics carry per-route latency."""
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["store"] == "ok"
    client.get("/catalog/products")
    text = client.get("/metrics").text
    assert 'newretail_http_request_seconds_count{method="GET",route="/catalog/products"' in text
    assert "newretail_ws_connections" in text


def test_errors_have_one_shape(client: TestClient) -> None:
    """Unknown routes, bad bodies and missing tokens answer in the error shape."""
    missing = client.get("/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    no_token = client.put("/catalog/stock/1000", json={"location": "warehouse", "qty": 1})
    assert no_token.status_code == 401
    assert no_token.json()["error"]["code"] == "unauthorized"
    bad_limit = client.get("/catalog/products?limit=0")
    assert bad_limit.status_code == 400 and bad_limit.json()["error"]["code"] == "bad_request"


def test_demo_data_is_deterministic_and_seeded_once(client: TestClient) -> None:
    """The demo catalog is the same on every machine, and seeding twice adds nothing."""
    assert make_products(__import__("random").Random(7)) == make_products(
        __import__("random").Random(7))

    async def seed() -> tuple[dict[str, int], dict[str, int]]:
        svc = client.app.state.services  # type: ignore[attr-defined]
        first = await seed_demo(svc.catalog, svc.members, svc.events, now=1e9, member_count=50)
        second = await seed_demo(svc.catalog, svc.members, svc.events, now=1e9, member_count=50)
        return first, second

    first, second = client.portal.call(seed)  # type: ignore[union-attr]
    assert first["products"] > 200 and first["members"] == 50 and first["events"] > 500
    assert second == {}
    products = client.get("/catalog/products?q=mug&limit=50").json()["products"]
    assert products and all("mug" in p["title"].lower() for p in products)
    one = client.get(f"/catalog/products/{products[0]['sku']}").json()
    assert set(one["stock_by_location"]) == {
        "warehouse", "store-soho", "store-deansgate", "store-leith"}
    assert one["stock"] == sum(one["stock_by_location"].values())
    svg = client.get(products[0]["image"])
    assert svg.headers["content-type"].startswith("image/svg+xml")


def test_stock_put_needs_admin(client: TestClient, settings: Settings) -> None:
    """Only an admin sets stock; a bad quantity changes nothing."""
    async def seed() -> None:
        svc = client.app.state.services  # type: ignore[attr-defined]
        await seed_demo(svc.catalog, svc.members, svc.events, now=1e9, member_count=5)

    client.portal.call(seed)  # type: ignore[union-attr]
    ring = client.app.state.keyring  # type: ignore[attr-defined]
    host = {"authorization": "Bearer " + ring.issue("h", "host", ttl=60)}
    admin = {"authorization": "Bearer " + ring.issue("a", "admin", ttl=60)}
    assert client.put("/catalog/stock/1000", json={"location": "warehouse", "qty": 5},
                      headers=host).status_code == 403
    before = client.get("/catalog/products/1000").json()["stock_by_location"]
    for bad in ({"location": "warehouse", "qty": -1}, {"location": "moon", "qty": 1},
                {"location": "warehouse", "qty": "5"}, {"qty": 5}):
        assert client.put("/catalog/stock/1000", json=bad, headers=admin).status_code == 400
    assert client.get("/catalog/products/1000").json()["stock_by_location"] == before
    ok = client.put("/catalog/stock/1000", json={"location": "warehouse", "qty": 7},
                    headers=admin)
    assert ok.status_code == 200 and ok.json()["stock"]["warehouse"] == 7


def test_embedded_store_keeps_acknowledged_writes_across_a_kill(tmp_path: Path) -> None:
    """A write acknowledged by the embedded store survives SIGKILL of the server."""
    async def write(url: str) -> None:
        client = connect(url)
        await client.set("k", "v")
        await client.aclose()

    async def read(url: str) -> bytes | None:
        client = connect(url)
        value: bytes | None = await client.get("k")
        await client.aclose()
        return value

    store = EmbeddedValkey(tmp_path / "store")
    asyncio.run(write(store.start()))
    store.kill()
    again = EmbeddedValkey(tmp_path / "store")
    try:
        assert asyncio.run(read(again.start())) == b"v"
    finally:
        again.stop()


def test_second_process_joins_the_running_embedded_store(tmp_path: Path) -> None:
    """Two processes on one var/ share one embedded server; only the starter stops it."""
    first = EmbeddedValkey(tmp_path / "store")
    url = first.start()
    second = EmbeddedValkey(tmp_path / "store")
    try:
        assert second.start() == url and not second.owned and first.owned
        second.stop()
        assert asyncio.run(_ping(url))
    finally:
        first.stop()


async def _ping(url: str) -> bool:
    client = connect(url)
    try:
        return bool(await client.ping())
    finally:
        await client.aclose()


def test_services_start_embedded_store_when_no_url(tmp_path: Path) -> None:
    """With no REDIS_URL the service starts its own durable store under var/."""
    async def go() -> None:
        settings = Settings(var_dir=tmp_path / "var")
        async with open_services(settings) as svc:
            assert svc.embedded is not None
            await svc.redis.set("x", "1")
        assert (tmp_path / "var" / "store" / "appendonlydir").is_dir()

    asyncio.run(go())


def test_token_command_prints_a_verifiable_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """`newretail token` signs with the key ring kept under var/."""
    monkeypatch.setenv("NEWRETAIL_VAR_DIR", str(tmp_path))
    assert cli_main(["token", "--role", "screen", "--sub", "s1", "--store", "store-soho"]) == 0
    token = capsys.readouterr().out.strip()
    claims = KeyRing.load_or_create(tmp_path / "secrets" / "jwt-keys.json").verify(token)
    assert (claims.role, claims.sub, claims.store) == ("screen", "s1", "store-soho")


@pytest.mark.parametrize("workers", [1, 2])
def test_real_server_answers(store_url: str, tmp_path: Path, sync_redis: object,
                             workers: int) -> None:
    """`newretail serve` runs the app under uvicorn on a real port, in one process or in
    several sharing the port; a kept-alive connection is served again and again."""
    with run_server(store_url, tmp_path / "var", workers=workers) as server, \
            httpx.Client(base_url=server.url, timeout=10) as http:
        for _ in range(3):
            assert http.get("/readyz").json()["ready"] is True


async def test_the_socket_bound_for_several_workers_sends_without_delay() -> None:
    """Connections accepted on the socket bound for several workers have TCP_NODELAY, as
    with one worker: uvicorn's own socket left it off, so a kept-alive connection's every
    response after the first waited for the client's delayed ACK (about 44 ms)."""
    config = TcpConfig("live.web.app:create_app", factory=True, host="127.0.0.1", port=0,
                       workers=2)
    sock = config.bind_socket()
    assert sock.proto == socket.IPPROTO_TCP
    loop = asyncio.get_running_loop()
    nodelay: asyncio.Future[int] = loop.create_future()

    class Report(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted = transport.get_extra_info("socket")
            nodelay.set_result(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await loop.create_server(Report, sock=sock)
    try:
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        assert await asyncio.wait_for(nodelay, 10) != 0
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with unix:
        assert as_tcp(unix) is unix


async def test_shutdown_step_that_stalls_is_left_behind(caplog: pytest.LogCaptureFixture) -> None:
    """A shutdown step that never finishes, and even swallows its cancellation, does not
    hold the shutdown; a step that finishes runs to the end and its error is raised."""
    forever = asyncio.Event()
    cancelled = asyncio.Event()

    async def stalls() -> None:
        try:
            await forever.wait()
        except asyncio.CancelledError:
            cancelled.set()
            await forever.wait()  # as a library stuck on a lock would

    with caplog.at_level("WARNING", logger="newretail.live"):
        await bounded(stalls(), "stuck step", seconds=0.05)
    assert "stuck step did not finish" in caplog.text
    await asyncio.wait_for(cancelled.wait(), 5)
    forever.set()  # let the stuck step end with the test

    finished: list[str] = []

    async def quick() -> None:
        finished.append("yes")

    await bounded(quick(), "quick step")
    assert finished == ["yes"]

    async def fails() -> None:
        raise RuntimeError("close failed")

    with pytest.raises(RuntimeError, match="close failed"):
        await bounded(fails(), "failing step")
