"""SendGrid's signed Event Webhook (`POST /webhooks/sendgrid`): its signature check and its parser.

A post is accepted only with a valid ECDSA signature over timestamp + raw body and a timestamp
at most MAX_AGE old (a captured post cannot be replayed later). Each event finds its send
through the `send_id` custom argument the SendGrid sender attaches (SendGrid returns custom
arguments as top-level fields of the event), and is known again by its `sg_event_id`. Bounces
(not blocks), invalid-address drops, spam reports and unsubscribes suppress the address.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from typing import Any

from sendgrid.helpers.eventwebhook import EventWebhook

from engine.config.settings import Config
from engine.delivery.events import EventType, ProviderEvent, RejectReason
from engine.errors import ConfigError, Problem
from engine.web.bodies import BadJson, loads
from engine.web.services import Services
from engine.web.webhooks.flow import BadPost, send_id_of, unix_time

SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
MAX_AGE = 300  # seconds, either way, between SendGrid's timestamp and our clock
STAMP = re.compile(r"[0-9]{1,12}")  # unix seconds; no 400-digit (or non-ASCII) number reaches int()

# SendGrid's events that are recorded; the others (processed, deferred, group unsubscribes, ...) are not.
TYPES = {
    "delivered": EventType.DELIVERED,
    "open": EventType.OPENED,
    "click": EventType.CLICKED,
    "bounce": EventType.BOUNCED,
    "dropped": EventType.REJECTED,
    "spamreport": EventType.COMPLAINED,
    "unsubscribe": EventType.UNSUBSCRIBED,
}
# `dropped` reasons that say the address itself must not be mailed; other drops (e.g. a bad
# SMTPAPI header) are about the request, not the recipient.
DROP_REASONS = {
    "invalid": RejectReason.INVALID,
    "bounced address": RejectReason.BOUNCED,
    "spam reporting address": RejectReason.SPAM,
    "unsubscribed address": RejectReason.UNSUBSCRIBED,
}


def verifier(config: Config) -> EventWebhook | None:
    """The verifier for the public key SendGrid shows under Mail Settings (base64 DER), from the
    environment variable config names; None when it is unset."""
    env = config.sender.sendgrid.webhook_public_key_env
    key = os.environ.get(env, "").strip()
    if not key:
        return None
    try:
        return EventWebhook(key)
    except ValueError:
        raise ConfigError(
            [
                Problem(
                    str(config.root / "config.yaml"),
                    1,
                    1,
                    f"sender.sendgrid.webhook_public_key_env: {env} does not hold an EC public key "
                    "(paste the verification key SendGrid shows, without PEM lines)",
                )
            ]
        ) from None


def signed(webhook: EventWebhook | None, body: bytes, signature: str | None, timestamp: str | None, now: float) -> bool:
    """A fresh post signed by SendGrid's key."""
    if webhook is None or not signature or not timestamp or not STAMP.fullmatch(timestamp):
        return False
    if abs(now - int(timestamp)) > MAX_AGE:
        return False
    try:
        return bool(webhook.verify_signature(body.decode("utf-8"), signature, timestamp))
    except ValueError:  # not UTF-8, not base64, or not a DER signature
        return False


def verify(s: Services, headers: Mapping[str, str], body: bytes) -> bool:
    return signed(s.webhook, body, headers.get(SIGNATURE), headers.get(TIMESTAMP), time.time())


def parse(body: bytes) -> list[ProviderEvent]:
    """The post's recorded events, in order."""
    try:
        events = loads(body)
    except BadJson as exc:
        raise BadPost(str(exc)) from None
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise BadPost("the body must be a list of event objects")
    return [parsed for event in events if (parsed := parse_event(event))]


def parse_event(event: dict[str, Any]) -> ProviderEvent | None:
    """One SendGrid event as a neutral one; None for a kind that is not recorded."""
    kind = event.get("event")
    if not isinstance(kind, str) or kind not in TYPES:
        return None
    neutral = TYPES[kind]
    return ProviderEvent(
        type=neutral,
        provider_kind=kind,
        send_id=send_id_of(event.get("send_id")),
        provider_event_id=str(event["sg_event_id"]) if event.get("sg_event_id") else None,
        at=unix_time(event.get("timestamp")),
        email=str(event["email"]) if event.get("email") else None,
        hard=neutral is EventType.BOUNCED and event.get("type") != "blocked",  # a block is temporary
        reject_reason=_drop_reason(event) if neutral is EventType.REJECTED else None,
    )


def _drop_reason(event: dict[str, Any]) -> RejectReason:
    return DROP_REASONS.get(str(event.get("reason", "")).strip().lower(), RejectReason.OTHER)
