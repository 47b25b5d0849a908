"""Amazon SES events through SNS (`POST /webhooks/ses`): the SNS signature check and the parser.

A post is accepted only when it comes from a topic config lists (`sender.ses.topic_arns`: anyone
can sign posts with a topic of their own), is signed (SignatureVersion 1, SHA1, or 2, SHA256) by the
certificate at its SigningCertURL, an https URL on an `sns.<region>.amazonaws.com` host, and is at
most MAX_AGE old. A SubscriptionConfirmation is confirmed by fetching its SubscribeURL (on such a
host too). A Notification carries one SES event in `Message`; it finds its send by the message's
`X-Lifecycle-Send-Id` header or its `send_id` tag, and is known again by the SNS MessageId.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
import urllib.request
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeGuard
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from engine.delivery.events import EventType, ProviderEvent, RejectReason
from engine.web.bodies import BadJson, loads
from engine.web.services import Services
from engine.web.webhooks.flow import BadPost, send_id_of

MAX_AGE = 3600  # seconds: SNS retries for about an hour; an older post is a replay
MAX_AHEAD = 300  # seconds a post's Timestamp may be ahead of our clock
FETCH_TIMEOUT = 10.0
MAX_CERT = 64 * 1024  # bytes; a signing certificate is about 2 KB
SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com")

# The fields each kind of SNS message signs, in this order; a field it lacks is left out.
SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}

# SES's event types that are recorded (eventType from a configuration set, notificationType from
# an identity's notifications); Send, Rendering Failure, DeliveryDelay and the rest are not.
TYPES = {
    "Delivery": EventType.DELIVERED,
    "Open": EventType.OPENED,
    "Click": EventType.CLICKED,
    "Bounce": EventType.BOUNCED,
    "Complaint": EventType.COMPLAINED,
    "Reject": EventType.REJECTED,
}
# Where each event type lists the addresses it is about, and under which key.
RECIPIENTS = {"Bounce": ("bouncedRecipients", "emailAddress"), "Complaint": ("complainedRecipients", "emailAddress")}


def https_get(url: str) -> bytes:
    """GET an SNS URL (already checked to be https on an SNS host)."""
    with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as response:
        data: bytes = response.read(MAX_CERT)
        return data


# How SNS URLs are fetched, and the signing keys already fetched; tests put their own in.
fetcher: Callable[[str], bytes] = https_get
KEYS: dict[str, rsa.RSAPublicKey] = {}


def sns_url(url: Any) -> TypeGuard[str]:
    """An https URL on an SNS host, with no port or user of its own."""
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    return parts.scheme == "https" and SNS_HOST.fullmatch(parts.netloc.lower()) is not None


def signing_key(url: str, now: float) -> rsa.RSAPublicKey | None:
    """The RSA key of the certificate at `url`, fetched once; None when it cannot be had or is not valid now."""
    if url not in KEYS:
        try:
            certificate = x509.load_pem_x509_certificate(fetcher(url))
        except (OSError, ValueError):
            return None
        key = certificate.public_key()
        valid = certificate.not_valid_before_utc.timestamp() <= now <= certificate.not_valid_after_utc.timestamp()
        if not isinstance(key, rsa.RSAPublicKey) or not valid:
            return None
        KEYS[url] = key
    return KEYS[url]


def string_to_sign(message: Mapping[str, Any]) -> bytes | None:
    fields = SIGNED_FIELDS.get(str(message.get("Type")))
    if fields is None or not all(isinstance(message.get(f, ""), str) for f in fields):
        return None
    return "".join(f"{name}\n{message[name]}\n" for name in fields if name in message).encode("utf-8")


def signed(message: Any, topics: list[str], now: float) -> bool:
    """A fresh SNS message from one of `topics`, signed by SNS."""
    if not isinstance(message, dict) or message.get("TopicArn") not in topics:
        return False
    stamp, algorithm = _when(message.get("Timestamp")), HASHES.get(str(message.get("SignatureVersion")))
    data, url = string_to_sign(message), message.get("SigningCertURL")
    if stamp is None or not -MAX_AHEAD <= now - stamp.timestamp() <= MAX_AGE or algorithm is None or data is None:
        return False
    if not sns_url(url) or not isinstance(message.get("Signature"), str):
        return False
    key = signing_key(url, now)
    try:
        signature = base64.b64decode(message["Signature"], validate=True)
        if key is None:
            return False
        key.verify(signature, data, padding.PKCS1v15(), algorithm())
    except (binascii.Error, InvalidSignature):
        return False
    return True


def verify(s: Services, headers: Mapping[str, str], body: bytes) -> bool:
    try:
        message = loads(body)
    except BadJson:
        return False
    return signed(message, s.config.sender.ses.topic_arns, time.time())


def parse(body: bytes) -> list[ProviderEvent]:
    """The notification's events; a subscription confirmation is confirmed and records none."""
    try:
        message = loads(body)
    except BadJson as exc:
        raise BadPost(str(exc)) from None
    kind = message.get("Type") if isinstance(message, dict) else None
    if kind == "SubscriptionConfirmation":
        confirm(message.get("SubscribeURL"))
        return []
    if kind != "Notification":
        return []
    try:
        event = json.loads(message.get("Message", ""))
    except (TypeError, ValueError):
        raise BadPost("Message is not an SES event in JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("mail"), dict):
        raise BadPost("Message is not an SES event (no mail object)")
    return parse_event(event, str(message.get("MessageId") or "") or None)


def confirm(url: Any) -> None:
    if not sns_url(url):
        raise BadPost("SubscribeURL is not an https URL on an SNS host")
    try:
        fetcher(url)
    except OSError as exc:
        raise BadPost(f"could not confirm the subscription: {exc}") from None


def parse_event(event: dict[str, Any], message_id: str | None) -> list[ProviderEvent]:
    """One SES event as neutral ones, one for each address it is about; none for a kind not recorded."""
    kind = event.get("eventType") or event.get("notificationType")
    if not isinstance(kind, str) or kind not in TYPES:
        return []
    detail = event.get(kind[0].lower() + kind[1:])
    detail = detail if isinstance(detail, dict) else {}
    addresses = recipients(kind, event["mail"], detail)
    return [
        ProviderEvent(
            type=TYPES[kind],
            provider_kind=kind if kind != "Bounce" else f"Bounce/{detail.get('bounceType')}",
            send_id=send_id(event["mail"]),
            provider_event_id=(message_id if len(addresses) < 2 else f"{message_id}/{address}") if message_id else None,
            at=_when(detail.get("timestamp") or event["mail"].get("timestamp")),
            email=address,
            hard=kind == "Bounce" and detail.get("bounceType") == "Permanent",
            reject_reason=RejectReason.OTHER if kind == "Reject" else None,  # SES rejects for content (a virus)
        )
        for address in addresses
    ]


def recipients(kind: str, mail: dict[str, Any], detail: dict[str, Any]) -> list[str | None]:
    """The addresses the event is about: those a bounce or complaint names, else the message's."""
    listed, key = RECIPIENTS.get(kind, ("", ""))
    named = [str(r[key]) for r in detail.get(listed) or [] if isinstance(r, dict) and r.get(key)] if listed else []
    destination = mail.get("destination")
    to = [str(a) for a in destination if a] if isinstance(destination, list) else []
    found: list[str | None] = [*(named or to[:1])]
    return found or [None]


def send_id(mail: dict[str, Any]) -> int | None:
    """From the X-Lifecycle-Send-Id header SES echoes back, else from the send_id tag."""
    headers = mail.get("headers")
    for header in headers if isinstance(headers, list) else []:
        if isinstance(header, dict) and str(header.get("name", "")).lower() == "x-lifecycle-send-id":
            return _stripped_id(header.get("value"))
    tags = mail.get("tags")
    tagged = tags.get("send_id") if isinstance(tags, dict) else None
    return _stripped_id(tagged[0]) if isinstance(tagged, list) and tagged else None


def _stripped_id(value: Any) -> int | None:
    return send_id_of(str(value).strip())


def _when(value: Any) -> datetime | None:
    """An ISO 8601 time (SES and SNS write UTC with a Z); one without a zone is taken as UTC."""
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
