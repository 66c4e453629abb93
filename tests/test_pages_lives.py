"""Issue #27 in Debian's Chromium, against a real server, at 390 × 844 and 1440 × 900: the
home of lives, the phone-first viewer, clear states (ended, unknown), the store screen's
queue, and axe-core on every page."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.a11y_support import assert_accessible
from tests.browser_support import (
    HOST,
    MEMBER_PHONE,
    Site,
    json_of,
    new_context,
    screenshot,
    serve_site,
    sign_in,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PHONE = (390, 844)
DESKTOP = (1440, 900)
SIZES = {"phone": PHONE, "desktop": DESKTOP}


@pytest.fixture(scope="module")
def site(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    # A greeting stays a minute, as in a store: a second scan must not wait for it.
    with serve_site(store_url, tmp_path_factory.mktemp("pages-lives"),
                    env={"NEWRETAIL_SCREEN_CLEAR": "60"}) as served:
        yield served


def host_http(site: Site) -> httpx.Client:
    return site.http("host", HOST)


def end_session(chromium: Browser, site: Site, sid: str) -> None:
    """The host ends a session with the console's End session button."""
    host = new_context(chromium, *DESKTOP).new_page()
    host.goto(site.host_url(sid))
    expect(host.locator("body")).to_have_attribute("data-connection", "live")
    host.once("dialog", lambda d: d.accept())
    host.click("#end")
    expect(host.locator("#live-badge")).to_have_text("ENDED")
    host.context.close()


def in_first_screen(page: Page, selector: str) -> bool:
    box = page.locator(selector).first.bounding_box()
    height = page.viewport_size["height"] if page.viewport_size else 0
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= height


def test_home_lists_live_scheduled_and_replay(chromium: Browser, site: Site) -> None:
    """``/`` lists a live with its viewers, a scheduled live with its teaser and a remind
    me button, and a replay, each with a share link; at both sizes, without serious
    accessibility violations."""
    with host_http(site) as http:
        live = json_of(http.post("/live/sessions", json={
            "title": "Kites on air", "products": ["kite"]}))["session_id"]
        later = json_of(http.post("/live/sessions", json={
            "title": "Teapots on Sunday", "products": ["pot"], "starts_at": time.time() + 7200,
            "teaser": "Copper, enamel and a story"}))["session_id"]
        gone = json_of(http.post("/live/sessions", json={
            "title": "Scarves, last week", "products": ["scarf"]}))["session_id"]
    end_session(chromium, site, gone)
    for name, (w, h) in SIZES.items():
        page = new_context(chromium, w, h).new_page()
        page.goto(site.url + "/")
        expect(page.locator(f"#now .live-card[data-session={live}]")).to_contain_text(
            "Kites on air")
        expect(page.locator(f"#now .live-card[data-session={live}]")).to_contain_text(
            "watching")
        card = page.locator(f"#later .live-card[data-session={later}]")
        expect(card).to_contain_text("Copper, enamel and a story")
        expect(card.locator("button.remind")).to_be_visible()
        replay = page.locator(f"#replays .live-card[data-session={gone}]")
        expect(replay.locator("a", has_text="Watch the replay")).to_have_attribute(
            "href", f"/live/{gone}")
        for box in (card, replay):
            expect(box.locator("button.share")).to_be_visible()
        screenshot(page, f"home-{name}")
        assert_accessible(page, f"home at {name}")
        page.context.close()


def test_remind_me_texts_the_member_when_the_live_starts(chromium: Browser, site: Site) -> None:
    """A guest presses remind me, signs in with phone and code, and when the host starts
    the live from the console a text with its link goes to their phone (the dev outbox)."""
    with host_http(site) as http:
        sid = json_of(http.post("/live/sessions", json={
            "title": "Mugs at noon", "products": ["mug"], "starts_at": time.time() + 3600,
            "teaser": "Enamel mugs"}))["session_id"]
    page = new_context(chromium, *PHONE).new_page()
    page.goto(site.url + "/")
    page.locator(f"#later .live-card[data-session={sid}] button.remind").click()
    expect(page.locator("#signin")).to_be_visible()
    sign_in(page, site, "07700 900321", "+447700900321", "#signin")
    expect(page.locator(f"#later .live-card[data-session={sid}] button.remind")).to_have_text(
        "Reminder set")
    expect(page.locator("#home-status")).to_have_attribute("data-tone", "ok")

    host = new_context(chromium, 1024, 768).new_page()   # a tablet
    host.goto(site.host_url(sid))
    expect(host.locator("#live-badge")).to_have_text("SCHEDULED")
    host.click("#start")
    expect(host.locator("#live-badge")).to_have_text("LIVE")
    screenshot(host, "host-tablet-started")
    with site.http() as admin:
        texts = [m["text"] for m in admin.get("/identity/dev/outbox").json()["messages"]
                 if m["phone"] == "+447700900321"]
    assert any(f"/live/{sid}" in t and "Mugs at noon" in t for t in texts), texts
    page.context.close()
    host.context.close()


def test_phone_viewer_first_screen_and_variantless_buy(chromium: Browser, site: Site) -> None:
    """At 390 × 844 the video, the chat input and the pinned product's buy button are all in
    the first screen; at 1440 × 900 the columns stay; both pass axe-core."""
    sid = site.new_session("Phone first")
    host = new_context(chromium, *DESKTOP).new_page()
    host.goto(site.host_url(sid))
    expect(host.locator("body")).to_have_attribute("data-connection", "live")
    host.locator("#lineup li[data-sku=kite] button", has_text="Pin").click()
    for name, (w, h) in SIZES.items():
        page = new_context(chromium, w, h).new_page()
        page.goto(f"{site.url}/live/{sid}")
        expect(page.locator("body")).to_have_attribute("data-connection", "live")
        expect(page.locator("#pinned .product-card[data-sku=kite] button.buy")).to_be_visible()
        if name == "phone":
            for selector in ("#stage", "#chat-input",
                             "#pinned .product-card[data-sku=kite] button.buy", "#cart-open"):
                assert in_first_screen(page, selector), f"{selector} is not in the first screen"
        screenshot(page, f"viewer-{name}")
        assert_accessible(page, f"viewer at {name}")
        page.context.close()
    screenshot(host, "host-desktop")
    assert_accessible(host, "host console at desktop")
    host.context.close()


def test_ended_live_says_so_and_the_console_turns_read_only(
    chromium: Browser, site: Site,
) -> None:
    """After End session the viewer shows ENDED (not LIVE NOW) and the replay link, the
    console's pin, flash sale and chat are disabled, and the home lists it as a replay."""
    sid = site.new_session("Ending soon")
    host = new_context(chromium, *DESKTOP).new_page()
    host.goto(site.host_url(sid))
    expect(host.locator("body")).to_have_attribute("data-connection", "live")
    viewer = new_context(chromium, *PHONE).new_page()
    viewer.goto(f"{site.url}/live/{sid}")
    expect(viewer.locator("body")).to_have_attribute("data-connection", "live")
    host.once("dialog", lambda d: d.accept())
    host.click("#end")
    expect(viewer.locator("#live-badge")).to_have_text("ENDED")
    expect(viewer.locator("#ended-banner")).to_be_visible()
    expect(viewer.locator("#replay-link")).to_have_text("Watch the replay")
    expect(viewer.locator("#poster-live")).not_to_contain_text("LIVE NOW")
    expect(viewer.locator("#chat-input")).to_be_disabled()
    expect(host.locator("#state-note")).to_contain_text("read-only")
    expect(host.locator("#flash-start")).to_be_disabled()
    expect(host.locator("#chat-input")).to_be_disabled()
    for button in host.locator("#lineup button").all():
        expect(button).to_be_disabled()
    screenshot(viewer, "viewer-ended-phone")
    assert_accessible(viewer, "ended viewer at phone")
    # a new visitor sees the ended state from the welcome
    again = new_context(chromium, *DESKTOP).new_page()
    again.goto(f"{site.url}/live/{sid}")
    expect(again.locator("#ended-banner")).to_be_visible()
    expect(again.locator("#live-badge")).to_have_text("ENDED")
    screenshot(again, "viewer-ended-desktop")
    for page in (host, viewer, again):
        page.context.close()


def test_unknown_live_is_a_404_page(chromium: Browser, site: Site) -> None:
    """An unknown session id answers 404 with a page saying so, linking home."""
    r = httpx.get(f"{site.url}/live/s000000000000", timeout=10)
    assert r.status_code == 404 and "text/html" in r.headers["content-type"]
    assert httpx.get(f"{site.url}/host/s000000000000", timeout=10).status_code == 404
    for name, (w, h) in SIZES.items():
        page = new_context(chromium, w, h).new_page()
        page.goto(f"{site.url}/live/s000000000000")
        expect(page.locator("h1")).to_have_text("This live does not exist")
        expect(page.locator("a[href='/']").first).to_be_visible()
        screenshot(page, f"notfound-{name}")
        assert_accessible(page, f"404 at {name}")
        page.context.close()


def test_member_and_screen_pages_pass_axe(chromium: Browser, site: Site) -> None:
    """The member page (signed out) and the store screen pass axe-core at both sizes."""
    for name, (w, h) in SIZES.items():
        page = new_context(chromium, w, h).new_page()
        page.goto(f"{site.url}/me")
        expect(page.locator("#signin")).to_be_visible()
        screenshot(page, f"me-{name}")
        assert_accessible(page, f"/me at {name}")
        page.goto(site.screen_url())
        expect(page.locator("body")).to_have_attribute("data-connection", "live")
        screenshot(page, f"screen-{name}")
        assert_accessible(page, f"screen at {name}")
        page.context.close()


def member_code(site: Site, member_token: str) -> str:
    r = httpx.get(f"{site.url}/identity/member-code", timeout=10,
                  headers={"authorization": f"Bearer {member_token}"})
    code: str = json_of(r)["code"]
    return code


def test_store_screen_greets_the_next_member_at_once(chromium: Browser, site: Site) -> None:
    """Two members scan within five seconds while greetings stay a minute: the second is
    greeted at once (a member with no name by a plain welcome), not after the first's
    greeting clears."""
    def signed_in(phone: str) -> str:
        with httpx.Client(base_url=site.url, timeout=10) as http:
            http.post("/identity/otp/request", json={"phone": phone}).raise_for_status()
            signed: str = json_of(http.post("/identity/otp/verify", json={
                "phone": phone, "code": site.sign_in_code(phone),
                "device_id": f"queue-{phone}"}))["token"]
            return signed

    ada = signed_in(MEMBER_PHONE)
    second = {"token": signed_in("+447700900777")}
    screen = new_context(chromium, 1920, 1080).new_page()
    screen.goto(site.screen_url())
    expect(screen.locator("body")).to_have_attribute("data-connection", "live")
    screen.fill("#code", member_code(site, ada))
    screen.press("#code", "Enter")
    expect(screen.locator("#headline")).to_have_text("Welcome, Ada!")
    started = time.monotonic()
    screen.fill("#code", member_code(site, second["token"]))
    screen.press("#code", "Enter")
    expect(screen.locator("#headline")).to_have_text("Welcome!")
    # greeted while Ada's minute-long greeting would still be up
    assert time.monotonic() - started < 60
    screenshot(screen, "screen-queue-second")
    screen.context.close()
