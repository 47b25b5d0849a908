"""Postmark's webhooks (`POST /webhooks/postmark`): their credentials check and their parser.

Postmark signs nothing; it sends the HTTP Basic credentials written into the webhook's URL
(`https://user:password@host/webhooks/postmark`). A post is accepted only with the configured
user and password (compared in constant time); with none configured every post is refused, since
an open webhook would let anyone suppress any address. Basic auth cannot tell a replayed post
from a new one, so a replay is recognised by its events instead: each has an id made of
Postmark's record id, or its message id, record type and time, and is stored once.

Postmark posts one record a request. The send is found through the `send_id` Metadata the
Postmark sender attaches, which Postmark returns with every record."""

from __future__ import annotations

import base64
import binascii
import hmac
import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from starlette.exceptions import HTTPException

from engine.delivery.events import EventType, ProviderEvent, RejectReason
from engine.web.bodies import BadJson, loads
from engine.web.services import Services
from engine.web.webhooks.flow import BadPost, send_id_of

# Bounce record types (Postmark's `Type`) as neutral events, with `hard` for a bounced address.
# Unlisted types (auto-responders, address changes, challenge mails, ...) are not recorded.
HARD_BOUNCES = {"HardBounce", "BadEmailAddress", "ManuallyDeactivated"}
SOFT_BOUNCES = {
    "SoftBounce",
    "Transient",
    "DnsError",
    "Blocked",
    "DMARCPolicy",
    "Unknown",
    "SpamNotification",
    "VirusNotification",
}
NOT_SENT = {"SMTPApiError", "TemplateRenderingFailed", "Unconfirmed"}  # Postmark never sent it
# When each record type happened.
TIME_FIELDS = {
    "Delivery": "DeliveredAt",
    "Bounce": "BouncedAt",
    "SpamComplaint": "BouncedAt",
    "Open": "ReceivedAt",
    "Click": "ReceivedAt",
    "SubscriptionChange": "ChangedAt",
}


def credentials(s: Services) -> tuple[bytes, bytes] | None:
    """The configured user and password, or None when either is unset."""
    settings = s.config.sender.postmark
    user, password = os.environ.get(settings.webhook_user_env), os.environ.get(settings.webhook_password_env)
    return (user.encode(), password.encode()) if user and password else None


def authorised(expected: tuple[bytes, bytes], authorization: str | None) -> bool:
    """Do the request's Basic credentials match? Both parts are always compared, in constant time."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    user, colon, password = decoded.partition(b":")
    same_user = hmac.compare_digest(user, expected[0])
    same_password = hmac.compare_digest(password, expected[1])
    return bool(colon) and same_user and same_password


def verify(s: Services, headers: Mapping[str, str], body: bytes) -> bool:
    expected = credentials(s)
    if expected is None:
        settings = s.config.sender.postmark
        raise HTTPException(
            403,
            f"the Postmark webhook is closed: set {settings.webhook_user_env} and {settings.webhook_password_env} "
            "and put them in the webhook's URL",
        )
    return authorised(expected, headers.get("Authorization"))


def parse(body: bytes) -> list[ProviderEvent]:
    """The post's one record as a neutral event; none for a record that is not recorded."""
    try:
        record = loads(body)
    except BadJson as exc:
        raise BadPost(str(exc)) from None
    if not isinstance(record, dict):
        raise BadPost("the body must be one Postmark webhook record (a JSON object)")
    event = parse_record(record)
    return [event] if event else []


def parse_record(record: dict[str, Any]) -> ProviderEvent | None:
    """One Postmark record as a neutral event; None for a kind that is not recorded."""
    kind = record.get("RecordType")
    if not isinstance(kind, str):
        return None
    found = classify(kind, record)
    if found is None:
        return None
    neutral, hard, reason = found
    metadata = record.get("Metadata")
    return ProviderEvent(
        type=neutral,
        provider_kind=kind if kind != "Bounce" else f"Bounce:{record.get('Type')}",
        send_id=send_id_of(metadata.get("send_id")) if isinstance(metadata, dict) else None,
        provider_event_id=_event_id(kind, record),
        at=_when(record.get(TIME_FIELDS.get(kind, ""))),
        email=_text(record.get("Recipient") or record.get("Email")),
        hard=hard,
        reject_reason=reason,
    )


def classify(kind: str, record: dict[str, Any]) -> tuple[EventType, bool, RejectReason | None] | None:
    """(neutral type, hard, reject reason) of a record, or None when it is not recorded."""
    simple = {"Delivery": EventType.DELIVERED, "Open": EventType.OPENED, "Click": EventType.CLICKED}
    if kind in simple:
        return simple[kind], False, None
    if kind == "SpamComplaint":
        return EventType.COMPLAINED, False, None
    if kind == "Bounce":
        return _bounce(str(record.get("Type")))
    if kind == "SubscriptionChange" and record.get("SuppressSending") is True:
        # Postmark suppresses after a hard bounce or a complaint too; those say what happened.
        because = record.get("SuppressionReason")
        if because == "HardBounce":
            return EventType.BOUNCED, True, None
        if because == "SpamComplaint":
            return EventType.COMPLAINED, False, None
        return EventType.UNSUBSCRIBED, False, None
    return None  # including a reactivation (SuppressSending false): the engine keeps its suppression


def _bounce(kind: str) -> tuple[EventType, bool, RejectReason | None] | None:
    if kind in HARD_BOUNCES or kind in SOFT_BOUNCES:
        return EventType.BOUNCED, kind in HARD_BOUNCES, None
    if kind == "SpamComplaint":
        return EventType.COMPLAINED, False, None
    if kind == "Unsubscribe":  # an unsubscribe request mailed to the List-Unsubscribe address
        return EventType.UNSUBSCRIBED, False, None
    if kind in NOT_SENT:
        return EventType.REJECTED, False, RejectReason.OTHER
    return None


def _event_id(kind: str, record: dict[str, Any]) -> str | None:
    """Postmark's record id where it has one (bounces, complaints), else message, type and time."""
    if record.get("ID") not in (None, ""):
        return f"{kind}:{record['ID']}"
    message_id, at = record.get("MessageID"), record.get(TIME_FIELDS.get(kind, ""))
    if not message_id or not at:
        return None
    return f"{message_id}:{kind}:{at}"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _when(value: Any) -> datetime | None:
    """Postmark's ISO 8601 time with its offset, if usable."""
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo else None
