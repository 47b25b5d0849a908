"""The customer's path in a real headless Chromium (Debian's, driven by Playwright) against
`lifecycle serve` running as a process on a loopback port: from the link in a rendered email
to the preference centre and back to the scheduler's next tick. JavaScript is off, and the
viewport is a phone's. Screenshots go to test-artifacts/."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import REPO, customer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
PHONE = {"width": 390, "height": 844}

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
playwright = pytest.importorskip("playwright.sync_api")

CAMPAIGN = """
type: marketing
topic: {topic}
trigger: {{event: ping}}
steps: [{{template: plain, subject: "{topic}"}}]
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def wait_until_up(url: str, server: subprocess.Popen, within: float = 30.0) -> None:
    """Polls /healthz until the server answers; fails early if the process died."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"lifecycle serve exited: {server.stderr.read().decode()}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("lifecycle serve did not come up")


@contextmanager
def lifecycle_serve(project, port: int) -> Iterator[str]:
    """`lifecycle serve` of the project as a real process on 127.0.0.1:port, for the block."""
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "engine", "serve", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--config", str(project.root / "config.yaml")],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until_up(url, server)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def served(project):
    """The project with two topics' campaigns, an English and an Arabic customer who have each had
    one email, and `lifecycle serve` running on its public URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    project.config(
        public_url=url,
        topics={
            "news": {"title": {"en": "News", "ar": "الأخبار"}},
            "offers": {"title": {"en": "Offers", "ar": "العروض"}},
        },
    )
    for topic in ("news", "offers"):
        project.campaign(topic, CAMPAIGN.format(topic=topic))
    project.customers(customer("ann"), customer("sara", locale="ar"))
    now = datetime.now(UTC)
    project.events(*({"customer": n, "event": "ping", "at": iso(now - timedelta(hours=2))} for n in ("ann", "sara")))
    project.tick(iso(now - timedelta(hours=1)))
    with lifecycle_serve(project, port):
        yield project


@pytest.fixture
def browser():
    with playwright.sync_playwright() as driver:
        chromium = driver.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
            ],
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def email_to(project, address: str, topic: str):
    return next(m for m in project.outbox() if m["To"].addresses[0].addr_spec == address and m["Subject"] == topic)


def preferences_link(message) -> str:
    html = message.get_body(("html",)).get_content()
    return re.search(r'href="([^"]+/preferences/[^"]+)"', html).group(1)


def next_tick_after_the_change(project, *names: str) -> None:
    """Another ping for each customer, then a tick with a `now` after the change."""
    now = datetime.now(UTC)
    project.events(*({"customer": n, "event": "ping", "at": iso(now)} for n in names))
    project.tick(iso(now + timedelta(hours=1)))


def open_phone_page(browser, url: str):
    page = browser.new_context(viewport=PHONE, java_script_enabled=False, is_mobile=True).new_page()
    page.goto(url)
    return page


def fits_the_screen(page) -> bool:
    """Nothing wider than the phone: no sideways scrolling (read by Playwright, not the page's JS)."""
    boxes = [page.locator(selector).bounding_box() for selector in ("main", "form", "button")]
    return all(box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"] for box in boxes)


def test_a_customer_switches_a_topic_off_from_the_email_and_the_next_tick_skips_it(served, browser, artifacts):
    project = served
    page = open_phone_page(browser, preferences_link(email_to(project, "ann@example.com", "news")))
    assert page.locator("html").get_attribute("dir") == "ltr"
    assert fits_the_screen(page)
    page.get_by_label("News").uncheck()
    page.get_by_role("button", name="Save").click()
    page.get_by_text("Your preferences are saved.").wait_for()
    assert not page.get_by_label("News").is_checked() and page.get_by_label("Offers").is_checked()
    page.screenshot(path=artifacts / "preferences-en.png", full_page=True)
    next_tick_after_the_change(project, "ann")
    assert project.sent("news") == [("ann", 1), ("sara", 1)]  # nothing new on news
    assert project.sent("offers")[-1] == ("ann", 1) and len(project.sent("offers")) == 3


def test_the_same_in_arabic_right_to_left(served, browser, artifacts):
    project = served
    page = open_phone_page(browser, preferences_link(email_to(project, "sara@example.com", "news")))
    assert page.locator("html").get_attribute("dir") == "rtl"
    assert fits_the_screen(page)
    news = page.get_by_label("الأخبار")
    checkbox, label = news.bounding_box(), page.locator("label.choice", has=news).bounding_box()
    assert checkbox["x"] > label["x"] + label["width"] / 2  # the box sits on the right, as Arabic reads
    news.uncheck()
    page.get_by_role("button", name="حفظ").click()
    page.get_by_text("تم حفظ تفضيلاتك.").wait_for()
    page.screenshot(path=artifacts / "preferences-ar.png", full_page=True)
    next_tick_after_the_change(project, "sara")
    assert ("sara", 1) in project.sent("news") and len(project.sent("news")) == 2
    assert len(project.sent("offers")) == 3


def test_one_click_unsubscribe_with_a_plain_post_then_the_page_in_the_browser(served, browser, artifacts):
    project = served
    message = email_to(project, "ann@example.com", "news")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = message["List-Unsubscribe"].strip("<>")
    request = urllib.request.Request(link, data=b"List-Unsubscribe=One-Click", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:  # no cookie, no token, no login
        assert response.status == 200
        assert "set-cookie" not in {k.lower() for k in response.headers}
    page = open_phone_page(browser, link)  # GET: the page asks again and offers the preference centre
    page.get_by_role("link", name="Manage all your email preferences").click()
    assert not page.get_by_label("News").is_checked()
    page.screenshot(path=artifacts / "unsubscribed-en.png", full_page=True)
    next_tick_after_the_change(project, "ann")
    assert len(project.sent("news")) == 2 and len(project.sent("offers")) == 3


def test_a_forged_link_gets_the_plain_404_page(served, browser):
    message = email_to(served, "ann@example.com", "news")
    # customer 2 in place of customer 1, under customer 1's signature
    forged = re.sub(r"/preferences/[^.]+", "/preferences/WzIsbnVsbF0", preferences_link(message))
    page = browser.new_context(java_script_enabled=False).new_page()
    response = page.goto(forged)
    assert response.status == 404
    assert page.get_by_text("This link is not valid.").is_visible()
