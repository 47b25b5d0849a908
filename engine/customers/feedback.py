"""Ratings of emails and the team's answer to a low one, as events on the customer.

A rating is a `feedback_submitted` event naming the send it rates; rating the same send again adds
another (history kept) and the latest counts. The first low rating of a send is the one the alert
campaign triggers on: a later rating of a send already rated low carries `already_low: true`, so
adding a comment never alerts the team twice. The alert email reads the send's latest rating when
it renders (`alert_context`), so a comment written before the alert goes is in it.

An `alert_acknowledged` event records "I'm on it" for an alert email: the first one counts.

The web service calls this module; it knows nothing of HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlmodel import col

from engine.config.settings import Config
from engine.store.tables import Customer, Entry, Event, Send, table_of

RATED = "feedback_submitted"
ACKNOWLEDGED = "alert_acknowledged"
PURCHASE = "purchase"
COMMENT_LIMIT = 2000
ORDERS_SHOWN = 3
EVENTS = table_of(Event)


def rate(
    connection: Connection, config: Config, customer_id: int, send_id: int, score: int, comment: str, now: datetime
) -> dict[str, Any] | None:
    """Record a rating of one of the customer's sends; None when the send is not theirs."""
    send = connection.execute(
        select(col(Send.campaign), col(Send.step)).where(col(Send.id) == send_id, col(Send.customer_id) == customer_id)
    ).first()
    if send is None:
        return None
    properties: dict[str, Any] = {
        "score": score,
        "scale": config.feedback.scale,
        "campaign": send.campaign,
        "step": send.step,
        "send_id": send_id,
    }
    if comment:
        properties["comment"] = comment
    if any(config.feedback.is_low(r["score"]) for r in _ratings(connection, customer_id, send_id)):
        properties["already_low"] = True
    connection.execute(
        EVENTS.insert(), [{"customer_id": customer_id, "name": RATED, "at": now, "properties": properties}]
    )
    return properties


def latest_rating(connection: Connection, customer_id: int, send_id: int) -> dict[str, Any] | None:
    ratings = _ratings(connection, customer_id, send_id)
    return ratings[-1] if ratings else None


def _ratings(connection: Connection, customer_id: int, send_id: int) -> list[dict[str, Any]]:
    """The customer's ratings of one send, oldest first (a customer rates few emails: filtered here,
    not with JSON operators that differ between SQLite and PostgreSQL)."""
    rows = connection.execute(
        select(col(Event.id), col(Event.at), col(Event.properties))
        .where(col(Event.customer_id) == customer_id, col(Event.name) == RATED)
        .order_by(col(Event.at), col(Event.id))
    )
    return [
        {**r.properties, "at": r.at, "event_id": r.id}
        for r in rows
        if isinstance(r.properties, dict) and r.properties.get("send_id") == send_id
    ]


def alert_context(connection: Connection, customer_id: int, event: Mapping[str, Any] | None) -> dict[str, Any]:
    """What an email to the team (a campaign with `recipient:`) shows besides the event: the
    customer's last orders and, for an alert about a rating, that send's latest rating."""
    context: dict[str, Any] = {"orders": last_orders(connection, customer_id)}
    send_id = (event or {}).get("properties", {}).get("send_id")
    if (event or {}).get("name") == RATED and isinstance(send_id, int):
        latest = latest_rating(connection, customer_id, send_id)
        if latest is not None:
            context["feedback"] = latest
    return context


def last_orders(connection: Connection, customer_id: int) -> list[dict[str, Any]]:
    rows = connection.execute(
        select(col(Event.at), col(Event.properties))
        .where(col(Event.customer_id) == customer_id, col(Event.name) == PURCHASE)
        .order_by(col(Event.at).desc(), col(Event.id).desc())
        .limit(ORDERS_SHOWN)
    )
    return [{"at": r.at, "properties": r.properties or {}} for r in rows]


@dataclass
class Alert:
    """An alert email to the team about one rating, as its page shows it."""

    customer_id: int
    customer: str  # name or email address, for the team
    email: str
    to_email: str | None
    sent_at: datetime | None
    feedback_event_id: int
    feedback_at: datetime
    feedback: dict[str, Any]  # the rated send's latest rating
    acknowledged_at: datetime | None


def alert(connection: Connection, customer_id: int, alert_send_id: int) -> Alert | None:
    """The alert an alert email's send was about; None unless it is this customer's send of a
    campaign triggered by a rating."""
    row = connection.execute(
        select(
            col(Send.to_email),
            col(Send.sent_at),
            col(Event.id).label("event_id"),
            col(Event.at),
            col(Event.properties),
            col(Customer.email),
            col(Customer.first_name),
            col(Customer.last_name),
        )
        .join(Entry, col(Entry.id) == col(Send.entry_id))
        .join(Event, col(Event.id) == col(Entry.event_id))
        .join(Customer, col(Customer.id) == col(Send.customer_id))
        .where(col(Send.id) == alert_send_id, col(Send.customer_id) == customer_id, col(Event.name) == RATED)
    ).first()
    if row is None:
        return None
    rated = dict(row.properties) if isinstance(row.properties, dict) else {}
    # A rating posted by another system (the ingest API) names no send: it is its own latest.
    send_id = rated.get("send_id")
    latest = (latest_rating(connection, customer_id, send_id) if isinstance(send_id, int) else None) or rated
    name = " ".join(filter(None, [row.first_name, row.last_name]))
    return Alert(
        customer_id=customer_id,
        customer=name or row.email,
        email=row.email,
        to_email=row.to_email,
        sent_at=row.sent_at,
        feedback_event_id=row.event_id,
        feedback_at=row.at,
        feedback=latest,
        acknowledged_at=_acknowledged_at(connection, customer_id, alert_send_id),
    )


def acknowledge(connection: Connection, customer_id: int, alert_send_id: int, now: datetime) -> Alert | None:
    """Record "I'm on it" for an alert; the first acknowledgement counts, a repeat records nothing."""
    found = alert(connection, customer_id, alert_send_id)
    if found is None or found.acknowledged_at is not None:
        return found
    properties: dict[str, Any] = {"alert_send_id": alert_send_id, "feedback_event_id": found.feedback_event_id}
    if isinstance(found.feedback.get("send_id"), int):
        properties["feedback_send_id"] = found.feedback["send_id"]
    if found.to_email:
        properties["by"] = found.to_email
    connection.execute(
        EVENTS.insert(), [{"customer_id": customer_id, "name": ACKNOWLEDGED, "at": now, "properties": properties}]
    )
    found.acknowledged_at = now
    return found


def _acknowledged_at(connection: Connection, customer_id: int, alert_send_id: int) -> datetime | None:
    rows = connection.execute(
        select(col(Event.at), col(Event.properties))
        .where(col(Event.customer_id) == customer_id, col(Event.name) == ACKNOWLEDGED)
        .order_by(col(Event.at), col(Event.id))
    )
    return next(
        (r.at for r in rows if isinstance(r.properties, dict) and r.properties.get("alert_send_id") == alert_send_id),
        None,
    )
