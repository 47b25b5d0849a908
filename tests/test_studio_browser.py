"""The studio in Debian's Chromium (Playwright with the system browser): `lifecycle studio` follows
an edit of a template into the open preview without a reload; `lifecycle serve` asks for a key at
/studio and opens the dashboard after the login; every page fits a phone. Screenshots of each page
at desktop and phone width go to test-artifacts/."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import customer
from test_web_browser import CHROMIUM, artifacts, browser, free_port, iso, lifecycle_serve  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
API_KEY = "studio-browser-key"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
OFFER = """
type: marketing
topic: offers
trigger: {event: ping}
audience: [{event: purchase, at_least: 1}]
steps:
  - variants:
      - {name: a, template: plain, subject: "Offer A"}
      - {name: b, template: plain, subject: {en: "Offer B", ar: "العرض ب"}}
  - {template: plain, subject: "Reminder", delay: 2d}
goal: {event: purchase, within: 7d}
holdout: 10%
"""
NEWS = """
type: marketing
topic: news
trigger: {event: ping}
steps: [{template: plain, subject: News}]
"""
ARABIC = "{% extends '_layout.mjml' %}{% block content %}مرحبا {{ customer.first_name }}{% endblock %}"


@pytest.fixture
def shop(project, monkeypatch):
    """Two campaigns with sends, an English and an Arabic customer, and the API key of the service."""
    monkeypatch.setenv("LIFECYCLE_API_KEYS", API_KEY)
    project.campaign("offer", OFFER)
    project.campaign("news", NEWS)
    (project.root / "templates" / "emails" / "plain.ar.mjml").write_text(ARABIC, encoding="utf-8")
    project.customers(customer("ann"), customer("sara", locale="ar"))
    now = datetime.now(UTC)
    project.events(
        {"customer": "ann", "event": "purchase", "at": iso(now - timedelta(days=3))},
        *({"customer": n, "event": "ping", "at": iso(now - timedelta(hours=2))} for n in ("ann", "sara")),
    )
    project.tick(iso(now - timedelta(hours=1)))
    return project


@contextmanager
def lifecycle_studio(project, port: int) -> Iterator[str]:
    """`lifecycle studio` of the project as a real process on 127.0.0.1:port, for the block."""
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "engine", "studio", "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--config", str(project.root / "config.yaml")],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if server.poll() is not None:
                raise AssertionError(f"lifecycle studio exited: {server.stderr.read().decode()}")
            try:
                with urllib.request.urlopen(f"{url}/studio/", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


FRAMES_LOADED = "[...document.querySelectorAll('iframe')].every(f => f.contentDocument?.readyState === 'complete')"


def fits(page) -> bool:
    """Nothing wider than the viewport: no sideways scrolling of the page itself."""
    return page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]


def shoot(browser, url: str, name: str, artifacts, cookies=()) -> None:  # noqa: F811 (fixtures)
    """Screenshots at desktop and phone width; the phone's must not scroll sideways."""
    for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        context = browser.new_context(viewport=viewport)
        context.add_cookies(list(cookies))
        page = context.new_page()
        page.goto(url)
        page.wait_for_function(FRAMES_LOADED)
        page.screenshot(path=artifacts / f"studio-{name}-{label}.png", full_page=True)
        if label == "phone":
            assert fits(page), f"{name} is wider than a phone"
        context.close()


def test_an_edited_template_shows_in_the_open_preview_without_a_reload(shop, browser, artifacts):  # noqa: F811
    with lifecycle_studio(shop, free_port()) as url:
        page = browser.new_page(viewport=DESKTOP)
        page.goto(f"{url}/studio/preview?campaign=news&customer=ann")
        phone = page.frame_locator("iframe[title='phone preview']")
        phone.get_by_text("Hello Ann, step 1.").wait_for()
        page.evaluate("window.stillTheSamePage = true")
        shop.template("plain", "Fresh words for {{ customer.first_name }}.")
        phone.get_by_text("Fresh words for Ann.").wait_for(timeout=5000)
        page.frame_locator("iframe[title='desktop preview']").get_by_text("Fresh words for Ann.").wait_for()
        assert page.evaluate("window.stillTheSamePage") is True  # swapped in place, never navigated
        # a broken template: the problem with its file and line, in place, and the page goes on
        shop.template("plain", "{{ customer.first_name ")
        page.get_by_text("This email does not render").wait_for(timeout=5000)
        assert "plain.mjml:" in page.locator(".problem-list").inner_text()
        shop.template("plain", "Mended, {{ customer.first_name }}.")
        phone.get_by_text("Mended, Ann.").wait_for(timeout=5000)
        assert page.evaluate("window.stillTheSamePage") is True
        page.close()
        for name, path in (
            ("campaigns", "/studio/"),
            ("campaign", "/studio/campaigns/offer"),
            ("preview", "/studio/preview?campaign=offer&variant=b&customer=ann"),
            ("preview-ar", "/studio/preview?campaign=offer&variant=b&locale=ar"),
        ):
            shoot(browser, url + path, name, artifacts)


def test_the_arabic_preview_reads_right_to_left(shop, browser):  # noqa: F811
    with lifecycle_studio(shop, free_port()) as url:
        page = browser.new_page(viewport=DESKTOP)
        page.goto(f"{url}/studio/preview?campaign=offer&variant=b&customer=sara")
        assert page.locator(".envelope").get_attribute("dir") == "rtl"
        assert page.locator("[data-field=subject]").inner_text() == "العرض ب"
        frame = page.frame_locator("iframe[title='phone preview']")
        assert frame.locator("html").get_attribute("dir") == "rtl"
        frame.get_by_text("مرحبا Sara").wait_for()
        page.close()


def test_log_in_at_studio_then_the_dashboard(shop, browser, artifacts):  # noqa: F811
    port = free_port()
    shop.config(
        public_url=f"http://127.0.0.1:{port}", topics={"news": {"title": "News"}, "offers": {"title": "Offers"}}
    )
    with lifecycle_serve(shop, port) as url:
        context = browser.new_context(viewport=DESKTOP)
        page = context.new_page()
        page.goto(f"{url}/studio/")
        assert page.url.startswith(f"{url}/studio/login")
        page.screenshot(path=artifacts / "studio-login-desktop.png")
        page.get_by_label("API key").fill("not the key")
        page.get_by_role("button", name="Log in").click()
        page.get_by_text("That is not one of the API keys.").wait_for()
        assert "Campaigns" not in page.locator("h1").inner_text()
        page.get_by_label("API key").fill(API_KEY)
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("heading", name="Campaigns").wait_for()
        assert page.url == f"{url}/studio/"
        cookie = next(c for c in context.cookies() if c["name"] == "lifecycle_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"

        page.get_by_role("link", name="Dashboard").click()
        page.wait_for_function("document.querySelectorAll('.plotly-graph-div .main-svg').length >= 4")
        response = page.goto(f"{url}/dashboard")
        assert response.status == 200 and len(response.body()) < 1_000_000
        page.wait_for_function("document.querySelectorAll('.plotly-graph-div .main-svg').length >= 4")
        assert page.locator('#funnel tr[data-campaign="offer"]').count() == 1
        variants = page.locator('#campaigns tr.step[data-campaign="offer"][data-step="1"]').evaluate_all(
            "rows => rows.map(r => r.dataset.variant)"
        )
        assert variants and set(variants) <= {"a", "b"}  # a row a variant, each with its conversions
        page.screenshot(path=artifacts / "dashboard-desktop.png", full_page=True)

        phone = browser.new_context(viewport=PHONE, is_mobile=True)
        phone.add_cookies([cookie])
        small = phone.new_page()
        small.goto(f"{url}/dashboard")
        small.wait_for_function("document.querySelectorAll('.plotly-graph-div .main-svg').length >= 4")
        assert fits(small), "the dashboard is wider than a phone"
        small.screenshot(path=artifacts / "dashboard-phone.png", full_page=True)
        phone.close()
        shoot(browser, f"{url}/studio/campaigns/news", "campaign-served", artifacts, cookies=[cookie])
        context.close()
