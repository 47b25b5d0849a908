"""Mailgun's webhooks (engine/web/webhooks/mailgun.py): each Mailgun event as the provider-neutral
event it records, and through the app the signature check: real HMAC signatures made here, and
bad, stale, replayed and unsigned posts refused."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from datetime import UTC, datetime

import pytest
from conftest import customer
from starlette.testclient import TestClient

from engine.config.settings import load_config
from engine.delivery.events import EventType, ProviderEvent, RejectReason
from engine.web import create_app
from engine.web.webhooks.flow import BadPost
from engine.web.webhooks.mailgun import MAX_AGE, SeenTokens, parse, parse_event

SIGNING_KEY = "key-" + secrets.token_hex(16)  # plays Mailgun's part
STAMP = 1772359200.25
AT = datetime.fromtimestamp(STAMP, UTC)
BASE = {"id": "ev1", "timestamp": STAMP, "recipient": "ann@example.com", "user-variables": {"send_id": "7"}}


def neutral(event_type: EventType, kind: str, **fields) -> ProviderEvent:
    """The event BASE with `fields` becomes."""
    defaults = {"send_id": 7, "provider_event_id": "ev1", "at": AT, "email": "ann@example.com"}
    return ProviderEvent(event_type, kind, **(defaults | fields))


def failed(severity: str, reason: str) -> dict:
    return {"event": "failed", "severity": severity, "reason": reason}


@pytest.mark.parametrize(
    "event, expected",
    [
        ({"event": "delivered"}, neutral(EventType.DELIVERED, "delivered")),
        ({"event": "opened"}, neutral(EventType.OPENED, "opened")),
        ({"event": "clicked", "url": "https://shop.example.com"}, neutral(EventType.CLICKED, "clicked")),
        (failed("permanent", "bounce"), neutral(EventType.BOUNCED, "failed", hard=True)),
        (failed("permanent", "generic"), neutral(EventType.BOUNCED, "failed", hard=True)),
        (failed("permanent", "old"), neutral(EventType.BOUNCED, "failed", hard=False)),
        (failed("temporary", "generic"), neutral(EventType.BOUNCED, "failed", hard=False)),
        (
            failed("permanent", "suppress-bounce"),
            neutral(EventType.REJECTED, "failed", reject_reason=RejectReason.BOUNCED),
        ),
        (
            failed("permanent", "suppress-unsubscribe"),
            neutral(EventType.REJECTED, "failed", reject_reason=RejectReason.UNSUBSCRIBED),
        ),
        (
            failed("permanent", "suppress-complaint"),
            neutral(EventType.REJECTED, "failed", reject_reason=RejectReason.SPAM),
        ),
        ({"event": "complained"}, neutral(EventType.COMPLAINED, "complained")),
        ({"event": "unsubscribed"}, neutral(EventType.UNSUBSCRIBED, "unsubscribed")),
        ({"event": "opened", "user-variables": {}}, neutral(EventType.OPENED, "opened", send_id=None)),
        ({"event": "opened", "user-variables": "x"}, neutral(EventType.OPENED, "opened", send_id=None)),
        ({"event": "opened", "user-variables": {"send_id": "abc"}}, neutral(EventType.OPENED, "opened", send_id=None)),
        ({"event": "opened", "user-variables": {"send_id": 12}}, neutral(EventType.OPENED, "opened", send_id=12)),
        ({"event": "opened", "id": ""}, neutral(EventType.OPENED, "opened", provider_event_id=None)),
        ({"event": "opened", "timestamp": "yesterday"}, neutral(EventType.OPENED, "opened", at=None)),
        ({"event": "opened", "timestamp": 10**20}, neutral(EventType.OPENED, "opened", at=None)),
        ({"event": "opened", "recipient": None}, neutral(EventType.OPENED, "opened", email=None)),
        ({"event": "accepted"}, None),
        ({"event": "rejected"}, None),
        ({"event": "stored"}, None),
        ({"event": ["opened"]}, None),
    ],
)
def test_each_mailgun_event_as_a_neutral_one(event, expected):
    assert parse_event(BASE | event) == expected


@pytest.mark.parametrize(
    "body, error",
    [
        (b'{"event-data": ', "not valid JSON"),
        (b"[]", "event-data"),
        (b'{"signature": {}}', "event-data"),
        (b'{"event-data": []}', "event-data"),
    ],
)
def test_a_body_mailgun_would_never_send_is_a_bad_post(body, error):
    with pytest.raises(BadPost, match=error):
        parse(body)


def test_a_post_holds_one_event():
    body = json.dumps({"signature": {}, "event-data": BASE | {"event": "complained"}}).encode()
    assert parse(body) == [neutral(EventType.COMPLAINED, "complained")]
    assert parse(json.dumps({"event-data": BASE | {"event": "accepted"}}).encode()) == []


def test_tokens_are_forgotten_once_no_post_carrying_them_could_be_fresh():
    seen = SeenTokens()
    assert seen.first_time("a", 1000.0) and seen.first_time("b", 1001.0)
    assert not seen.first_time("a", 1000.0 + 2 * MAX_AGE)
    assert seen.first_time("a", 1000.1 + 2 * MAX_AGE)  # a post this old is refused as stale anyway
    assert list(seen.forget_at) == ["b", "a"]


# -- through the app ---------------------------------------------------------------------------

NEWS = """
type: marketing
topic: news
trigger: {event: ping}
steps: [{template: plain, subject: News}]
"""


@pytest.fixture
def web(store_project, monkeypatch):
    monkeypatch.setenv("MAILGUN_WEBHOOK_SIGNING_KEY", SIGNING_KEY)
    store_project.campaign("news", NEWS)
    store_project.customers(customer("ann"), customer("sara"))
    store_project.client = TestClient(create_app(load_config(store_project.root / "config.yaml")))
    return store_project


def signature(timestamp: int | None = None, token: str | None = None, key: str = SIGNING_KEY) -> dict:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    token = token or secrets.token_hex(25)
    digest = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    return {"timestamp": stamp, "token": token, "signature": digest}


def post(web, event: dict, sign: dict | None = None):
    body = {"event-data": event} if sign is None else {"signature": sign, "event-data": event}
    return web.client.post("/webhooks/mailgun", content=json.dumps(body))


def sent_ids(web) -> dict[str, str]:
    web.events(*({"customer": n, "event": "ping", "at": "2026-03-01T10:00:00Z"} for n in ("ann", "sara")))
    web.tick("2026-03-01T10:00:00Z")
    rows = web.query("SELECT c.external_id, s.id FROM send s JOIN customer c ON c.id = s.customer_id")
    return {name: str(send_id) for name, send_id in rows}


def event(kind: str, event_id: str, send_id: str, email: str = "ann@example.com", **fields) -> dict:
    return {
        "event": kind,
        "id": event_id,
        "timestamp": 1772359200.5,
        "recipient": email,
        "user-variables": {"send_id": send_id},
        **fields,
    }


def test_signed_events_are_recorded_suppress_and_a_replayed_event_changes_nothing(web):
    sends = sent_ids(web)
    answers = [
        post(web, event("delivered", "d1", sends["ann"]), signature()),
        post(web, event("opened", "o1", sends["ann"]), signature()),
        post(web, event("clicked", "c1", sends["ann"]), signature()),
        post(web, event("failed", "b1", sends["sara"], "sara@example.com", severity="permanent"), signature()),
        post(web, event("failed", "b2", sends["ann"], severity="temporary"), signature()),
        post(web, event("accepted", "a1", sends["ann"]), signature()),
    ]
    assert [a.json() for a in answers] == [
        {"recorded": n, "suppressed": s} for n, s in [(1, 0)] * 3 + [(1, 1), (1, 0), (0, 0)]
    ]
    # The same event again, as Mailgun retries it, under a new token: known by its id.
    again = post(web, event("failed", "b1", sends["sara"], "sara@example.com", severity="permanent"), signature())
    assert again.status_code == 200 and again.json() == {"recorded": 0, "suppressed": 0}
    assert sorted(web.query("SELECT kind FROM delivery")) == [
        ("clicked",),
        ("delivered",),
        ("failed",),
        ("failed",),
        ("opened",),
    ]
    assert web.query("SELECT email, reason FROM suppression") == [("sara@example.com", "bounce")]
    clicked = "SELECT c.external_id FROM send s JOIN customer c ON c.id = s.customer_id WHERE s.clicked_at IS NOT NULL"
    assert web.query(clicked) == [("ann",)]
    assert web.query(clicked.replace("clicked_at", "bounced_at") + " ORDER BY 1") == [("ann",), ("sara",)]


@pytest.mark.parametrize(
    "kind, fields, reason",
    [
        ("complained", {}, "spamreport"),
        ("unsubscribed", {}, "unsubscribe"),
        ("failed", {"severity": "permanent", "reason": "suppress-complaint"}, "spamreport"),
        ("failed", {"severity": "permanent", "reason": "suppress-unsubscribe"}, "unsubscribe"),
        ("failed", {"severity": "temporary", "reason": "generic"}, None),
    ],
)
def test_events_that_suppress(web, kind, fields, reason):
    post(web, event(kind, "x1", "12345", "Ann@Example.com", **fields), signature())
    expected = [("ann@example.com", reason)] if reason else []
    assert web.query("SELECT email, reason FROM suppression") == expected


def test_unsigned_forged_stale_and_replayed_posts_are_refused(web):
    complaint = event("complained", "s1", sent_ids(web)["ann"])
    fresh = signature()
    assert post(web, complaint, fresh).json() == {"recorded": 1, "suppressed": 1}
    refused = {
        "unsigned": post(web, complaint),
        "foreign key": post(web, complaint, signature(key="key-someone-else")),
        "bad digest": post(web, complaint, fresh | {"token": secrets.token_hex(25)}),
        "stale": post(web, complaint, signature(timestamp=int(time.time()) - MAX_AGE - 60)),
        "from the future": post(web, complaint, signature(timestamp=int(time.time()) + MAX_AGE + 60)),
        "replayed token": post(web, complaint | {"id": "s2"}, fresh),
        "garbage": post(web, complaint, {"timestamp": "12ab", "token": "t", "signature": "%%%"}),
        "not an object": post(web, complaint, "signed"),
        "no token": post(web, complaint, fresh | {"token": ""}),
        "non-ASCII digest": post(web, complaint, fresh | {"signature": "é" * 64}),
        "not JSON": web.client.post("/webhooks/mailgun", content=b"signature="),
    }
    assert {name: r.status_code for name, r in refused.items()} == dict.fromkeys(refused, 403)
    assert web.query("SELECT count(*) FROM delivery") == [(1,)]  # the first post's


def test_without_a_signing_key_every_post_is_refused(web, monkeypatch):
    monkeypatch.delenv("MAILGUN_WEBHOOK_SIGNING_KEY")
    assert post(web, event("complained", "s1", "1"), signature()).status_code == 403


def test_a_signed_but_malformed_body_is_a_clean_400(web):
    response = post(web, ["not", "an", "object"], signature())
    assert response.status_code == 400 and "event-data" in response.json()["error"]
