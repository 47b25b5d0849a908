"""SendGrid's Event Webhook parser (engine/web/webhooks/sendgrid.py): each SendGrid event as the
provider-neutral event it records, and what the neutral event suppresses."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine.delivery.events import EventType, ProviderEvent, RejectReason
from engine.web.webhooks.flow import BadPost
from engine.web.webhooks.sendgrid import parse, parse_event

STAMP = 1772359200
AT = datetime.fromtimestamp(STAMP, UTC)
BASE = {"email": "ann@example.com", "timestamp": STAMP, "sg_event_id": "ev1", "send_id": "7"}


def neutral(event_type: EventType, kind: str, **fields) -> ProviderEvent:
    """The event BASE with `fields` becomes."""
    defaults = {"send_id": 7, "provider_event_id": "ev1", "at": AT, "email": "ann@example.com"}
    return ProviderEvent(event_type, kind, **(defaults | fields))


@pytest.mark.parametrize(
    "event, expected",
    [
        ({"event": "delivered"}, neutral(EventType.DELIVERED, "delivered")),
        ({"event": "open"}, neutral(EventType.OPENED, "open")),
        ({"event": "click", "url": "https://shop.example.com"}, neutral(EventType.CLICKED, "click")),
        ({"event": "bounce", "type": "bounce"}, neutral(EventType.BOUNCED, "bounce", hard=True)),
        ({"event": "bounce"}, neutral(EventType.BOUNCED, "bounce", hard=True)),
        ({"event": "bounce", "type": "blocked"}, neutral(EventType.BOUNCED, "bounce", hard=False)),
        (
            {"event": "dropped", "reason": "Invalid"},
            neutral(EventType.REJECTED, "dropped", reject_reason=RejectReason.INVALID),
        ),
        (
            {"event": "dropped", "reason": " Bounced Address "},
            neutral(EventType.REJECTED, "dropped", reject_reason=RejectReason.BOUNCED),
        ),
        (
            {"event": "dropped", "reason": "Spam Reporting Address"},
            neutral(EventType.REJECTED, "dropped", reject_reason=RejectReason.SPAM),
        ),
        (
            {"event": "dropped", "reason": "Unsubscribed Address"},
            neutral(EventType.REJECTED, "dropped", reject_reason=RejectReason.UNSUBSCRIBED),
        ),
        (
            {"event": "dropped", "reason": "Invalid SMTPAPI header"},
            neutral(EventType.REJECTED, "dropped", reject_reason=RejectReason.OTHER),
        ),
        ({"event": "dropped"}, neutral(EventType.REJECTED, "dropped", reject_reason=RejectReason.OTHER)),
        ({"event": "spamreport"}, neutral(EventType.COMPLAINED, "spamreport")),
        ({"event": "unsubscribe"}, neutral(EventType.UNSUBSCRIBED, "unsubscribe")),
        ({"event": "open", "send_id": None}, neutral(EventType.OPENED, "open", send_id=None)),
        ({"event": "open", "send_id": "abc"}, neutral(EventType.OPENED, "open", send_id=None)),
        ({"event": "open", "send_id": 12}, neutral(EventType.OPENED, "open", send_id=12)),
        ({"event": "open", "sg_event_id": None}, neutral(EventType.OPENED, "open", provider_event_id=None)),
        ({"event": "open", "sg_event_id": ""}, neutral(EventType.OPENED, "open", provider_event_id=None)),
        ({"event": "open", "timestamp": "yesterday"}, neutral(EventType.OPENED, "open", at=None)),
        ({"event": "open", "timestamp": 10**20}, neutral(EventType.OPENED, "open", at=None)),
        ({"event": "open", "email": None}, neutral(EventType.OPENED, "open", email=None)),
        ({"event": "processed"}, None),
        ({"event": "deferred"}, None),
        ({"event": "group_unsubscribe"}, None),
        ({"event": ["open"]}, None),
    ],
)
def test_each_sendgrid_event_as_a_neutral_one(event, expected):
    assert parse_event(BASE | event) == expected


def test_a_missing_send_id_or_timestamp_is_none():
    assert parse_event({"event": "spamreport", "email": "ann@example.com"}) == ProviderEvent(
        EventType.COMPLAINED, "spamreport", send_id=None, provider_event_id=None, at=None, email="ann@example.com"
    )


@pytest.mark.parametrize(
    "event, outcome, suppression",
    [
        ({"event": "delivered"}, "delivered", None),
        ({"event": "open"}, "opened", None),
        ({"event": "click"}, "clicked", None),
        ({"event": "bounce", "type": "bounce"}, "bounced", "bounce"),
        ({"event": "bounce", "type": "blocked"}, "bounced", None),
        ({"event": "dropped", "reason": "Invalid"}, "bounced", "invalid"),
        ({"event": "dropped", "reason": "Bounced Address"}, "bounced", "bounce"),
        ({"event": "dropped", "reason": "Spam Reporting Address"}, "bounced", "spamreport"),
        ({"event": "dropped", "reason": "Unsubscribed Address"}, "bounced", "unsubscribe"),
        ({"event": "dropped", "reason": "Invalid SMTPAPI header"}, "bounced", None),
        ({"event": "spamreport"}, "complained", "spamreport"),
        ({"event": "unsubscribe"}, "unsubscribed", "unsubscribe"),
    ],
)
def test_what_each_event_marks_and_suppresses(event, outcome, suppression):
    parsed = parse_event(BASE | event)
    assert parsed is not None
    assert (parsed.outcome, parsed.suppression) == (outcome, suppression)


def test_a_post_keeps_its_recorded_events_in_order():
    body = b'[{"event": "open", "send_id": "1"}, {"event": "processed"}, {"event": "click", "send_id": "2"}]'
    assert [(e.type, e.send_id) for e in parse(body)] == [(EventType.OPENED, 1), (EventType.CLICKED, 2)]


@pytest.mark.parametrize(
    "body, error",
    [
        (b'[{"event": ', "the body is not valid JSON: "),
        (b'{"event": "open"}', "the body must be a list of event objects"),
        (b'[{"event": "open"}, "open"]', "the body must be a list of event objects"),
    ],
)
def test_a_body_sendgrid_never_sends_is_a_bad_post(body, error):
    with pytest.raises(BadPost, match=f"^{error}"):
        parse(body)
