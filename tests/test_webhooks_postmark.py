"""Postmark's webhooks (engine/web/webhooks/postmark.py): each record as the provider-neutral event
it records, and the route's HTTP Basic credentials check, through the ASGI test client on a real store."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from conftest import customer
from starlette.testclient import TestClient

from engine.config.settings import load_config
from engine.delivery.events import EventType, ProviderEvent, RejectReason
from engine.web import create_app
from engine.web.webhooks.flow import BadPost
from engine.web.webhooks.postmark import parse, parse_record

WHEN = "2026-03-01T10:00:00.1234567Z"
AT = datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=UTC)
BASE = {"MessageID": "m-1", "Recipient": "ann@example.com", "Metadata": {"send_id": "7"}}
BOUNCE = {"ID": 42, "MessageID": "m-1", "Email": "ann@example.com", "Metadata": {"send_id": "7"}, "BouncedAt": WHEN}


def neutral(event_type: EventType, kind: str, event_id: str, **fields) -> ProviderEvent:
    defaults = {"send_id": 7, "provider_event_id": event_id, "at": AT, "email": "ann@example.com"}
    return ProviderEvent(event_type, kind, **(defaults | fields))


def bounce(kind: str) -> dict:
    return BOUNCE | {"RecordType": "Bounce", "Type": kind}


def change(**fields) -> dict:
    return BASE | {"RecordType": "SubscriptionChange", "ChangedAt": WHEN, "SuppressSending": True} | fields


@pytest.mark.parametrize(
    "record, expected",
    [
        (
            BASE | {"RecordType": "Delivery", "DeliveredAt": WHEN},
            neutral(EventType.DELIVERED, "Delivery", f"m-1:Delivery:{WHEN}"),
        ),
        (
            BASE | {"RecordType": "Open", "ReceivedAt": WHEN, "FirstOpen": True},
            neutral(EventType.OPENED, "Open", f"m-1:Open:{WHEN}"),
        ),
        (
            BASE | {"RecordType": "Click", "ReceivedAt": WHEN, "OriginalLink": "https://shop.example.com"},
            neutral(EventType.CLICKED, "Click", f"m-1:Click:{WHEN}"),
        ),
        (bounce("HardBounce"), neutral(EventType.BOUNCED, "Bounce:HardBounce", "Bounce:42", hard=True)),
        (bounce("BadEmailAddress"), neutral(EventType.BOUNCED, "Bounce:BadEmailAddress", "Bounce:42", hard=True)),
        (
            bounce("ManuallyDeactivated"),
            neutral(EventType.BOUNCED, "Bounce:ManuallyDeactivated", "Bounce:42", hard=True),
        ),
        (bounce("SoftBounce"), neutral(EventType.BOUNCED, "Bounce:SoftBounce", "Bounce:42")),
        (bounce("Transient"), neutral(EventType.BOUNCED, "Bounce:Transient", "Bounce:42")),
        (bounce("DnsError"), neutral(EventType.BOUNCED, "Bounce:DnsError", "Bounce:42")),
        (bounce("Blocked"), neutral(EventType.BOUNCED, "Bounce:Blocked", "Bounce:42")),
        (bounce("SpamComplaint"), neutral(EventType.COMPLAINED, "Bounce:SpamComplaint", "Bounce:42")),
        (bounce("Unsubscribe"), neutral(EventType.UNSUBSCRIBED, "Bounce:Unsubscribe", "Bounce:42")),
        (
            bounce("SMTPApiError"),
            neutral(EventType.REJECTED, "Bounce:SMTPApiError", "Bounce:42", reject_reason=RejectReason.OTHER),
        ),
        (bounce("AutoResponder"), None),
        (bounce("AddressChange"), None),
        (bounce("ChallengeVerification"), None),
        (
            BOUNCE | {"RecordType": "SpamComplaint", "Type": "SpamComplaint"},
            neutral(EventType.COMPLAINED, "SpamComplaint", "SpamComplaint:42"),
        ),
        (
            change(SuppressionReason="ManualSuppression"),
            neutral(EventType.UNSUBSCRIBED, "SubscriptionChange", f"m-1:SubscriptionChange:{WHEN}"),
        ),
        (
            change(SuppressionReason="HardBounce"),
            neutral(EventType.BOUNCED, "SubscriptionChange", f"m-1:SubscriptionChange:{WHEN}", hard=True),
        ),
        (
            change(SuppressionReason="SpamComplaint"),
            neutral(EventType.COMPLAINED, "SubscriptionChange", f"m-1:SubscriptionChange:{WHEN}"),
        ),
        (change(SuppressSending=False), None),
        (change(SuppressSending="true"), None),
        (BASE | {"RecordType": "Inbound"}, None),
        (BASE | {"RecordType": ["Open"]}, None),
        (BASE, None),
        # What identifies the send, the event and its time, when it is missing or odd.
        (
            BASE | {"RecordType": "Open", "ReceivedAt": WHEN, "Metadata": {}},
            neutral(EventType.OPENED, "Open", f"m-1:Open:{WHEN}", send_id=None),
        ),
        (
            BASE | {"RecordType": "Open", "ReceivedAt": WHEN, "Metadata": {"send_id": "abc"}},
            neutral(EventType.OPENED, "Open", f"m-1:Open:{WHEN}", send_id=None),
        ),
        (
            BASE | {"RecordType": "Open", "ReceivedAt": WHEN, "Metadata": {"send_id": "9" * 400}},
            neutral(EventType.OPENED, "Open", f"m-1:Open:{WHEN}", send_id=None),
        ),
        (
            BASE | {"RecordType": "Open", "ReceivedAt": WHEN, "Metadata": "7"},
            neutral(EventType.OPENED, "Open", f"m-1:Open:{WHEN}", send_id=None),
        ),
        (BASE | {"RecordType": "Open"}, neutral(EventType.OPENED, "Open", None, at=None)),
        (
            BASE | {"RecordType": "Open", "ReceivedAt": "yesterday"},
            neutral(EventType.OPENED, "Open", "m-1:Open:yesterday", at=None),
        ),
        (
            BASE | {"RecordType": "Open", "ReceivedAt": "2026-03-01T10:00:00"},
            neutral(EventType.OPENED, "Open", "m-1:Open:2026-03-01T10:00:00", at=None),
        ),
        (
            {"RecordType": "Delivery", "DeliveredAt": "2026-03-01T11:00:00.5-01:00"},
            ProviderEvent(
                EventType.DELIVERED, "Delivery", None, None, datetime(2026, 3, 1, 12, 0, 0, 500000, tzinfo=UTC)
            ),
        ),
    ],
)
def test_each_postmark_record_as_a_neutral_event(record, expected):
    assert parse_record(record) == expected


@pytest.mark.parametrize("body", [b'{"RecordType": ', b"[]", b'"Delivery"', b"\xff"])
def test_a_body_postmark_would_never_send_is_a_bad_post(body):
    with pytest.raises(BadPost):
        parse(body)


# -- the route ---------------------------------------------------------------------------------

USER, PASSWORD = "postmark", "s3cret:with-colon"
NEWS = """
type: marketing
topic: news
trigger: {event: ping}
steps: [{template: plain, subject: News}]
"""


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def hook(store_project, monkeypatch):
    """A client of the app, and the ids of the sends to ann and sara."""
    monkeypatch.setenv("POSTMARK_WEBHOOK_USER", USER)
    monkeypatch.setenv("POSTMARK_WEBHOOK_PASSWORD", PASSWORD)
    project = store_project
    project.campaign("news", NEWS)
    project.customers(customer("ann"), customer("sara"))
    project.events(*({"customer": n, "event": "ping", "at": "2026-03-01T10:00:00Z"} for n in ("ann", "sara")))
    project.tick("2026-03-01T10:00:00Z")
    rows = project.query("SELECT c.external_id, s.id FROM send s JOIN customer c ON c.id = s.customer_id")
    client = TestClient(create_app(load_config(project.root / "config.yaml")))
    return project, client, dict(rows)


def post(client, record, headers=None):
    return client.post(
        "/webhooks/postmark", content=json.dumps(record), headers=basic(USER, PASSWORD) | (headers or {})
    )


def test_records_are_recorded_suppress_and_a_replay_changes_nothing(hook):
    project, client, sends = hook
    ann, sara = {"send_id": str(sends["ann"])}, {"send_id": str(sends["sara"])}
    records = [
        {"RecordType": "Delivery", "MessageID": "m-a", "Recipient": "ann@example.com", "DeliveredAt": WHEN},
        {"RecordType": "Open", "MessageID": "m-a", "Recipient": "ann@example.com", "ReceivedAt": WHEN},
        {"RecordType": "Bounce", "Type": "SoftBounce", "ID": 1, "Email": "ann@example.com", "BouncedAt": WHEN},
        {"RecordType": "Bounce", "Type": "HardBounce", "ID": 2, "Email": "sara@example.com", "BouncedAt": WHEN},
    ]
    metadata = [ann, ann, ann, sara]
    answers = [post(client, r | {"Metadata": m}).json() for r, m in zip(records, metadata, strict=True)]
    assert answers == [{"recorded": 1, "suppressed": 0}] * 3 + [{"recorded": 1, "suppressed": 1}]
    replays = [post(client, r | {"Metadata": m}).json() for r, m in zip(records, metadata, strict=True)]
    assert replays == [{"recorded": 0, "suppressed": 0}] * 4
    assert sorted(project.query("SELECT kind FROM delivery")) == [
        ("Bounce:HardBounce",),
        ("Bounce:SoftBounce",),
        ("Delivery",),
        ("Open",),
    ]
    assert project.query("SELECT email, reason FROM suppression") == [("sara@example.com", "bounce")]


@pytest.mark.parametrize(
    "record, reason",
    [
        ({"RecordType": "SpamComplaint", "Type": "SpamComplaint", "ID": 5, "BouncedAt": WHEN}, "spamreport"),
        ({"RecordType": "SubscriptionChange", "SuppressSending": True, "ChangedAt": WHEN}, "unsubscribe"),
        ({"RecordType": "SubscriptionChange", "SuppressSending": False, "ChangedAt": WHEN}, None),
    ],
)
def test_records_that_suppress(hook, record, reason):
    project, client, _ = hook
    post(client, record | {"MessageID": "m-x", "Recipient": "Ann@Example.com", "Metadata": {"send_id": "12345"}})
    expected = [("ann@example.com", reason)] if reason else []
    assert project.query("SELECT email, reason FROM suppression") == expected


def test_missing_or_wrong_credentials_are_refused(hook):
    project, client, _ = hook
    record = {"RecordType": "SpamComplaint", "ID": 9, "Email": "ann@example.com", "BouncedAt": WHEN}
    refused = [
        client.post("/webhooks/postmark", content=json.dumps(record)),
        post(client, record, basic(USER, "wrong")),
        post(client, record, basic("someone", PASSWORD)),
        post(client, record, basic(USER, PASSWORD + "x")),
        post(client, record, basic(USER, "")),
        post(client, record, {"Authorization": "Basic " + base64.b64encode(USER.encode()).decode()}),
        post(client, record, {"Authorization": "Basic %%%"}),
        post(client, record, {"Authorization": f"Bearer {PASSWORD}"}),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused)
    assert project.query("SELECT count(*) FROM suppression") == [(0,)]
    assert post(client, record).json() == {"recorded": 0, "suppressed": 1}  # the right ones pass


def test_without_configured_credentials_every_post_is_refused_and_says_why(hook, monkeypatch):
    project, client, _ = hook
    monkeypatch.delenv("POSTMARK_WEBHOOK_PASSWORD")
    record = {"RecordType": "SpamComplaint", "ID": 9, "Email": "ann@example.com", "BouncedAt": WHEN}
    for headers in ({}, basic(USER, ""), basic(USER, PASSWORD)):
        response = post(client, record, headers)
        assert response.status_code == 403
        assert "POSTMARK_WEBHOOK_PASSWORD" in response.json()["error"]
    assert project.query("SELECT count(*) FROM suppression") == [(0,)]


def test_an_authorised_but_malformed_body_is_a_clean_400(hook):
    _, client, _ = hook
    response = client.post("/webhooks/postmark", content=b'{"RecordType": ', headers=basic(USER, PASSWORD))
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]
    assert post(client, [{"RecordType": "Open"}]).status_code == 400
