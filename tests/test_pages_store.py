"""The member phone page and the store screen in Debian's Chromium, against a real server;
and every page free of console errors, as a guest and as a member."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser_support import (
    MEMBER_ID,
    MEMBER_PHONE,
    SCREEN_CLEAR_SECONDS,
    STORE,
    ConsoleWatch,
    Site,
    digits,
    in_stock_at,
    json_of,
    new_context,
    screenshot,
    serve_site,
    sign_in,
    token,
    visible_text,
    wait_until,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def site(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with serve_site(store_url, tmp_path_factory.mktemp("pages-store")) as served:
        yield served


def qr_drawn(page: Page) -> bool:
    # page.evaluate, not wait_for_function: the pages' CSP forbids the eval it polls with
    return bool(page.evaluate("document.getElementById('qr').naturalWidth > 100"))


def offer_skus(page: Page) -> set[str]:
    return {str(s) for s in page.locator("#offers .offer").evaluate_all(
        "cards => cards.map(c => c.dataset.sku)")}


def test_member_code_checks_in_at_the_store_screen(chromium: Browser, site: Site) -> None:
    """A member signs in on /me and sees the rotating code (digits, QR, countdown); typed
    or scanned at the store screen it shows their greeting and offers in stock in that
    store, never their phone or id, and the screen clears itself back to idle."""
    screen = new_context(chromium, 1920, 1080).new_page()
    screen.goto(site.screen_url())
    expect(screen.locator("body")).to_have_attribute("data-connection", "live")
    expect(screen.locator("#headline")).to_have_text("Trending in this store")
    expect(screen.locator("#prompt")).to_contain_text("Show the member code on your phone")
    expect(screen.locator("#offers .offer").first).to_be_visible()
    assert offer_skus(screen) <= in_stock_at(STORE)
    screenshot(screen, "screen-idle")

    phone = new_context(chromium, 390, 844).new_page()
    phone.goto(f"{site.url}/me")
    expect(phone.locator("#signin")).to_be_visible()
    sign_in(phone, site, "07700 900123", MEMBER_PHONE)
    expect(phone.locator("#hello")).to_have_text("Hi Ada · Member")
    code = phone.locator("#code")
    expect(code).to_have_attribute("data-code", re.compile(r"^NR[0-9a-f]{10}\d{6}$"))
    expect(code).to_have_text(re.compile(r"^NR [0-9a-f]{5} [0-9a-f]{5} \d{6}$"))
    expect(phone.locator("#changes-in")).to_have_text(re.compile(r"^Changes in \d+ s\.$"))
    assert wait_until(lambda: qr_drawn(phone), phone), "the QR code was not drawn"
    expect(phone.locator("#c-personalization")).to_be_checked()
    expect(phone.locator("#orders")).to_contain_text("No orders yet.")
    screenshot(phone, "me-member-code")

    # a scanner types the code and Enter, as a keyboard does (the page groups it)
    shown_code = code.inner_text()
    screen.fill("#code", shown_code)
    screen.press("#code", "Enter")
    expect(screen.locator("#headline")).to_have_text("Welcome, Ada!")
    expect(screen.locator("#prompt")).to_have_text("Picked for you, in stock in this store today:")
    expect(screen.locator("#offers .offer").first).to_be_visible()
    shown = offer_skus(screen)
    assert shown and shown <= in_stock_at(STORE), shown
    screenshot(screen, "screen-member")
    page_source = screen.content() + visible_text(screen)
    for secret in (MEMBER_ID, "Lovelace", digits(MEMBER_PHONE), digits(MEMBER_PHONE)[-6:]):
        assert secret not in page_source, f"{secret} shown on the store screen"

    # back to idle after NEWRETAIL_SCREEN_CLEAR seconds (a minute by default)
    expect(screen.locator("#headline")).to_have_text(
        "Trending in this store", timeout=(SCREEN_CLEAR_SECONDS + 12) * 1000)
    expect(screen.locator("#checkin")).to_be_visible()
    # a code checks in once (the phone has moved on to a new one by now or soon)
    screen.fill("#code", shown_code.replace(" ", ""))
    screen.press("#code", "Enter")
    expect(screen.locator("#checkin-error")).to_contain_text("That code did not work")
    screen.context.close()

    # consent switches are saved on the server
    phone.locator("#c-marketing").check()
    member_token = phone.evaluate("JSON.parse(localStorage['nr.member']).token")
    with site.http() as http:
        def marketing_saved() -> bool:
            me = json_of(http.get("/identity/me",
                                  headers={"authorization": f"Bearer {member_token}"}))
            return me["consent"]["marketing"]["given"] is True
        assert wait_until(marketing_saved, phone), "the marketing switch was not saved"
    expect(phone.locator("#consent-error")).to_have_text("")

    # erase my data: signed out, and the phone no longer finds a member
    phone.once("dialog", lambda dialog: dialog.accept())
    phone.click("#erase")
    expect(phone.locator("#signin-error")).to_have_text("Your data was erased.")
    with site.http() as admin:
        found = json_of(admin.get("/identity/resolve",
                                  params={"kind": "phone", "value": MEMBER_PHONE}))
    assert found["member_id"] is None
    phone.context.close()


def test_pages_have_no_console_errors(chromium: Browser, site: Site) -> None:
    """All four pages load and run without a console error or page error: the viewer
    as a guest and as a member, the console, the screen, and /me signed out and in."""
    sid = site.new_session("Console check")
    watch = ConsoleWatch()
    context = new_context(chromium)
    try:
        me = watch.watch(context.new_page(), "me (guest)")
        me.goto(f"{site.url}/me")
        expect(me.locator("#signin")).to_be_visible()
        guest = watch.watch(context.new_page(), "viewer (guest)")
        guest.goto(f"{site.url}/live/{sid}")
        expect(guest.locator("body")).to_have_attribute("data-connection", "live")
        expect(guest.locator("#offers .offer").first).to_be_visible()
        host = watch.watch(context.new_page(), "host")
        host.goto(site.host_url(sid))
        expect(host.locator("body")).to_have_attribute("data-connection", "live")
        host.locator("#lineup li[data-sku=mug] button", has_text="Pin").click()
        expect(guest.locator("#pinned .product-card[data-sku=mug]")).to_be_visible()
        guest.click("#react-buttons [data-kind=fire]")
        expect(host.locator("#f-rpm")).to_have_text("1")
        guest.fill("#chat-input", "hello")
        guest.press("#chat-input", "Enter")          # guests are asked to sign in to chat
        expect(guest.locator("#signin-title")).to_have_text("Sign in to chat")
        guest.click("#signin-cancel")
        host.fill("#q", "soap")
        host.press("#q", "Enter")
        expect(host.locator("#results li[data-sku=soap]")).to_contain_text("Rose Soap")
        screen = watch.watch(context.new_page(), "screen")
        screen.goto(site.screen_url("screen-a2"))
        expect(screen.locator("#offers .offer").first).to_be_visible()

        sign_in(me, site, "07700 900321", "+447700900321")
        expect(me.locator("#code")).to_have_attribute("data-code", re.compile("^NR"))
        assert wait_until(lambda: qr_drawn(me), me), "the QR code was not drawn"
        member = watch.watch(context.new_page(), "viewer (member)")
        member.goto(f"{site.url}/live/{sid}")
        expect(member.locator("#who")).to_have_text("Signed in")
        expect(member.locator("#offers .offer").first).to_be_visible()
        # "For you" is fetched again as the viewer interacts
        with member.expect_response(lambda r: "/offers?member_id=" in r.url) as fetched:
            member.locator("#pinned .product-card[data-sku=mug] button",
                           has_text="Add to cart").click()
        assert fetched.value.ok
        expect(member.locator("#cart-count")).to_have_text("1")
        member.fill("#chat-input", "<b>not bold</b>")
        member.press("#chat-input", "Enter")
        for page in (host, member, guest):          # chat is text, never markup
            line = page.locator("#chat li", has_text="<b>not bold</b>")
            expect(line).to_be_visible()
            expect(line.locator("b", has_text="not bold")).to_have_count(0)
        # moderation: a muted member is told so; ending the session reaches every viewer
        host.locator("#chat li", has_text="<b>not bold</b>").locator(
            "button", has_text="Mute").click()
        expect(host.locator("#chat li button", has_text="Muted")).to_be_disabled()
        member.fill("#chat-input", "still here?")
        member.press("#chat-input", "Enter")
        expect(member.locator("#chat-error")).to_have_text("The host has muted you in this live.")
        screenshot(host, "host-console-check")
        host.once("dialog", lambda dialog: dialog.accept())
        host.click("#end")
        for page in (guest, member, host):
            expect(page.locator("#live-badge")).to_have_text("ENDED")
        expect(guest.locator("#pinned button", has_text="Buy now")).to_be_disabled()
        assert watch.problems == []
    finally:
        context.close()


def test_expiring_sign_in_is_refreshed_by_the_pages(chromium: Browser, site: Site) -> None:
    """An access token about to run out is swapped through the refresh token (rotated)
    before /me and the viewer page use it, so the member stays signed in."""
    phone = "+447700900456"
    with site.http() as http:
        assert http.post("/identity/otp/request", json={"phone": phone}).status_code == 202
        signed = json_of(http.post("/identity/otp/verify", json={
            "phone": phone, "code": site.sign_in_code(phone), "device_id": "d_refresh"}))
    short = token(signed["member_id"], "member", ttl=20, dev=signed["device_index"])
    stored = {"member_id": signed["member_id"], "token": short,
              "refresh_token": signed["refresh_token"]}
    context = new_context(chromium, 390, 844)
    try:
        page = context.new_page()
        page.goto(f"{site.url}/favicon.ico")
        page.evaluate("value => localStorage.setItem('nr.member', value)",
                      json.dumps(stored))
        page.goto(f"{site.url}/me")
        expect(page.locator("#hello")).to_have_text("Hi there · Member")
        expect(page.locator("#code")).to_have_attribute("data-code", re.compile("^NR"))
        now = json.loads(page.evaluate("localStorage.getItem('nr.member')"))
        assert now["token"] != short and now["refresh_token"] != signed["refresh_token"]
        sid = site.new_session("Refresh check")
        page.goto(f"{site.url}/live/{sid}")
        expect(page.locator("#who")).to_have_text("Signed in")
    finally:
        context.close()
