"""The web service through the ASGI test client: preference centre, one-click unsubscribe,
double opt-in, signed links, CSRF, security headers, body limits, the ingest API and the
SendGrid webhook. Each test works on a real SQLite store, and checks the effect on the next
tick through the real command line where there is one."""

from __future__ import annotations

import base64
import json
import re
import time

import pytest
from conftest import customer
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.testclient import TestClient

from engine.config.settings import load_config
from engine.mail.links import Links
from engine.web import create_app

API_KEY = "test-api-key"
SIGNING_KEY = ec.generate_private_key(ec.SECP256R1())  # plays SendGrid's part
PUBLIC_KEY = base64.b64encode(
    SIGNING_KEY.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
).decode()

NEWS = """
type: marketing
topic: news
trigger: {event: ping}
steps: [{template: plain, subject: News}]
"""
OFFERS = """
type: marketing
topic: offers
trigger: {event: ping}
steps: [{template: plain, subject: Offers}]
"""


class Web:
    """The app for the project's config, a test client, and the links the engine puts in emails."""

    def __init__(self, project):
        self.project = project
        self.config = load_config(project.root / "config.yaml")
        self.client = TestClient(create_app(self.config))
        self.links = Links(self.config)

    def id_of(self, external_id: str) -> int:
        return self.project.query("SELECT id FROM customer WHERE external_id = :x", x=external_id)[0][0]

    def link(self, purpose: str, external_id: str, topic: str | None = None) -> str:
        return f"/{purpose}/{self.links.token(purpose, self.id_of(external_id), topic)}"

    def form(self, path: str) -> dict:
        """The preference form as the page rendered it: every field with its current value."""
        page = self.client.get(path).text
        fields = {
            "csrf": re.search(r'name="csrf" value="([^"]+)"', page).group(1),
            "topic": re.findall(r'name="topic" value="(\w+)" checked', page),
            "frequency": re.search(r'name="frequency" value="(\w+)" checked', page).group(1),
            "locale": re.search(r'<option value="(\w+)" lang="\w+" selected', page).group(1),
        }
        if 'name="unsubscribe_all" value="yes" checked' in page:
            fields["unsubscribe_all"] = "yes"
        return fields

    def consents(self, external_id: str) -> list[tuple]:
        return self.project.query(
            "SELECT action, topic, source FROM consent WHERE customer_id = :c AND source != 'import' ORDER BY id",
            c=self.id_of(external_id),
        )

    def api(self, kind: str, body, key: str = API_KEY):
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return self.client.post(f"/api/{kind}", content=data, headers={"Authorization": f"Bearer {key}"})


@pytest.fixture
def web(store_project, monkeypatch) -> Web:
    return web_for(store_project, monkeypatch)


def web_for(project, monkeypatch) -> Web:
    """The app for a project with two topics' campaigns, customers ann and sara, and the keys."""
    monkeypatch.setenv("LIFECYCLE_API_KEYS", f"other-key, {API_KEY}")
    monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", PUBLIC_KEY)
    project.campaign("news", NEWS)
    project.campaign("offers", OFFERS)
    project.customers(customer("ann"), customer("sara", locale="ar"))
    return Web(project)


def pings(project, at: str, *names: str) -> None:
    project.events(*({"customer": n, "event": "ping", "at": at} for n in names))


# -- the preference centre ---------------------------------------------------------------------


def test_the_preference_page_shows_topics_in_the_customers_language(web):
    english = web.client.get(web.link("preferences", "ann"))
    arabic = web.client.get(web.link("preferences", "sara"))
    assert english.status_code == arabic.status_code == 200
    assert '<html lang="en" dir="ltr">' in english.text and "> News</label>" in english.text
    assert '<html lang="ar" dir="rtl">' in arabic.text and "> الأخبار</label>" in arabic.text
    assert "حفظ" in arabic.text  # the page's own words too, not only the topic titles
    assert "<script" not in english.text  # usable without JavaScript


def test_customers_with_the_same_choices_each_get_a_page_with_their_own_link_and_form_token(web):
    web.project.customers(customer("bob"))
    pages = {}
    for name in ("ann", "bob"):
        client = TestClient(web.client.app)  # a browser of their own: their own CSRF cookie
        link = web.link("preferences", name)
        page = client.get(link).text
        action = re.search(r'<form method="post" action="([^"]+)"', page).group(1)
        pages[name] = (action, re.search(r'name="csrf" value="([^"]+)"', page).group(1), page)
        assert action == link
        unsubscribe = client.get(web.link("unsubscribe", name, "news")).text
        assert re.search(r'href="(/preferences/[^"]+)"', unsubscribe).group(1) == link
    assert pages["ann"][1] != pages["bob"][1]
    assert "\ue000" not in pages["ann"][2] + pages["bob"][2]  # no mark left unfilled


def test_switching_a_topic_off_is_stored_with_time_and_source_and_the_next_tick_skips_it(web):
    project = web.project
    page = web.link("preferences", "ann")
    form = web.form(page)
    assert sorted(form["topic"]) == ["news", "offers"]
    saved = web.client.post(page, data={**form, "topic": ["offers"]}, follow_redirects=False)
    assert saved.status_code == 303 and saved.headers["location"].endswith("?saved=1")
    assert "Your preferences are saved." in web.client.get(saved.headers["location"]).text
    assert web.consents("ann") == [("unsubscribe", "news", "preference_centre")]
    assert project.query("SELECT subscribed, source FROM subscription WHERE topic = 'news'") == [
        (0, "preference_centre")
    ]
    pings(project, "2026-03-01T10:00:00Z", "ann")
    project.tick("2026-03-01T10:00:00Z")
    assert project.sent("news") == [] and project.sent("offers") == [("ann", 1)]


def test_frequency_and_language_choices_apply_from_the_next_tick(web):
    project = web.project
    page = web.link("preferences", "ann")
    web.client.post(page, data={**web.form(page), "frequency": "weekly", "locale": "ar"})
    assert web.consents("ann") == [
        ("frequency:weekly", None, "preference_centre"),
        ("locale:ar", None, "preference_centre"),
    ]
    assert '<html lang="ar" dir="rtl">' in web.client.get(page).text
    pings(project, "2026-03-01T10:00:00Z", "ann")
    project.tick("2026-03-01T10:00:00Z")
    # one marketing email a week: the second campaign's email waits for the cap
    assert len(project.sent()) == 1
    assert ("deferred", "frequency_cap") in [(s[3], s[4]) for s in project.sends()]


def test_unsubscribe_from_everything_and_back(web):
    project = web.project
    page = web.link("preferences", "ann")
    web.client.post(page, data={**web.form(page), "unsubscribe_all": "yes"})
    assert "You are unsubscribed from all marketing emails" in web.client.get(page).text
    pings(project, "2026-03-01T10:00:00Z", "ann")
    project.tick("2026-03-01T10:00:00Z")
    assert project.sent() == []
    form = web.form(page)
    del form["unsubscribe_all"]
    web.client.post(page, data=form)
    assert [c[0] for c in web.consents("ann")] == ["unsubscribe_all", "resubscribe_all"]


def test_saving_an_unchanged_form_records_nothing(web):
    page = web.link("preferences", "ann")
    assert web.client.post(page, data=web.form(page), follow_redirects=False).status_code == 303
    assert web.consents("ann") == []


def test_a_form_without_its_csrf_token_or_with_another_browsers_is_refused(web):
    page = web.link("preferences", "ann")
    form = web.form(page)
    missing = web.client.post(page, data={k: v for k, v in form.items() if k != "csrf"})
    other_browser = TestClient(web.client.app)
    other_browser.get(page)  # has a CSRF cookie of its own
    foreign = other_browser.post(page, data={**form, "topic": []})
    no_cookie = TestClient(web.client.app).post(page, data={**form, "topic": []})
    assert missing.status_code == foreign.status_code == no_cookie.status_code == 403
    assert "This form has expired" in missing.text
    assert web.consents("ann") == []


def test_values_the_form_never_offers_are_refused(web):
    page = web.link("preferences", "ann")
    form = web.form(page)
    assert web.client.post(page, data={**form, "frequency": "hourly"}).status_code == 400
    assert web.client.post(page, data={**form, "locale": "xx"}).status_code == 400
    assert web.consents("ann") == []


# -- tokens ------------------------------------------------------------------------------------


def test_forged_altered_foreign_and_orphan_tokens_all_get_the_same_404(web):
    good = web.links.token("preferences", web.id_of("ann"))
    payload, signature = good.split(".")
    altered = base64.urlsafe_b64encode(json.dumps([web.id_of("sara"), None]).encode()).decode().rstrip("=")
    tokens = {
        "forged": "not-a-token",
        "altered": f"{altered}.{signature}",
        "foreign purpose": web.links.token("confirm", web.id_of("ann")),
        "no such customer": web.links.token("preferences", 99999),
        "other secret": f"{payload}.{signature[::-1]}",
    }
    pages = {name: web.client.get(f"/preferences/{token}") for name, token in tokens.items()}
    assert {p.status_code for p in pages.values()} == {404}
    assert len({p.text for p in pages.values()}) == 1  # no hint of which case it was
    for purpose in ("unsubscribe", "confirm"):
        assert web.client.get(f"/{purpose}/{tokens['no such customer']}").status_code == 404
        assert web.client.get(f"/{purpose}/{good}").status_code == 404
    assert web.client.post(f"/unsubscribe/{good}", data={"List-Unsubscribe": "One-Click"}).status_code == 404
    assert web.consents("ann") == []


def test_tokens_carry_no_personal_data(web):
    token = web.links.token("unsubscribe", web.id_of("ann"), "news")
    payload = base64.urlsafe_b64decode(token.split(".")[0] + "==").decode()
    assert "ann" not in payload.lower() and "example.com" not in payload


def test_links_signed_with_an_old_secret_still_work_after_rotation(web, monkeypatch):
    old_link = web.link("preferences", "ann")  # signed with test-secret
    web.project.config(old_secret_keys_env="LIFECYCLE_OLD_SECRETS")
    monkeypatch.setenv("LIFECYCLE_SECRET", "new-secret")
    monkeypatch.setenv("LIFECYCLE_OLD_SECRETS", "test-secret")
    rotated = Web(web.project)
    assert rotated.client.get(old_link).status_code == 200
    new_link = rotated.link("preferences", "ann")
    assert new_link != old_link
    monkeypatch.delenv("LIFECYCLE_OLD_SECRETS")
    after_retirement = Web(web.project)
    assert after_retirement.client.get(old_link).status_code == 404
    assert after_retirement.client.get(new_link).status_code == 200  # new links were signed with the new key


# -- one-click unsubscribe ---------------------------------------------------------------------


def test_one_click_unsubscribe_needs_no_cookie_and_repeating_it_changes_nothing(web):
    link = web.link("unsubscribe", "sara", "news")
    first = TestClient(web.client.app).post(link, data={"List-Unsubscribe": "One-Click"})
    again = TestClient(web.client.app).post(link, data={"List-Unsubscribe": "One-Click"})
    assert first.status_code == again.status_code == 200
    assert "set-cookie" not in first.headers
    assert "لن تصلك بعد الآن رسائل عن «الأخبار»" in first.text and 'dir="rtl"' in first.text
    assert web.consents("sara") == [("unsubscribe", "news", "one_click")]
    pings(web.project, "2026-03-01T10:00:00Z", "sara")
    web.project.tick("2026-03-01T10:00:00Z")
    assert web.project.sent("news") == [] and web.project.sent("offers") == [("sara", 1)]


def test_the_unsubscribe_page_asks_and_offers_the_preference_centre_but_changes_nothing(web):
    page = web.client.get(web.link("unsubscribe", "ann", "news"))
    assert page.status_code == 200
    assert "Stop emails about “News”?" in page.text
    assert 'name="List-Unsubscribe" value="One-Click"' in page.text
    preferences = re.search(r'href="(/preferences/[^"]+)"', page.text).group(1)
    assert web.client.get(preferences).status_code == 200
    assert web.consents("ann") == []


def test_one_click_unsubscribe_also_takes_the_body_as_multipart_form_data(web):
    response = web.client.post(web.link("unsubscribe", "ann", "news"), files={"List-Unsubscribe": (None, "One-Click")})
    assert response.status_code == 200
    assert response.request.headers["content-type"].startswith("multipart/form-data")
    assert web.consents("ann") == [("unsubscribe", "news", "one_click")]


def test_a_one_click_post_without_the_rfc_8058_body_is_refused(web):
    link = web.link("unsubscribe", "ann", "news")
    assert web.client.post(link, data={"something": "else"}).status_code == 400
    assert web.consents("ann") == []


def test_an_unsubscribe_link_without_a_topic_unsubscribes_from_everything(web):
    web.client.post(web.link("unsubscribe", "ann"), data={"List-Unsubscribe": "One-Click"})
    assert web.consents("ann") == [("unsubscribe_all", None, "one_click")]


# -- double opt-in -----------------------------------------------------------------------------


def test_the_confirm_link_records_consent_once_and_starts_the_welcome(web):
    project = web.project
    project.config(double_opt_in=True)
    project.campaign(
        "welcome",
        """
type: marketing
topic: news
trigger: {event: confirmed}
steps: [{template: plain, subject: Welcome}]
""",
    )
    pings(project, "2026-03-01T10:00:00Z", "ann")
    project.tick("2026-03-01T10:00:00Z")
    assert project.sent() == []  # marketing waits for the confirmation
    link = web.link("confirm", "ann")
    first, second = web.client.get(link), web.client.get(link)
    assert first.status_code == second.status_code == 200
    assert "Your email address is confirmed." in first.text
    assert web.consents("ann") == [("confirm", None, "confirm_link")]
    assert project.query("SELECT confirmed_source FROM customer WHERE external_id = 'ann'") == [("confirm_link",)]
    assert project.query("SELECT name, uid FROM event WHERE name = 'confirmed'") == [
        ("confirmed", f"confirmed:{web.id_of('ann')}")
    ]
    project.tick(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60)))
    assert project.sent("welcome") == [("ann", 1)]


# -- guards on every request -------------------------------------------------------------------


def test_responses_carry_security_headers(web):
    for response in (
        web.client.get(web.link("preferences", "ann")),
        web.client.get("/nope"),
        web.client.get("/healthz"),
    ):
        headers = response.headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["cache-control"] == "no-store"
    cookie = TestClient(web.client.app).get(web.link("preferences", "ann")).headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


def test_oversize_bodies_are_refused_whether_announced_or_streamed(web):
    page = web.link("preferences", "ann")
    announced = web.client.post(page, data={**web.form(page), "padding": "x" * 20_000})
    streamed = web.client.post(
        "/api/events",
        content=(b"[" + b" " * 1024 * 1024 for _ in range(6)),
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert announced.status_code == streamed.status_code == 413
    assert web.consents("ann") == []


# -- the ingest API ----------------------------------------------------------------------------


def test_the_api_needs_one_of_the_bearer_keys(web):
    assert web.api("events", [], key="wrong").status_code == 401
    assert web.client.post("/api/events", content="[]").status_code == 401
    assert web.api("events", [], key="other-key").status_code == 200


def test_malformed_json_is_a_clean_400(web):
    response = web.api("events", b'[{"customer": "ann",')
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]


def test_a_list_with_bad_items_is_refused_whole_naming_each(web):
    response = web.api(
        "customers",
        [customer("new1"), {"id": "new2", "email": "not-an-email"}, "text", customer("new3", timezone="Mars/Base")],
    )
    assert response.status_code == 422
    items = response.json()["items"]
    assert [i["index"] for i in items] == [1, 2, 3]
    assert "not valid" in items[0]["reason"] and "IANA" in items[2]["reason"]
    events = web.api(
        "events",
        [
            {"customer": "ann", "event": "ping", "at": "2026-03-01T10:00:00Z"},
            {"customer": "nobody", "event": "ping", "at": "2026-03-01T10:00:00Z"},
        ],
    )
    assert events.status_code == 422
    assert events.json()["items"] == [{"index": 1, "reason": "customer 'nobody' does not exist"}]
    assert web.project.query("SELECT count(*) FROM customer WHERE external_id LIKE 'new%'") == [(0,)]
    assert web.project.query("SELECT count(*) FROM event") == [(0,)]


def test_the_api_stores_customers_and_events_and_a_repeat_stores_nothing_twice(web):
    assert web.api("customers", customer("bob", topics={"news": False})).json() == {"stored": 1, "skipped": 0}
    batch = [{"id": f"e{n}", "customer": "bob", "event": "ping", "at": "2026-03-01T10:00:00Z"} for n in range(3)]
    assert web.api("events", batch).json() == {"stored": 3, "skipped": 0}
    assert web.api("events", batch).json() == {"stored": 0, "skipped": 3}
    assert web.project.query("SELECT count(*) FROM event") == [(3,)]
    assert web.consents("bob") == [("unsubscribe", "news", "api")]


# -- the SendGrid webhook ----------------------------------------------------------------------


def signed_post(web, events, timestamp: int | None = None, key=SIGNING_KEY):
    body = json.dumps(events).encode()
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = base64.b64encode(key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
    return web.client.post(
        "/webhooks/sendgrid",
        content=body,
        headers={"X-Twilio-Email-Event-Webhook-Signature": signature, "X-Twilio-Email-Event-Webhook-Timestamp": stamp},
    )


def sent_ids(web) -> dict[str, int]:
    pings(web.project, "2026-03-01T10:00:00Z", "ann", "sara")
    web.project.tick("2026-03-01T10:00:00Z")
    rows = web.project.query(
        "SELECT c.external_id, s.id FROM send s JOIN customer c ON c.id = s.customer_id WHERE s.campaign = 'news'"
    )
    return dict(rows)


def test_a_signed_webhook_records_events_suppresses_and_a_replay_changes_nothing(web):
    sends = sent_ids(web)
    events = [
        {
            "event": "delivered",
            "email": "ann@example.com",
            "timestamp": 1772359200,
            "sg_event_id": "d1",
            "send_id": str(sends["ann"]),
        },
        {
            "event": "open",
            "email": "ann@example.com",
            "timestamp": 1772359300,
            "sg_event_id": "o1",
            "send_id": str(sends["ann"]),
        },
        {
            "event": "click",
            "email": "ann@example.com",
            "timestamp": 1772359400,
            "sg_event_id": "c1",
            "send_id": str(sends["ann"]),
        },
        {
            "event": "bounce",
            "type": "bounce",
            "email": "sara@example.com",
            "timestamp": 1772359200,
            "sg_event_id": "b1",
            "send_id": str(sends["sara"]),
        },
        {
            "event": "bounce",
            "type": "blocked",
            "email": "ann@example.com",
            "sg_event_id": "b2",
            "send_id": str(sends["ann"]),
        },
        {"event": "processed", "email": "ann@example.com", "sg_event_id": "p1", "send_id": str(sends["ann"])},
    ]
    first = signed_post(web, events)
    assert first.status_code == 200 and first.json() == {"recorded": 5, "suppressed": 1}
    replay = signed_post(web, events)
    assert replay.json() == {"recorded": 0, "suppressed": 0}
    assert sorted(web.project.query("SELECT kind FROM delivery")) == [
        ("bounce",),
        ("bounce",),
        ("click",),
        ("delivered",),
        ("open",),
    ]
    assert web.project.query("SELECT email, reason FROM suppression") == [("sara@example.com", "bounce")]


@pytest.mark.parametrize(
    "event, reason",
    [
        ({"event": "dropped", "reason": "Invalid"}, "invalid"),
        ({"event": "spamreport"}, "spamreport"),
        ({"event": "unsubscribe"}, "unsubscribe"),
        ({"event": "dropped", "reason": "Invalid SMTPAPI header"}, None),
    ],
)
def test_webhook_events_that_suppress(web, event, reason):
    signed_post(web, [{**event, "email": "Ann@Example.com", "sg_event_id": "x1", "send_id": "12345"}])
    expected = [("ann@example.com", reason)] if reason else []
    assert web.project.query("SELECT email, reason FROM suppression") == expected


def test_unsigned_forged_and_stale_webhooks_are_refused(web):
    events = [{"event": "spamreport", "email": "ann@example.com", "sg_event_id": "s1"}]
    unsigned = web.client.post("/webhooks/sendgrid", content=json.dumps(events))
    stale = signed_post(web, events, timestamp=int(time.time()) - 3600)
    foreign = signed_post(web, events, key=ec.generate_private_key(ec.SECP256R1()))
    garbage = web.client.post(
        "/webhooks/sendgrid",
        content=json.dumps(events),
        headers={"X-Twilio-Email-Event-Webhook-Signature": "%%%", "X-Twilio-Email-Event-Webhook-Timestamp": "12ab"},
    )
    assert {r.status_code for r in (unsigned, stale, foreign, garbage)} == {403}
    assert web.project.query("SELECT count(*) FROM suppression") == [(0,)]


def test_a_signed_but_malformed_webhook_body_is_a_clean_400(web):
    stamp = str(int(time.time()))
    body = b'{"event": '
    signature = base64.b64encode(SIGNING_KEY.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
    response = web.client.post(
        "/webhooks/sendgrid",
        content=body,
        headers={"X-Twilio-Email-Event-Webhook-Signature": signature, "X-Twilio-Email-Event-Webhook-Timestamp": stamp},
    )
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]
    assert signed_post(web, {"event": "open"}).status_code == 400  # an object, not a list


# -- operators ---------------------------------------------------------------------------------


def test_health_and_metrics(web):
    assert web.client.get("/healthz").json() == {"status": "ok"}
    web.client.get(web.link("preferences", "ann"))
    metrics = web.client.get("/metrics").text
    assert (
        'lifecycle_http_request_duration_seconds_count{method="GET",route="/preferences/{token}",status="200"}'
        in metrics
    )
    assert "lifecycle_tick_duration_seconds_count" in metrics  # the engine's own, same registry


# -- the dashboard -----------------------------------------------------------------------------


def test_the_dashboard_needs_a_key_and_shows_the_report_offline(web):
    assert web.client.get("/dashboard").status_code == 401
    assert web.client.get("/dashboard", headers={"Authorization": "Bearer wrong"}).status_code == 401
    page = web.client.get("/dashboard", headers={"Authorization": f"Bearer {API_KEY}"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "http" not in policy  # nothing is loaded from anywhere
    assert "news" in page.text and "offers" in page.text  # every campaign has its rows
    assert "<script src=" not in page.text  # the charting library is inline, for offline use
