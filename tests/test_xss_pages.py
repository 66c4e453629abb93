"""Chat is text, never HTML, on every page that shows it: the viewer page and the
presenter console, in real Chromium, for chat already in the session when the page
loads (the welcome's snapshot) and chat arriving live, sent from another client and
typed into the console itself."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from websockets.sync.client import connect

from tests.access_support import SERVER_ENV, auth, seed_world, sign_in, token
from tests.utils import ServerProcess, run_server

pytestmark = pytest.mark.browser

HOSTILE = [
    '<img src=x onerror="window.__xss=1;alert(1)">',
    "<script>window.__xss=2;alert(2)</script>",
    '"><svg onload="window.__xss=3">',
    "<a href=\"javascript:window.__xss=4\">click</a><b>bold</b>",
    "&lt;i&gt;entity&lt;/i&gt; & <style>body{display:none}</style>",
]


@pytest.fixture(scope="module")
def live(store_url: str, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[ServerProcess, str, str]]:
    seed_world(store_url)
    with run_server(store_url, tmp_path_factory.mktemp("xss"), env=SERVER_ENV) as srv:
        member = sign_in(srv.url, "+447700900601", "xss-phone")
        r = httpx.post(f"{srv.url}/live/sessions", headers=auth(token("host-1", "host")),
                       json={"title": "XSS", "products": ["mug", "kite"]}, timeout=10)
        yield srv, r.json()["session_id"], member["token"]


def post_chat(srv: ServerProcess, sid: str, tok: str, texts: list[str]) -> None:
    """Chat from a real WebSocket client; each message acked."""
    with connect(f"{srv.ws_url}/ws/live/{sid}", open_timeout=10, ping_interval=None) as ws:
        ws.send(orjson.dumps({"op": "hello", "token": tok}).decode())
        for i, text in enumerate(texts):
            ws.send(orjson.dumps({"op": "chat", "text": text, "ref": f"x{i}"}).decode())
        acked: set[str] = set()
        deadline = time.monotonic() + 10
        while len(acked) < len(texts):
            left = max(0.01, deadline - time.monotonic())
            msg: dict[str, Any] = orjson.loads(ws.recv(timeout=left))
            assert msg.get("type") != "error", msg
            if msg.get("type") == "ack":
                acked.add(msg["ref"])


def chat_state(page: Any) -> dict[str, Any]:
    return page.evaluate("""() => {
      const chat = document.getElementById('chat');
      return {
        texts: [...chat.querySelectorAll('li')].map(li => li.textContent),
        elements: [...chat.querySelectorAll('li *')].map(n => n.tagName.toLowerCase()),
        xss: window.__xss === undefined ? null : window.__xss,
        hidden: getComputedStyle(document.body).display === 'none',
      };
    }""")


def assert_literal(page: Any, texts: list[str]) -> None:
    """Every hostile text shows as its own characters; the list holds no element but
    the sender's name (``b``) and the host's remove button; nothing ran."""
    deadline = time.monotonic() + 15
    while True:
        state = chat_state(page)
        shown = "\n".join(state["texts"])
        if all(t in shown for t in texts) or time.monotonic() > deadline:
            break
        page.wait_for_timeout(100)
    for t in texts:
        assert t in shown, (t, state["texts"])
    assert set(state["elements"]) <= {"b", "button"}, state["elements"]
    assert state["xss"] is None and not state["hidden"], state


def test_chat_is_text_on_the_viewer_page_and_console(
    chromium: Any, live: tuple[ServerProcess, str, str]
) -> None:
    """Hostile chat, from before the page loaded and while it is open, appears as
    literal text on ``/live/{id}`` and ``/host/{id}``; no script runs, no dialog opens."""
    srv, sid, member_token = live
    before, during = HOSTILE[:3], HOSTILE[3:]
    post_chat(srv, sid, member_token, before)
    context = chromium.new_context()
    dialogs: list[str] = []
    try:
        viewer = context.new_page()
        host = context.new_page()
        for page in (viewer, host):
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        viewer.goto(f"{srv.url}/live/{sid}")
        host.goto(f"{srv.url}/host/{sid}?token={token('host-1', 'host')}")
        for page in (viewer, host):
            assert_literal(page, before)
        post_chat(srv, sid, member_token, during)
        typed = '<img src=y onerror="window.__xss=5">typed'
        host.fill("#chat-input", typed)
        host.press("#chat-input", "Enter")
        for page in (viewer, host):
            assert_literal(page, [*before, *during, typed])
        assert dialogs == []
    finally:
        context.close()
