"""The studio's customer pages through the ASGI test client on a real store (SQLite, and PostgreSQL
when enabled): the list with its search and filters, its CSV download (the same as `lifecycle
customers --format csv`), a customer's page with their timeline, and the why page for a skipped
send. What a person sees in Chromium is in tests/test_studio_customers_browser.py."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from conftest import customer
from test_studio import API_KEY, logged_in, serve_client

NEWS = """
type: marketing
topic: news
trigger: {event: ping}
steps: [{template: plain, subject: News}]
"""


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def people(store_project, monkeypatch):
    monkeypatch.setenv("LIFECYCLE_API_KEYS", API_KEY)
    return populate(store_project)


def populate(project):
    """Five customers who each got the news, but Bob's address bounced before: his send was skipped."""
    project.config(topics={"news": {"title": "News"}, "offers": {"title": "Offers", "default": "unsubscribed"}})
    project.campaign("news", NEWS)
    project.customers(
        customer("ann", attributes={"plan": "pro"}, last_name="Archer"),
        customer("bob", attributes={"plan": "pro"}),
        customer("cat", attributes={"plan": "free"}, topics={"offers": True}),
        customer("dan", attributes={"plan": "pro"}, last_name="Dawson"),
        customer("eve", attributes={"plan": "free"}),
    )
    now = datetime.now(UTC)
    project.events(
        *({"customer": c, "event": "purchase", "at": iso(now - timedelta(days=3))} for c in ("ann", "cat")),
        *(
            {"customer": c, "event": "ping", "at": iso(now - timedelta(hours=2))}
            for c in ("ann", "bob", "cat", "dan", "eve")
        ),
    )
    project.cli("suppress", "bob@example.com", "--reason", "bounced")
    project.tick(iso(now - timedelta(hours=1)))
    return project


def ids(page: str) -> list[str]:
    return re.findall(r'<tr data-customer="([^"]+)">', page)


def test_the_customer_pages_need_a_login(people):
    client = serve_client(people)
    for path in ("/studio/customers", "/studio/customers.csv", "/studio/customers/ann", "/studio/why"):
        answer = client.get(path)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/studio/login?next=")


def test_search_and_filters_find_the_right_customers(people):
    client = logged_in(people)
    assert sorted(ids(client.get("/studio/customers").text)) == ["ann", "bob", "cat", "dan", "eve"]
    assert ids(client.get("/studio/customers?q=daws").text) == ["dan"]
    assert ids(client.get("/studio/customers?q=ANN%40").text) == ["ann"]
    assert sorted(ids(client.get("/studio/customers?where=plan%3Dfree").text)) == ["cat", "eve"]
    assert ids(client.get("/studio/customers?topic=offers").text) == ["cat"]
    assert ids(client.get("/studio/customers?where=plan%3Dfree&topic=offers").text) == ["cat"]
    bought = ids(client.get("/studio/customers?stage=current").text)
    assert sorted(bought) == ["ann", "cat"]  # the ones with a purchase
    assert sorted(ids(client.get("/studio/customers?stage=prospect").text)) == ["bob", "dan", "eve"]
    page = client.get("/studio/customers?q=ann").text
    assert '<a href="/studio/customers/ann">ann</a>' in page
    bad = client.get("/studio/customers?stage=gold")
    assert bad.status_code == 400 and "&#39;gold&#39; is not one of" in bad.text


def test_the_csv_download_is_what_the_command_line_writes(people):
    client = logged_in(people)
    page = client.get("/studio/customers?where=plan%3Dpro&stage=prospect").text
    link = re.search(r'<a href="(/studio/customers\.csv[^"]*)" download>', page).group(1).replace("&amp;", "&")
    download = client.get(link)
    assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
    assert "attachment" in download.headers["content-disposition"]
    cli = people.cli("customers", "--where", "plan=pro", "--stage", "prospect", "--format", "csv").stdout
    lines = download.text.splitlines()
    assert lines[0] == "id,email,stage,risk,churn_probability,value,last_activity"
    assert sorted(line.split(",")[0] for line in lines[1:]) == ["bob", "dan"]
    # the same rows, but for the last activity, which the command line counts at its own now
    strip = lambda text: [line.rsplit(",", 1)[0] for line in text.splitlines()]  # noqa: E731
    assert strip(download.text) == strip(cli)
    assert client.get("/studio/customers.csv?risk=purple").status_code == 400


def test_a_customer_page_shows_the_profile_and_the_timeline(people):
    client = logged_in(people)
    page = client.get("/studio/customers/bob").text
    assert re.search(r'data-fact="stage">prospect<', page)
    assert re.search(r'data-fact="suppressed">bounced<', page)
    kinds = re.findall(r'<tr data-kind="(\w+)">', page)
    assert kinds[:3] == ["send", "entry", "event"]  # newest first: the send, its entry, the ping
    assert 'data-status="skipped">skipped</strong> <span class="reason">suppressed</span>' in page
    assert 'href="/studio/why?campaign=news&amp;customer=bob">why?</a>' in page
    ann = client.get("/studio/customers/ann").text
    assert 'data-status="sent">sent</strong>' in ann and "plan" in ann and "Archer" in ann


def test_the_why_page_shows_the_reason_of_a_skipped_send(people):
    client = logged_in(people)
    page = client.get("/studio/why?campaign=news&customer=bob").text
    assert 'data-verdict="entry">does not enter now<' in page  # already entered
    step = re.search(r'<section class="step" data-step="1" data-action="done">.*?</section>', page, re.S).group(0)
    assert "skipped on" in step and "(suppressed)" in step
    assert "<option selected>news</option>" in page
    fresh = client.get("/studio/why?campaign=news&customer=ann").text
    assert "✓" in fresh and "signed up" in fresh
    missing = client.get("/studio/why?campaign=news&customer=nobody")
    assert missing.status_code == 404 and "no customer with id &#39;nobody&#39;" in missing.text
    assert client.get("/studio/why?campaign=nothing&customer=ann").status_code == 404


def test_an_unknown_customer_gets_the_studios_404_page(people):
    answer = logged_in(people).get("/studio/customers/bobb")
    assert answer.status_code == 404
    assert "<h1>404</h1>" in answer.text and "no customer with id &#39;bobb&#39;" in answer.text
    assert "did you mean &#39;bob&#39;" in answer.text


def test_an_id_with_a_slash_links_to_its_own_page(people):
    people.customers(customer("acme/7", attributes={"plan": "team"}))
    client = logged_in(people)
    listed = client.get("/studio/customers?where=plan%3Dteam").text
    assert '<a href="/studio/customers/acme%2F7">acme/7</a>' in listed
    page = client.get("/studio/customers/acme%2F7")
    assert page.status_code == 200 and '<span class="muted">acme/7</span></h1>' in page.text
