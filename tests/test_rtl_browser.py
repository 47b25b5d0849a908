"""The shipped welcome email in a real browser (headless Chromium, Debian's `chromium` package):
Arabic reads right to left all the way down, English left to right. Each run writes a screenshot
of both to test-artifacts/ at the top of the repository, for a person to look at."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from conftest import REPO, customer
from playwright.sync_api import sync_playwright

CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="headless Chromium is not installed: apt-get install -y chromium"
)

# Per element that holds text of its own: its computed direction and alignment, its box, its text.
TEXT_BLOCKS = """() => [...document.querySelectorAll('body *')]
  .filter(e => [...e.childNodes].some(n => n.nodeType === Node.TEXT_NODE && n.textContent.trim()))
  .filter(e => e.getBoundingClientRect().width > 0)
  .map(e => ({text: e.textContent.trim(), direction: getComputedStyle(e).direction,
              align: getComputedStyle(e).textAlign, x: e.getBoundingClientRect().left}))"""


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def welcome_html(project, locale: str) -> str:
    """The shipped welcome email for one customer, as `lifecycle preview` renders it."""
    shutil.rmtree(project.root / "templates")
    shutil.copytree(REPO / "templates", project.root / "templates")
    shutil.copy(REPO / "campaigns" / "welcome.yaml", project.root / "campaigns" / "welcome.yaml")
    project.config(
        brand=yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))["brand"],
        topics={"onboarding": {"title": "Getting started"}},
    )
    project.customers(customer("layla", first_name="ليلى", locale=locale, favourite_product="قهوة"))
    out = project.root / f"welcome.{locale}.html"
    project.cli("preview", "welcome", "--customer", "layla", "--locale", locale, "--out", str(out))
    return out.read_text(encoding="utf-8")


def look_at(browser, html: str, screenshot: str) -> tuple[dict, list[dict]]:
    page = browser.new_page(viewport={"width": 700, "height": 900})
    page.route("**/*", lambda route: route.abort() if route.request.url.startswith("http") else route.continue_())
    page.set_content(html, wait_until="load")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)
    root = page.evaluate(
        "() => ({dir: document.documentElement.dir, lang: document.documentElement.lang,"
        " direction: getComputedStyle(document.body).direction})"
    )
    blocks = page.evaluate(TEXT_BLOCKS)
    page.close()
    return root, blocks


def block(blocks: list[dict], words: str) -> dict:
    return next(b for b in blocks if words in b["text"])


def test_the_arabic_welcome_reads_right_to_left_all_the_way_down(project, browser):
    root, blocks = look_at(browser, welcome_html(project, "ar"), "welcome.ar.png")

    assert root == {"dir": "rtl", "lang": "ar", "direction": "rtl"}
    assert len(blocks) >= 10
    assert {b["direction"] for b in blocks} == {"rtl"}, [b for b in blocks if b["direction"] != "rtl"]
    centred = {"center", "-webkit-center"}  # titles, the button, the feature columns, the footer
    assert {b["align"] for b in blocks} <= {"right"} | centred, [b for b in blocks if b["align"] == "left"]
    assert block(blocks, "تم تأكيد بريدك")["align"] == "right"  # body text starts on the right
    # The three columns run from right to left: delivery, points, returns.
    delivery, points, returns = (block(blocks, w)["x"] for w in ("توصيل سريع", "نقاط المكافآت", "إرجاع سهل"))
    assert delivery > points > returns


def test_the_english_welcome_reads_left_to_right(project, browser):
    root, blocks = look_at(browser, welcome_html(project, "en"), "welcome.en.png")

    assert root == {"dir": "ltr", "lang": "en", "direction": "ltr"}
    assert {b["direction"] for b in blocks} == {"ltr"}
    assert block(blocks, "Your email is confirmed")["align"] == "left"
    delivery, points, returns = (block(blocks, w)["x"] for w in ("Fast delivery", "Reward points", "Easy returns"))
    assert delivery < points < returns
