"""The studio through the ASGI test client on a real store (SQLite, and PostgreSQL when enabled):
the login of `/studio` and `/dashboard` in `lifecycle serve`, the campaign list (audience sizes,
30-day figures, problems with `file:line`), the flow diagram, and the email preview with its links
checked. The live reload and what a person sees are in tests/test_studio_browser.py."""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy

import pytest
from conftest import customer
from starlette.testclient import TestClient

from engine.config.settings import load_config
from engine.web import create_app
from engine.web.studio import local_app
from engine.web.studio import overview as studio_overview
from engine.web.studio.access import COOKIE
from engine.web.studio.overview import Counts

API_KEY = "studio-test-key"
OFFER = """
description: Offer for pro customers who bought
type: marketing
topic: offers
priority: 20
trigger: {event: ping}
audience:
  - {attribute: plan, equals: pro}
  - {event: purchase, at_least: 1}
steps:
  - variants:
      - {name: a, template: plain, subject: "Offer A"}
      - {name: b, template: linked, subject: "Offer B"}
  - {template: plain, subject: "Reminder", delay: 2d}
exit: [{event: purchase}]
goal: {event: purchase, within: 7d}
holdout: 10%
"""
NEWS = """
type: marketing
topic: news
trigger: {event: ping}
steps: [{template: plain, subject: News}]
"""
# line 4 names a key the language does not have
BROKEN = """type: marketing
topic: news
trigger: {event: ping}
when: tomorrow
steps: [{template: plain, subject: Broken}]
"""
LINKED = """<a href="{{ links.unsubscribe }}">Leave</a> <a href="https://shop.example/sale">Sale</a>
<a href="http://localhost:8000/preferences/not-a-token">Forged</a> {{ customer.first_name }}"""


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def studio_project(store_project, monkeypatch):
    project = store_project
    monkeypatch.setenv("LIFECYCLE_API_KEYS", f"other-key, {API_KEY}")
    project.template("linked", LINKED)
    arabic = "{% extends '_layout.mjml' %}{% block content %}مرحبا {{ customer.first_name }}{% endblock %}"
    (project.root / "templates" / "emails" / "plain.ar.mjml").write_text(arabic, encoding="utf-8")
    project.campaign("offer", OFFER)
    project.campaign("news", NEWS)
    people = [
        customer("ann", attributes={"plan": "pro"}),
        customer("bob", attributes={"plan": "pro"}),
        customer("cat", attributes={"plan": "free"}),
        customer("dan", attributes={"plan": "pro"}, last_name="Dawson"),
        customer("sara", locale="ar", attributes={"plan": "pro"}),
    ]
    project.customers(*people)
    now = datetime.now(UTC)
    bought = [{"customer": n, "event": "purchase", "at": iso(now - timedelta(days=3))} for n in ("ann", "cat", "sara")]
    project.events(*bought)
    project.events(*({"customer": p["id"], "event": "ping", "at": iso(now - timedelta(hours=2))} for p in people))
    project.tick(iso(now - timedelta(hours=1)))
    project.campaign("broken", BROKEN)  # after the tick, which refuses to run with it
    return project


def serve_client(project) -> TestClient:
    return TestClient(create_app(load_config(project.root / "config.yaml")), follow_redirects=False)


def logged_in(project) -> TestClient:
    client = serve_client(project)
    form = client.get("/studio/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
    answer = client.post("/studio/login", data={"csrf": csrf, "key": API_KEY, "next": "/studio/"})
    assert answer.status_code == 303 and answer.headers["location"] == "/studio/"
    return client


def listed(client: TestClient, path: str = "/studio/") -> str:
    """The campaign list once its audiences are counted (on a thread of their own; polled)."""
    deadline = time.monotonic() + 30
    while "data-counting" in (page := client.get(path).text) and time.monotonic() < deadline:
        time.sleep(0.1)
    return page


def row(page: str, campaign: str) -> str:
    return re.search(rf'<tr data-campaign="{campaign}".*?</tr>', page, re.S).group(0)


def figure(html: str, name: str) -> str:
    return re.search(rf'data-figure="{name}">(.*?)</td>', html, re.S).group(1).strip()


# -- the login ------------------------------------------------------------------------------------


def test_the_studio_in_the_service_needs_a_login(studio_project):
    client = serve_client(studio_project)
    answer = client.get("/studio/preview?campaign=news")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/studio/login?next=/studio/preview%3Fcampaign%3Dnews"
    # a bearer key opens the dashboard for scripts, never the studio's pages
    assert client.get("/studio/", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 303


def test_a_wrong_or_missing_key_or_a_form_without_its_token_is_refused(studio_project):
    client = serve_client(studio_project)
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/studio/login").text).group(1)
    for data in ({"csrf": csrf, "key": "guess"}, {"csrf": csrf, "key": ""}, {"csrf": "forged", "key": API_KEY}):
        answer = client.post("/studio/login", data=data)
        assert answer.status_code == 401 and "set-cookie" not in {h.lower() for h in answer.headers if "session" in h}
        assert COOKIE not in answer.cookies
    assert client.get("/studio/").status_code == 303


def test_the_session_cookie_is_httponly_samesite_and_signed(studio_project):
    client = serve_client(studio_project)
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/studio/login").text).group(1)
    answer = client.post("/studio/login", data={"csrf": csrf, "key": API_KEY, "next": "//evil.example/"})
    assert answer.headers["location"] == "/studio/"  # never an open redirect
    cookie = next(v for k, v in answer.headers.multi_items() if k == "set-cookie" and v.startswith(COOKIE))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    assert API_KEY not in value and value.count(".") == 2  # a fingerprint, dated and signed
    assert client.get("/studio/").status_code == 200
    # the same cookie edited by hand is refused
    fingerprint, stamp, signature = value.split(".")
    client.cookies.clear()
    client.cookies.set(COOKIE, f"{fingerprint[:-1]}{'0' if fingerprint[-1] != '0' else '1'}.{stamp}.{signature}")
    assert client.get("/studio/").status_code == 303


def test_a_session_ends_when_its_key_is_removed(studio_project, monkeypatch):
    client = logged_in(studio_project)
    cookie = client.cookies[COOKIE]
    monkeypatch.setenv("LIFECYCLE_API_KEYS", "other-key")
    restarted = serve_client(studio_project)
    restarted.cookies.set(COOKIE, cookie)
    assert restarted.get("/studio/").status_code == 303


def test_the_dashboard_takes_the_login_and_stays_small(studio_project):
    client = serve_client(studio_project)
    browser = {"Accept": "text/html,application/xhtml+xml"}
    answer = client.get("/dashboard", headers=browser)
    assert answer.status_code == 303 and answer.headers["location"] == "/studio/login?next=/dashboard"
    assert client.get("/dashboard").status_code == 401  # a script without a key: a plain 401
    client = logged_in(studio_project)
    page = client.get("/dashboard", headers=browser)
    assert page.status_code == 200 and len(page.content) < 1_000_000
    script = re.search(r'<script src="(/dashboard/plotly-[\d.]+\.min\.js)"></script>', page.text).group(1)
    library = client.get(script, headers={"Accept-Encoding": "gzip"})
    assert library.status_code == 200 and "immutable" in library.headers["cache-control"]
    assert library.headers["content-encoding"] == "gzip" and b"Plotly" in library.content
    offer = re.search(r'<tr data-campaign="offer"><td>offer</td>.*?</tr>', page.text, re.S).group(0)
    assert 'data-figure="entered"' in offer  # the funnel: one row a campaign
    assert 'data-step="1" data-variant="a"' in page.text and 'data-held-out="yes"' in page.text
    variants = re.findall(r'<tr (?:class="held" )?data-campaign="offer" data-variant="(\w*)">', page.text)
    assert "" in variants and set(variants) - {""} <= {"a", "b"} and len(variants) >= 2  # each variant, held out


# -- the campaign list ---------------------------------------------------------------------------


def test_audience_sizes_match_a_count_done_in_plain_sql(studio_project):
    project = studio_project
    bought = {c for (c,) in project.query("SELECT customer_id FROM event WHERE name = 'purchase'")}
    customers = project.query("SELECT id, attributes FROM customer")
    plans = {c: (a if isinstance(a, dict) else json.loads(a)).get("plan") for c, a in customers}
    expected = sum(1 for c, plan in plans.items() if plan == "pro" and c in bought)
    everyone = len(customers)
    page = listed(logged_in(project))
    assert expected == 2 and figure(row(page, "offer"), "audience") == "2"  # ann and sara
    assert figure(row(page, "news"), "audience") == str(everyone)
    assert figure(row(page, "news"), "entered") == "5" and figure(row(page, "news"), "sent") == "5"


def _held(monkeypatch, name: str) -> threading.Event:
    """`engine.web.studio.overview.<name>` made to wait until the returned event is set."""
    release = threading.Event()
    work = getattr(studio_overview, name)

    def held(*args, **kwargs):
        release.wait(30)
        return work(*args, **kwargs)

    monkeypatch.setattr(studio_overview, name, held)
    return release


def plain_sql_offer_audience(project) -> int:
    """Customers on the pro plan who bought: the offer's audience, counted apart from the engine."""
    bought = {c for (c,) in project.query("SELECT customer_id FROM event WHERE name = 'purchase'")}
    customers = project.query("SELECT id, attributes FROM customer")
    plans = {c: (a if isinstance(a, dict) else json.loads(a)).get("plan") for c, a in customers}
    return sum(1 for c, plan in plans.items() if plan == "pro" and c in bought)


def test_an_estimate_with_its_range_shows_until_the_exact_count_is_in(studio_project, monkeypatch):
    exact_counted = _held(monkeypatch, "audience_sizes")
    app = local_app(load_config(studio_project.root / "config.yaml"))
    app.state.studio.counts = Counts(wait=10, sample=4)  # 4 of the 5 customers drawn at random
    with TestClient(app) as client:
        page = client.get("/studio/").text
        estimate = re.search(
            r'<td[^>]*data-estimated title="([^"]*)" data-figure="audience">(.*?)</td>', row(page, "offer"), re.S
        )
        low, high = (
            int(n.replace(",", "")) for n in re.search(r"between ([\d,]+) and ([\d,]+)", estimate.group(1)).groups()
        )
        shown = int(re.search(r"≈ ([\d,]+)", estimate.group(2)).group(1))
        assert "estimated from 4 customers" in estimate.group(1) and "estimated" in estimate.group(2)
        assert low <= 2 <= high and low <= shown <= high and abs(shown - 2) <= 1  # 1 or 2 of the 4 drawn are in it
        assert "≈: estimated from a random sample" in page and "data-counting" in page
        assert figure(row(page, "news"), "audience") == "5"  # no conditions: everyone, never estimated
        exact_counted.set()
        page = listed(client)
        assert figure(row(page, "offer"), "audience") == "2" == str(plain_sql_offer_audience(studio_project))
        assert "data-estimated" not in page and "≈" not in page


def test_counts_made_again_after_the_store_changed_are_exact_and_no_estimate_replaces_a_count(
    studio_project, monkeypatch
):
    project = studio_project
    app = local_app(load_config(project.root / "config.yaml"))
    app.state.studio.counts = Counts(wait=10, fresh_for=0, sample=4)  # counted again at every page
    with TestClient(app) as client:
        assert figure(row(listed(client), "offer"), "audience") == "2"
        exact_counted = _held(monkeypatch, "audience_sizes")
        project.customers(customer("eve", attributes={"plan": "pro"}))
        project.events({"customer": "eve", "event": "purchase", "at": iso(datetime.now(UTC) - timedelta(days=1))})
        page = client.get("/studio/").text  # counting again: the last exact count stays
        assert figure(row(page, "offer"), "audience") == "2" and "data-estimated" not in page
        exact_counted.set()
        deadline = time.monotonic() + 30
        while (
            figure(row(page := client.get("/studio/").text, "offer"), "audience") == "2" and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert figure(row(page, "offer"), "audience") == "3" == str(plain_sql_offer_audience(project))


def test_the_local_studio_begins_counting_as_it_starts(studio_project, monkeypatch):
    counting = threading.Event()
    exact = studio_overview.audience_sizes

    def counted(*args):
        counting.set()
        return exact(*args)

    monkeypatch.setattr(studio_overview, "audience_sizes", counted)
    with TestClient(local_app(load_config(studio_project.root / "config.yaml"))):
        assert counting.wait(30)  # before any page was asked for


def test_the_list_answers_while_the_templates_are_still_checked(studio_project, monkeypatch):
    checked = _held(monkeypatch, "check_templates")
    studio_project.template("linked", "<p>{{ customer.first_name </p>")  # does not render
    app = local_app(load_config(studio_project.root / "config.yaml"))
    app.state.studio.counts = Counts(wait=0.3)
    with TestClient(app) as client:
        page = client.get("/studio/").text
        assert "Checking every template…" in page and "No problems" not in page
        assert "campaigns/broken.yaml:4" in row(page, "broken")  # the campaigns' own problems are known
        assert "linked.mjml" not in row(page, "offer")
        checked.set()
        page = listed(client)
        assert "Checking every template…" not in page and "linked.mjml" in row(page, "offer")


def test_a_broken_campaign_is_listed_with_its_file_and_line_and_the_others_still_work(studio_project):
    page = listed(logged_in(studio_project))
    broken = row(page, "broken")
    assert "campaigns/broken.yaml:4" in broken and "trigger" in broken
    assert figure(row(page, "offer"), "audience") == "2"
    assert "1 problem" in page


def test_the_flow_is_drawn_from_the_yaml(studio_project):
    client = logged_in(studio_project)
    svg = client.get("/studio/campaigns/offer/flow.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    nodes = set(re.findall(r'data-node="([^"]+)"', svg.text))
    assert {"trigger", "audience", "step-1", "step-1-a", "step-1-b", "step-2", "holdout", "exit", "goal"} <= nodes
    assert "plan is pro" in svg.text and "wait 2d" in svg.text and "a · 50%" in svg.text
    page = client.get("/studio/campaigns/offer").text
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in page and "<script" not in page.split("</head>")[1]
    assert client.get("/studio/campaigns/nothing").status_code == 404


# -- the preview ---------------------------------------------------------------------------------


def test_a_preview_in_each_locale_arabic_right_to_left(studio_project):
    client = logged_in(studio_project)
    for locale, direction in (("en", "ltr"), ("ar", "rtl")):
        page = client.get(f"/studio/preview?campaign=news&locale={locale}").text
        assert f'data-direction="{direction}"' in page and f'lang="{locale}"' in page
        assert re.search(r'data-field="subject">News<', page)
        email = client.get(f"/studio/preview/email?campaign=news&locale={locale}")
        assert (
            email.status_code == 200 and ("مرحبا Sample" if locale == "ar" else "Hello Sample, step 1.") in email.text
        )
        assert (' dir="rtl"' in email.text) == (direction == "rtl")
        assert "frame-ancestors 'self'" in email.headers["content-security-policy"]


def test_a_preview_for_a_stored_customer_and_a_chosen_variant(studio_project):
    client = logged_in(studio_project)
    found = client.get("/studio/customers.json?q=daw").json()
    assert found == [{"id": "dan", "email": "dan@example.com", "name": "Dan Dawson"}]
    assert [c["id"] for c in client.get("/studio/customers.json?q=sara@").json()] == ["sara"]
    page = client.get("/studio/preview?campaign=offer&step=1&variant=b&customer=ann").text
    assert re.search(r'data-field="subject">Offer B<', page)
    assert client.get("/studio/preview/email?campaign=offer&variant=b&customer=ann").text.count("Ann") >= 1
    missing = client.get("/studio/preview?campaign=offer&customer=nobody").text
    assert "no customer &#39;nobody&#39;" in missing


def test_every_link_is_listed_and_the_services_own_links_are_checked(studio_project):
    page = logged_in(studio_project).get("/studio/preview?campaign=offer&variant=b").text
    links = re.findall(r'<tr data-checked="(\w+)">.*?<td>(.*?)</td><td class="url"><code>(.*?)</code>', page, re.S)
    by_text = {text: (checked, url) for checked, text, url in links}
    assert by_text["Leave"][0] == "yes" and "/unsubscribe/" in by_text["Leave"][1]
    assert by_text["Preferences"][0] == "yes"
    assert by_text["Sale"] == ("elsewhere", "https://shop.example/sale")
    assert by_text["Forged"][0] == "no"  # the preference page would refuse this token
    assert by_text["List-Unsubscribe header"][0] == "yes"


def test_a_broken_template_shows_its_file_and_line_and_the_studio_goes_on(studio_project):
    project = studio_project
    project.template("linked", "<p>{{ customer.first_name </p>")
    client = logged_in(project)
    page = client.get("/studio/preview?campaign=offer&variant=b")
    assert page.status_code == 200 and "does not render" in page.text
    assert re.search(r"linked\.mjml:\d+", page.text)
    assert "Hello Sample" in client.get("/studio/preview/email?campaign=offer&variant=a").text
    assert "linked.mjml" in row(listed(client), "offer")


def test_the_local_studio_needs_no_login_and_pushes_changes(studio_project):
    config = load_config(studio_project.root / "config.yaml")
    with TestClient(local_app(config), follow_redirects=False) as client:
        assert client.get("/").headers["location"] == "/studio/"
        page = listed(client)
        assert 'data-live="on"' in page and "Log out" not in page
        assert figure(row(page, "offer"), "audience") == "2"


def test_a_test_send_goes_through_the_sender_and_writes_nothing_to_the_store(studio_project):
    project = studio_project
    client = logged_in(project)
    page = client.get("/studio/preview?campaign=news&customer=ann").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    before = project.query("SELECT count(*) FROM send")[0][0], project.query("SELECT count(*) FROM consent")[0][0]
    answer = client.post(
        "/studio/preview/send?campaign=news&customer=ann", data={"csrf": csrf, "to": "me@shop.example"}
    )
    assert answer.status_code == 303 and "sent=sent+to+me%40shop.example" in answer.headers["location"]
    (sent,) = (project.root / "outbox").glob("test-*.eml")
    message = message_from_bytes(sent.read_bytes(), policy=policy.default)
    assert message["To"] == "me@shop.example" and "Hello Ann" in message.get_body(("plain",)).get_content()
    after = project.query("SELECT count(*) FROM send")[0][0], project.query("SELECT count(*) FROM consent")[0][0]
    assert after == before
    forged = client.post("/studio/preview/send?campaign=news", data={"csrf": "forged", "to": "me@shop.example"})
    assert forged.status_code == 403 and len(list((project.root / "outbox").glob("test-*.eml"))) == 1
