"""`POST /webhooks/sendgrid`: SendGrid's signed Event Webhook.

A post is accepted only with a valid ECDSA signature over timestamp + raw body and a timestamp
at most MAX_AGE old (a captured post cannot be replayed later). Each event finds its send
through the `send_id` custom argument the SendGrid sender attaches (SendGrid returns custom
arguments as top-level fields of the event) and is recorded once in `Delivery`, keyed by
`sg_event_id`, with its outcome marked on the send (engine/delivery/outcomes.py); bounces,
invalid-address drops, spam reports and unsubscribes suppress the address. Replaying a payload
changes nothing.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from typing import Any

from sendgrid.helpers.eventwebhook import EventWebhook
from sqlalchemy import select
from sqlalchemy.engine import Engine
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from engine.clock import utcnow
from engine.config.settings import Config
from engine.customers.suppressions import normalise
from engine.delivery.outcomes import record_deliveries
from engine.errors import ConfigError, Problem
from engine.store.dialect import insert_rows_new
from engine.store.tables import Send, Suppression
from engine.web.services import services

SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
MAX_AGE = 300  # seconds, either way, between SendGrid's timestamp and our clock

RECORDED = {"delivered", "open", "click", "bounce", "dropped", "spamreport", "unsubscribe"}
# `dropped` reasons that say the address itself must not be mailed; other drops (e.g. a bad
# SMTPAPI header) are about the request, not the recipient.
DROP_SUPPRESSES = {
    "invalid": "invalid",
    "bounced address": "bounce",
    "spam reporting address": "spamreport",
    "unsubscribed address": "unsubscribe",
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
    if webhook is None or not signature or not timestamp or not timestamp.isdigit():
        return False
    if abs(now - int(timestamp)) > MAX_AGE:
        return False
    try:
        return webhook.verify_signature(body.decode("utf-8"), signature, timestamp)
    except ValueError:  # not UTF-8, not base64, or not a DER signature
        return False


async def sendgrid_events(request: Request) -> JSONResponse:
    s = services(request)
    body = await request.body()
    if not signed(s.webhook, body, request.headers.get(SIGNATURE), request.headers.get(TIMESTAMP), time.time()):
        raise HTTPException(403, "missing, invalid or stale SendGrid signature")
    try:
        events = json.loads(body)
    except json.JSONDecodeError as exc:
        raise HTTPException(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise HTTPException(400, "the body must be a list of event objects")
    recorded, suppressed = await s.run(record_events, s.engine, events)
    return JSONResponse({"recorded": recorded, "suppressed": suppressed})


def record_events(engine: Engine, events: list[dict[str, Any]]) -> tuple[int, int]:
    """Store the post in one transaction; returns (deliveries recorded, addresses suppressed),
    both 0 for a replay."""
    wanted = [e for e in events if e.get("event") in RECORDED]
    ids = {_int(e.get("send_id")) for e in wanted} - {None}
    with engine.begin() as connection:
        sends = dict(connection.execute(select(Send.id, Send.to_email).where(Send.id.in_(ids))).all()) if ids else {}
        deliveries = [
            {
                "send_id": _int(e.get("send_id")),
                "kind": e["event"],
                "at": _when(e),
                "provider_event_id": str(e["sg_event_id"])[:200],
            }
            for e in wanted
            if _int(e.get("send_id")) in sends and e.get("sg_event_id")
        ]
        suppressions = [
            {
                "email": normalise(str(e.get("email") or sends.get(_int(e.get("send_id"))) or "")),
                "reason": reason,
                "created_at": utcnow(),
            }
            for e in wanted
            if (reason := suppression_reason(e))
        ]
        suppressions = [s for s in suppressions if s["email"]]
        recorded = record_deliveries(connection, deliveries)
        suppressed = insert_rows_new(connection, Suppression.__table__, ["email"], suppressions)
    return recorded, suppressed


def suppression_reason(event: dict[str, Any]) -> str | None:
    """Why an event stops all mail to its address, or None. A `blocked` bounce is temporary."""
    kind = event.get("event")
    if kind == "bounce":
        return None if event.get("type") == "blocked" else "bounce"
    if kind == "dropped":
        return DROP_SUPPRESSES.get(str(event.get("reason", "")).strip().lower())
    return kind if kind in ("spamreport", "unsubscribe") else None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _when(event: dict[str, Any]) -> datetime:
    """The event's own unix timestamp; the time it arrived when it has none."""
    try:
        return datetime.fromtimestamp(int(event["timestamp"]), UTC)
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        return utcnow()


routes = [Route("/webhooks/sendgrid", sendgrid_events, methods=["POST"])]
