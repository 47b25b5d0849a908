"""Mailgun's signed webhooks (`POST /webhooks/mailgun`): their signature check and their parser.

Mailgun posts one event at a time as `{"signature": {timestamp, token, signature}, "event-data"}`,
signed with HMAC-SHA256 of timestamp + token under the account's webhook signing key. A post is
accepted only with a valid signature, a timestamp at most MAX_AGE from our clock either way, and a
token this process has not seen within that window: a captured post cannot be replayed. Tokens are
remembered in memory, per process; across processes a replayed event still records nothing, since
its `event-data.id` is already in Delivery. Each event finds its send through the user variable
`send_id` the Mailgun sender attaches.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

from engine.delivery.events import EventType, ProviderEvent, RejectReason
from engine.web.bodies import BadJson, loads
from engine.web.services import Services
from engine.web.webhooks.flow import BadPost, send_id_of, unix_time

MAX_AGE = 300  # seconds, either way, between Mailgun's timestamp and our clock
STAMP = re.compile(r"[0-9]{1,12}")  # unix seconds; no 400-digit (or non-ASCII) number reaches int()

# Mailgun's events that are recorded; the others (accepted, rejected by the API, stored) are not.
TYPES = {
    "delivered": EventType.DELIVERED,
    "opened": EventType.OPENED,
    "clicked": EventType.CLICKED,
    "failed": EventType.BOUNCED,
    "complained": EventType.COMPLAINED,
    "unsubscribed": EventType.UNSUBSCRIBED,
}
# A `failed` event with these reasons was never sent: Mailgun's own suppression lists hold the address.
SUPPRESSED = {
    "suppress-bounce": RejectReason.BOUNCED,
    "suppress-unsubscribe": RejectReason.UNSUBSCRIBED,
    "suppress-complaint": RejectReason.SPAM,
}
# A permanent failure for this reason means the retries of temporary failures ran out, not that the
# address is bad: a soft bounce.
RETRIES_EXPIRED = "old"


class SeenTokens:
    """The tokens of accepted posts, kept until no post carrying them could still be fresh."""

    def __init__(self) -> None:
        self.forget_at: dict[str, float] = {}  # in arrival order, so the oldest come first
        self.lock = threading.Lock()

    def first_time(self, token: str, now: float) -> bool:
        """Remember the token; False when it was already seen."""
        with self.lock:
            self._forget(now)
            if token in self.forget_at:
                return False
            self.forget_at[token] = now + 2 * MAX_AGE  # a timestamp up to MAX_AGE ahead stays fresh that long
            return True

    def _forget(self, now: float) -> None:
        """Drop the tokens past their time; they are in arrival order, so only the oldest need a look."""
        while self.forget_at:
            token, at = next(iter(self.forget_at.items()))
            if at >= now:
                return
            del self.forget_at[token]


SEEN = SeenTokens()


def signed(key: str | None, signature: Any, now: float) -> bool:
    """A fresh `signature` object whose HMAC matches under the signing key."""
    if not key or not isinstance(signature, dict):
        return False
    timestamp, token, digest = (signature.get(name) for name in ("timestamp", "token", "signature"))
    if not (isinstance(timestamp, str) and STAMP.fullmatch(timestamp)):
        return False
    if not (isinstance(token, str) and token and isinstance(digest, str)) or abs(now - int(timestamp)) > MAX_AGE:
        return False
    expected = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return digest.isascii() and hmac.compare_digest(expected, digest.lower())


def verify(s: Services, headers: Mapping[str, str], body: bytes) -> bool:
    key = os.environ.get(s.config.sender.mailgun.webhook_signing_key_env, "").strip()
    try:
        signature = loads(body).get("signature")
    except (BadJson, AttributeError):
        return False
    now = time.time()
    return signed(key, signature, now) and SEEN.first_time(signature["token"], now)


def parse(body: bytes) -> list[ProviderEvent]:
    """The post's one event, or none when its kind is not recorded."""
    try:
        post = loads(body)
    except BadJson as exc:
        raise BadPost(str(exc)) from None
    event = post.get("event-data") if isinstance(post, dict) else None
    if not isinstance(event, dict):
        raise BadPost("the body must be an object with an `event-data` object")
    parsed = parse_event(event)
    return [parsed] if parsed else []


def parse_event(event: dict[str, Any]) -> ProviderEvent | None:
    """One Mailgun event as a neutral one; None for a kind that is not recorded."""
    kind = event.get("event")
    if not isinstance(kind, str) or kind not in TYPES:
        return None
    neutral, hard, reason = TYPES[kind], False, None
    if kind == "failed":
        reason = SUPPRESSED.get(str(event.get("reason")))
        neutral = EventType.REJECTED if reason else EventType.BOUNCED
        hard = not reason and event.get("severity") == "permanent" and event.get("reason") != RETRIES_EXPIRED
    variables = event.get("user-variables")
    return ProviderEvent(
        type=neutral,
        provider_kind=kind,
        send_id=send_id_of(variables.get("send_id")) if isinstance(variables, dict) else None,
        provider_event_id=str(event["id"]) if event.get("id") else None,
        at=unix_time(event.get("timestamp")),
        email=str(event["recipient"]) if event.get("recipient") else None,
        hard=hard,
        reject_reason=reason,
    )
