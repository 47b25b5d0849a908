"""The feedback loop through the real service and real ticks, with the shipped example campaigns:
a rating button in the email, the rating page in Chromium (which posts the score by itself), a
comment, the team's alert at the next tick, and "I'm on it". Mail scanners (a GET and a HEAD of
every link), replayed and forged links record nothing."""

from __future__ import annotations

import json
import re
import shutil
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from conftest import REPO, customer
from starlette.testclient import TestClient
from test_web_browser import artifacts, browser, free_port, iso, lifecycle_serve  # noqa: F401 (fixtures)

from engine.config.settings import Config, load_config
from engine.web import create_app

NEEDS_CHROMIUM = pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed")

LINK = re.compile(r'href="([^"]+)"')


def with_the_examples(project, **config) -> None:
    project.config(topics={"feedback": {"title": {"en": "Surveys", "ar": "الاستبيانات"}}}, **config)
    for name in ("feedback_request", "feedback_alert"):
        shutil.copy(REPO / "campaigns" / f"{name}.yaml", project.root / "campaigns")
    shutil.rmtree(project.root / "templates" / "emails")
    shutil.copytree(REPO / "templates" / "emails", project.root / "templates" / "emails")


@pytest.fixture
def served(project):
    """The shipped feedback campaigns and templates, an Arabic customer who bought four days ago,
    the team in English, and `lifecycle serve` on the public URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with_the_examples(project, public_url=url, feedback={"scale": 10, "low": 6}, team={"locale": "en"})
    project.customers(customer("sara", locale="ar", last_name="Haddad"))
    day = datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0)
    for days, order, product in ((30, "A-1", "Green tea"), (4, "A-2", "Teapot")):
        properties = {"order_id": order, "total": 20, "product": product}
        project.events(
            {"customer": "sara", "event": "purchase", "at": iso(day - timedelta(days=days)), "properties": properties}
        )
    project.tick(iso(day - timedelta(days=1, hours=-2)))  # the request is due three days after the purchase
    with lifecycle_serve(project, port):
        project.server = url
        yield project


def email(project, campaign: str):
    (message,) = [m for m in project.outbox() if m["X-Lifecycle-Campaign"] == campaign]
    return message


def links(project, message) -> list[str]:
    """Every link of the email into the service (the rest point to the brand's site)."""
    html = message.get_body(("html",)).get_content()
    return [u.replace("&amp;", "&") for u in LINK.findall(html) if u.startswith(project.server)]


def status(url: str, method: str = "GET", data: bytes | None = None) -> int:
    request = urllib.request.Request(url, method=method, data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def scan(urls: list[str]) -> None:
    """What a mail scanner does: open every link, GET and HEAD, no cookies, no script."""
    for url in urls:
        assert status(url) < 500 and status(url, "HEAD") < 500


def events(project, name: str) -> list[tuple[int, dict]]:
    rows = project.query("SELECT id, properties FROM event WHERE name = :name ORDER BY id", name=name)
    return [(row[0], row[1] if isinstance(row[1], dict) else json.loads(row[1])) for row in rows]


@NEEDS_CHROMIUM
def test_a_low_rating_from_the_email_reaches_the_team_once_and_is_acknowledged(served, browser, artifacts):  # noqa: F811
    project = served
    (request_send,) = project.query("SELECT id FROM send WHERE campaign = 'feedback_request' AND status = 'sent'")
    request = email(project, "feedback_request")
    html = request.get_body(("html",)).get_content()
    assert 'dir="rtl"' in html.split("/feedback/")[0].rsplit("<table", 1)[1]  # the buttons run right to left
    ratings = [u for u in links(project, request) if "/feedback/" in u]
    assert [u.rsplit("/", 1)[1] for u in ratings] == [str(n) for n in range(11)]
    assert "brand.url/survey" not in html and "/survey" not in html

    scan(links(project, request))
    assert events(project, "feedback_submitted") == []
    token_url = ratings[2].rsplit("/", 1)[0]
    assert status(f"{token_url}/11") == 404 and status(f"{token_url}/two") == 404
    assert status(re.sub(r"/feedback/[^/]+", "/feedback/WzEsOTld", ratings[2])) == 404  # another send, unsigned
    assert status(token_url, "POST", b"score=2") == 403  # no CSRF field, no cookie: nothing recorded
    assert events(project, "feedback_submitted") == []

    # One click in the email: the page opens in a browser and posts the score by itself.
    page = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True).new_page()
    page.goto(ratings[2])
    page.get_by_text("شكراً لك: تم تسجيل تقييمك.").wait_for()
    assert page.locator("html").get_attribute("dir") == "rtl"
    ((first_id, first),) = events(project, "feedback_submitted")
    assert first == {"score": 2, "scale": 10, "campaign": "feedback_request", "step": 1, "send_id": request_send[0]}

    # The customer adds a comment: a new rating of the same send replaces the first (both kept).
    csrf = page.locator("input[name=csrf]").get_attribute("value")
    too_long = page.request.post(token_url, form={"csrf": csrf, "score": "2", "comment": "x" * 2001})
    assert too_long.status == 400 and "2000" in too_long.text()
    assert page.request.post(token_url, form={"csrf": csrf, "score": "12"}).status == 404
    page.locator("textarea").fill("وصل الإبريق مكسوراً")
    page.screenshot(path=artifacts / "rating-ar.png", full_page=True)
    page.get_by_role("button", name="أرسل تقييمي").click()
    page.get_by_text("شكراً لك: تم تسجيل تقييمك.").wait_for()
    assert [p.get("comment") for _, p in events(project, "feedback_submitted")] == [None, "وصل الإبريق مكسوراً"]
    assert events(project, "feedback_submitted")[1][1]["already_low"] is True

    # The next tick: one alert, in the team's language, with the comment and the last orders.
    project.tick(iso(datetime.now(UTC) + timedelta(minutes=1)))
    project.tick(iso(datetime.now(UTC) + timedelta(minutes=2)))
    assert project.sent("feedback_alert") == [("sara", 1)]
    alert = email(project, "feedback_alert")
    body = alert.get_body(("html",)).get_content()
    assert alert["To"].addresses[0].addr_spec == "support@example.com"
    assert alert["Subject"] == "Low score 2/10 from Sara Haddad"
    assert "I&#39;m on it" in body or "I'm on it" in body
    assert "وصل الإبريق مكسوراً" in body and "Teapot" in body and "Green tea" in body
    assert "أتولى الأمر" not in body
    scan(links(project, alert))
    assert events(project, "alert_acknowledged") == []
    assert f"{project.server}/studio/customers/sara" in links(project, alert)  # the customer's page, behind the login

    (acknowledge,) = [u for u in links(project, alert) if "/alerts/" in u]
    assert status(acknowledge.replace("/alerts/", "/alerts/x")) == 404
    assert status(f"{project.server}/alerts/{token_url.rsplit('/', 1)[1]}") == 404  # a rating token is no alert's
    team = browser.new_context(java_script_enabled=False).new_page()
    team.goto(acknowledge)
    assert team.get_by_text("Sara Haddad rated 2 of 10").is_visible()
    assert team.get_by_text("وصل الإبريق مكسوراً").is_visible()
    csrf = team.locator("input[name=csrf]").get_attribute("value")
    team.get_by_role("button", name="I'm on it").click()
    team.get_by_text("Acknowledged at").wait_for()
    team.screenshot(path=artifacts / "alert-acknowledged-en.png", full_page=True)
    ((_, acknowledged),) = events(project, "alert_acknowledged")
    (alert_send,) = project.query("SELECT id FROM send WHERE campaign = 'feedback_alert'")
    assert acknowledged == {
        "alert_send_id": alert_send[0],
        "feedback_event_id": first_id,
        "feedback_send_id": request_send[0],
        "by": "support@example.com",
    }

    # Replayed: the button's post again, and the email's links again: nothing more.
    assert team.request.post(acknowledge, form={"csrf": csrf}).status == 200
    scan(links(project, alert) + links(project, request))
    assert len(events(project, "alert_acknowledged")) == 1 and len(events(project, "feedback_submitted")) == 2
    project.tick(iso(datetime.now(UTC) + timedelta(minutes=3)))
    assert project.sent("feedback_alert") == [("sara", 1)]

    # The figures: one response (the latest rating counts), and it is low (acknowledgement: see below).
    figures = report(project)
    assert (figures["responses"], figures["low"], figures["nps"]) == (1, 1, -100)
    ((low,),) = [figures["low_comments"]]
    assert (low["score"], low["comment"], low["campaign"]) == (2, "وصل الإبريق مكسوراً", "feedback_request")


def report(project) -> dict:
    now = iso(datetime.now(UTC) + timedelta(minutes=5))
    return json.loads(project.cli("report", "--now", now, "--format", "json").stdout)["feedback"]


def test_an_acknowledged_alert_counts_after_a_comment_was_added(project):
    with_the_examples(project, feedback={"scale": 10}, team={"locale": "en"})
    project.customers(customer("sara", locale="ar"))
    day = datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0)
    project.events({"customer": "sara", "event": "purchase", "at": iso(day - timedelta(days=4))})
    project.tick(iso(day - timedelta(days=1, hours=-2)))
    client = TestClient(create_app(load_config(project.root / "config.yaml")))
    rating = next(u for u in links_to(email(project, "feedback_request"), "/feedback/") if u.endswith("/3"))
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get(rating).text).group(1)
    for comment in ("", "late"):  # the page's own post, then the comment
        assert client.post(rating.rsplit("/", 1)[0], data={"csrf": csrf, "score": "3", "comment": comment}).is_success
    project.tick(iso(datetime.now(UTC) + timedelta(minutes=1)))
    (acknowledge,) = links_to(email(project, "feedback_alert"), "/alerts/")
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get(acknowledge).text).group(1)
    assert client.post(acknowledge, data={"csrf": csrf}).is_success
    figures = report(project)
    assert (figures["low"], figures["acknowledged"], figures["acknowledged_within_4h"]) == (1, 1, 1)


def links_to(message, section: str) -> list[str]:
    """The paths of the email's links into one section of the service."""
    html = message.get_body(("html",)).get_content()
    return [u.split("localhost:8000", 1)[1] for u in LINK.findall(html) if section in u]


def test_the_scale_and_its_low_score_default_together():
    config = {"from": {"email": "a@b.example"}}
    assert Config.model_validate(config).feedback.low == 2
    assert Config.model_validate({**config, "feedback": {"scale": 10}}).feedback.low == 6
    assert list(Config.model_validate({**config, "feedback": {"scale": 10}}).feedback.scores()) == list(range(11))
    assert Config.model_validate({**config, "locales": ["en", "ar"]}).team.locale == "en"
    with pytest.raises(ValueError):
        Config.model_validate({**config, "feedback": {"scale": 5, "low": 7}})
    with pytest.raises(ValueError):
        Config.model_validate({**config, "team": {"locale": "fr"}})


def test_an_alert_about_a_rating_from_another_system_is_acknowledged_too(project):
    """A `feedback_submitted` event posted to the API names no send: its alert still opens and is acknowledged."""
    with_the_examples(project, team={"locale": "ar"}, feedback={"scale": 10})
    project.customers(customer("ann"))
    now = datetime.now(UTC)
    project.events({"customer": "ann", "event": "feedback_submitted", "at": iso(now), "properties": {"score": 3}})
    project.tick(iso(now + timedelta(minutes=1)))
    alert = email(project, "feedback_alert")
    assert alert["Subject"] == "تقييم منخفض 3/10 من Ann"  # the team's language, not Ann's
    (path,) = links_to(alert, "/alerts/")
    client = TestClient(create_app(load_config(project.root / "config.yaml")))
    page = client.get(path)
    assert page.status_code == 200 and "قيّم Ann بـ 3 من 10" in page.text and 'dir="rtl"' in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    assert client.post(path, data={"csrf": "forged"}).status_code == 403
    assert events(project, "alert_acknowledged") == []
    done = client.post(path, data={"csrf": csrf})
    assert done.status_code == 200 and "تم التكفل به في" in done.text
    ((_, acknowledged),) = events(project, "alert_acknowledged")
    assert set(acknowledged) == {"alert_send_id", "feedback_event_id", "by"}
