"""The viewer page and the presenter console in Debian's Chromium, against a real server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser_support import (
    DroppingProxy,
    Site,
    chat_texts,
    json_of,
    new_context,
    screenshot,
    serve_site,
    sign_in,
    wait_until,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]
BUYER_PHONE = "07700 900200"
BUYER_E164 = "+447700900200"


@pytest.fixture(scope="module")
def site(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with serve_site(store_url, tmp_path_factory.mktemp("pages-live")) as served:
        yield served


def open_host(browser: Browser, site: Site, sid: str) -> Page:
    page = new_context(browser, 1400, 900).new_page()
    page.goto(site.host_url(sid))
    expect(page.locator("body")).to_have_attribute("data-connection", "live")
    expect(page.locator("#lineup li")).to_have_count(4)
    return page


def host_chat(host: Page, text: str) -> None:
    host.fill("#chat-input", text)
    host.press("#chat-input", "Enter")
    expect(host.locator("#chat-input")).to_have_value("")   # cleared on the ack
    expect(host.locator("#chat li", has_text=text)).to_have_count(1)


def test_viewer_sees_pin_buys_in_flash_sale_and_sees_the_order(
    chromium: Browser, site: Site, tmp_path: Path,
) -> None:
    """A guest sees the product pinned from the console, presses Buy now in the flash
    sale started from the console, signs in with phone and code, and sees the order; the
    console's figures, the stock bar and the member page agree."""
    sid = site.new_session("Kites and mugs, live")
    host = open_host(chromium, site, sid)
    viewer = new_context(chromium).new_page()
    viewer.goto(f"{site.url}/live/{sid}")
    expect(viewer.locator("body")).to_have_attribute("data-connection", "live")
    expect(viewer.locator("#poster")).to_contain_text("Kites and mugs, live")
    expect(viewer.locator("#who")).to_have_text("Watching as a guest")
    expect(viewer.locator("#offers .offer").first).to_be_visible()   # offers for a guest
    expect(viewer.locator("#offers-note")).to_have_text("Sign in for offers picked for you")

    host.locator("#lineup li[data-sku=kite] button", has_text="Pin").click()
    card = viewer.locator("#pinned .product-card[data-sku=kite]")
    expect(card).to_contain_text("Racing Kite")
    expect(card).to_contain_text("£19.99")
    expect(card.locator(".stock-left")).to_have_text("504 left")
    expect(card.locator("button", has_text="Add to cart")).to_be_enabled()
    expect(host.locator("#lineup li[data-sku=kite]")).to_contain_text("on screen")

    host.select_option("#flash-sku", "kite")
    host.fill("#flash-price", "4.50")
    host.fill("#flash-qty", "3")
    host.fill("#flash-seconds", "300")
    host.click("#flash-start")
    expect(host.locator("#flash-state")).to_contain_text("Running: Racing Kite at £4.50")
    banner = viewer.locator("#flash")
    expect(banner).to_be_visible()
    expect(viewer.locator("#flash-title")).to_have_text("Racing Kite")
    expect(viewer.locator("#flash-price")).to_have_text("£19.99£4.50")
    expect(viewer.locator("#flash-left")).to_have_text("3 of 3 left")
    expect(viewer.locator("#flash-countdown")).to_have_text(re.compile(r"^[45]:\d\d$"))
    expect(viewer.locator("#flash-bar")).to_have_attribute("style", re.compile(r"width: ?100%"))
    screenshot(viewer, "viewer-flash-sale")

    viewer.click("#flash-buy")
    # a guest's cart fills, and buying asks them to sign in
    expect(viewer.locator("#signin")).to_be_visible()
    expect(viewer.locator("#cart-count")).to_have_text("1")
    sign_in(viewer, site, BUYER_PHONE, BUYER_E164, "#signin")
    order = viewer.locator("#order")
    expect(order).to_contain_text("Order confirmed")
    expect(order).to_contain_text("1 × Racing Kite")
    expect(order).to_contain_text("£4.50")
    expect(viewer.locator("#who")).to_have_text("Signed in")
    expect(viewer.locator("#cart-count")).to_have_text("0")
    expect(viewer.locator("#flash-left")).to_have_text("2 of 3 left")
    expect(viewer.locator("#flash-bar")).to_have_attribute("style", re.compile(r"width: ?66\.6"))
    screenshot(viewer, "viewer-order")

    order_id = order.get_attribute("data-order-id")
    with site.http() as admin:
        saved = json_of(admin.get(f"/orders/{order_id}"))
    assert [(line["sku"], line["qty"], line["price"]) for line in saved["lines"]] == [
        ("kite", 1, {"amount": 450, "currency": "GBP"})]
    expect(host.locator("#f-orders")).to_have_text("1")
    expect(host.locator("#f-revenue")).to_have_text("£4.50")
    expect(host.locator("#stock li[data-sku=kite] b")).to_have_text("2")
    screenshot(host, "host-console")

    # the member page of the same phone lists the order
    me = viewer.context.new_page()
    me.goto(f"{site.url}/me")
    expect(me.locator(f"#orders li[data-order-id='{order_id}']")).to_contain_text("1 × Racing Kite")
    with site.http() as admin:
        buyer = json_of(admin.get("/identity/resolve",
                                  params={"kind": "phone", "value": BUYER_E164}))
    assert saved["member_id"] == buyer["member_id"]

    host.click("#flash-stop")
    expect(banner).to_be_hidden()
    host.context.close()
    viewer.context.close()


def test_dropped_viewer_misses_nothing(chromium: Browser, site: Site) -> None:
    """A viewer whose connection drops shows "reconnecting", retries with backoff, and
    on resume shows every chat line sent meanwhile, in order, and the current pin."""
    sid = site.new_session("Resume test")
    host = open_host(chromium, site, sid)
    proxy = DroppingProxy(site.server.port)
    viewer = new_context(chromium).new_page()
    try:
        viewer.goto(f"{proxy.url}/live/{sid}")
        expect(viewer.locator("body")).to_have_attribute("data-connection", "live")
        host_chat(host, "before the drop")
        expect(viewer.locator("#chat li", has_text="before the drop")).to_be_visible()

        proxy.cut()
        expect(viewer.locator("#status")).to_be_visible()
        expect(viewer.locator("#status")).to_have_text("Reconnecting…")
        expect(viewer.locator("body")).to_have_attribute("data-connection", "reconnecting")
        screenshot(viewer, "viewer-reconnecting")
        missed = ["while away 1", "while away 2", "while away 3"]
        host_chat(host, missed[0])
        host.locator("#lineup li[data-sku=mug] button", has_text="Pin").click()
        host_chat(host, missed[1])
        host.locator("#chat li", has_text="before the drop").locator(
            "button", has_text="Remove").click()
        host_chat(host, missed[2])
        # it keeps trying while the network is down
        assert wait_until(lambda: proxy.ws_attempts_while_down >= 2, viewer), \
            "the page did not retry while the network was down"
        expect(viewer.locator("#status")).to_be_visible()

        proxy.restore()
        # the next try comes within the page's longest backoff (10 s) after the restore
        expect(viewer.locator("body")).to_have_attribute("data-connection", "live",
                                                         timeout=30_000)
        expect(viewer.locator("body")).to_have_attribute("data-recovered", "true")
        expect(viewer.locator("#status")).to_be_hidden()
        expect(viewer.locator("#chat li")).to_have_count(len(missed))
        assert chat_texts(viewer) == missed
        expect(viewer.locator("#pinned .product-card[data-sku=mug]")).to_contain_text(
            "Enamel Mug")
    finally:
        proxy.close()
        host.context.close()
        viewer.context.close()
