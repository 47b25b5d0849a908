"""The studio's customer pages in Debian's Chromium (Playwright with the system browser): search a
customer by name, open their page and read their timeline; open the why page of a skipped send and
read its reason. Screenshots at desktop and phone width go to test-artifacts/."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_studio_browser import DESKTOP, lifecycle_studio, shoot
from test_studio_customers import populate
from test_web_browser import CHROMIUM, artifacts, browser, free_port  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")


def test_search_a_customer_read_their_timeline_and_why_a_send_was_skipped(project, browser, artifacts):  # noqa: F811
    populate(project)
    with lifecycle_studio(project, free_port()) as url:
        page = browser.new_page(viewport=DESKTOP)
        page.goto(f"{url}/studio/")
        page.get_by_role("link", name="Customers").click()
        page.get_by_role("heading", name="Customers").wait_for()
        page.get_by_label("Search").fill("Dawson")
        page.get_by_role("button", name="Filter").click()
        page.wait_for_url("**/studio/customers?q=Dawson*")
        assert page.locator("tr[data-customer]").count() == 1
        page.get_by_role("link", name="dan", exact=True).click()
        page.get_by_role("heading", name="Dan Dawson").wait_for()
        entry = page.locator("table.timeline tr[data-kind=entry]").first
        assert "entered news" in entry.inner_text() and "by ping" in entry.inner_text()
        assert "sent" in page.locator("table.timeline tr[data-kind=send]").first.inner_text()

        page.goto(f"{url}/studio/customers/bob")
        skipped = page.locator("table.timeline tr[data-kind=send]").first
        assert "skipped" in skipped.inner_text() and "suppressed" in skipped.inner_text()
        skipped.get_by_role("link", name="why?").click()
        page.get_by_role("heading", name="Why").wait_for()
        step = page.locator("section.step[data-step='1']")
        assert "skipped on" in step.inner_text() and "(suppressed)" in step.inner_text()
        assert page.locator("select[name=campaign]").input_value() == "news"
        page.close()
        for name, path in (
            ("customers", "/studio/customers"),
            ("customer", "/studio/customers/bob"),
            ("why", "/studio/why?campaign=news&customer=bob"),
        ):
            shoot(browser, url + path, name, artifacts)
