"""The HTML report in a real browser: headless Chromium draws every chart offline, and the page
shows the numbers of the JSON. A screenshot lands in test-artifacts/ for a person to look at."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
CHARTS = ("activity", "retention", "stages", "risk")
NOW = "2026-06-01T10:00:00Z"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Chromium (apt-get install chromium)")


@pytest.fixture
def report_files(project):
    """The report of a sample store after two days of ticks, as JSON and as an HTML file."""
    project.config(topics={name: {"title": name} for name in ("news", "offers", "product_news", "feedback")})
    project.campaign(
        "welcome",
        """
        topic: news
        trigger: {event: signed_up}
        goal: {event: purchase, within: 30d}
        holdout: 20%
        steps:
          - {template: plain, subject: "Welcome"}
          - {template: plain, subject: "Tips", delay: 1d}
        """,
    )
    project.cli("demo", "--customers", "120", "--now", NOW)
    project.tick(NOW)
    project.tick("2026-06-02T10:00:00Z")
    report = json.loads(project.cli("report", "--now", "2026-06-02T10:00:00Z", "--format", "json").stdout)
    ARTIFACTS.mkdir(exist_ok=True)
    page = ARTIFACTS / "report.html"
    page.write_text(project.cli("report", "--now", "2026-06-02T10:00:00Z", "--format", "html").stdout, encoding="utf-8")
    return report, page


def test_charts_render_offline_in_chromium(report_files):
    from playwright.sync_api import sync_playwright

    report, page_file = report_files
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
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
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda request: requests.append(request.url))
            page.goto(page_file.as_uri())
            page.wait_for_function(f"document.querySelectorAll('.plotly-graph-div .main-svg').length >= {len(CHARTS)}")
            sizes = {name: page.locator(f"#chart-{name} .main-svg").first.bounding_box() for name in CHARTS}
            bars = page.locator("#chart-risk .point").count()
            sent = page.locator('tr.campaign[data-campaign="welcome"] td[data-figure="sent"]').inner_text()
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()
    assert all(box and box["width"] > 200 and box["height"] > 200 for box in sizes.values()), sizes
    assert bars == 3  # green, yellow, red
    assert sent == str(report["campaigns"]["welcome"]["sent"]) and report["campaigns"]["welcome"]["sent"] > 0
    assert [url for url in requests if not url.startswith("file://")] == []  # nothing fetched from a network
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
