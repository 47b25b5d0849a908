"""What a provider reports about a send, in one vocabulary for every provider (after django-anymail's
tracking events), and how it is recorded.

Each provider's webhook only parses its post into `ProviderEvent`s (engine/web/webhooks/); from there
on nothing knows the provider. `record_events` keeps each event once in `Delivery`, marks its outcome
on the send (engine/delivery/outcomes.py) and suppresses an address that must not be mailed again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from engine.clock import utcnow
from engine.customers.suppressions import normalise
from engine.delivery.outcomes import SEND, mark_outcomes
from engine.store.dialect import insert_new, insert_rows_new
from engine.store.tables import Delivery, Suppression, table_of

DELIVERY = table_of(Delivery)
SUPPRESSION = table_of(Suppression)


class EventType(StrEnum):
    DELIVERED = "delivered"
    OPENED = "opened"
    CLICKED = "clicked"
    BOUNCED = "bounced"  # the receiving server refused it; `hard` when the address itself is bad
    COMPLAINED = "complained"  # marked as spam
    UNSUBSCRIBED = "unsubscribed"  # through the provider's own link
    REJECTED = "rejected"  # the provider would not send it; `reject_reason` says why


class RejectReason(StrEnum):
    INVALID = "invalid"  # the address cannot be mailed
    BOUNCED = "bounced"  # the address bounced before
    SPAM = "spam"  # the recipient complained before
    UNSUBSCRIBED = "unsubscribed"  # the recipient unsubscribed before
    OTHER = "other"  # about the request, not the recipient


# A bounce, a rejection and a complaint all end the send the same way as far as the report goes.
OUTCOME = {
    EventType.DELIVERED: "delivered",
    EventType.OPENED: "opened",
    EventType.CLICKED: "clicked",
    EventType.BOUNCED: "bounced",
    EventType.REJECTED: "bounced",
    EventType.COMPLAINED: "complained",
    EventType.UNSUBSCRIBED: "unsubscribed",
}

# Suppression.reason for a rejection that says the address itself must not be mailed.
REJECT_SUPPRESSES = {
    RejectReason.INVALID: "invalid",
    RejectReason.BOUNCED: "bounce",
    RejectReason.SPAM: "spamreport",
    RejectReason.UNSUBSCRIBED: "unsubscribe",
}


@dataclass(frozen=True)
class ProviderEvent:
    """One event about one send. Only `type` decides what is recorded; `provider_kind` is kept as told."""

    type: EventType
    provider_kind: str  # the provider's own word for the event, stored in Delivery.kind
    send_id: int | None  # the send the sender named in the message; None when it is missing or not a number
    provider_event_id: str | None  # unique per event: a replayed event is recognised by it
    at: datetime | None = None  # None when the provider gave no usable time: it is recorded as arriving now
    email: str | None = None
    hard: bool = False  # a bounce the address will never recover from (not a block or a full mailbox)
    reject_reason: RejectReason | None = None

    @property
    def outcome(self) -> str:
        return OUTCOME[self.type]

    @property
    def suppression(self) -> str | None:
        """Why the event stops all mail to its address (Suppression.reason), or None."""
        if self.type is EventType.BOUNCED:
            return "bounce" if self.hard else None
        if self.type is EventType.REJECTED:
            return REJECT_SUPPRESSES.get(self.reject_reason) if self.reject_reason else None
        if self.type is EventType.COMPLAINED:
            return "spamreport"
        if self.type is EventType.UNSUBSCRIBED:
            return "unsubscribe"
        return None


def record_events(bind: Engine | Connection, events: Sequence[ProviderEvent]) -> tuple[int, int]:
    """Store one post, in one transaction when given an engine; returns (deliveries recorded,
    addresses suppressed), both 0 for a replay. An event about no known send, or without an id,
    is not stored, but it may still suppress its address."""
    if isinstance(bind, Engine):
        with bind.begin() as connection:
            return record_events(connection, events)
    ids = {event.send_id for event in events if event.send_id is not None}
    query = select(SEND.c.id, SEND.c.to_email).where(SEND.c.id.in_(ids))
    sends: dict[int, str] = dict(bind.execute(query).all()) if ids else {}
    recorded = record_deliveries(bind, [e for e in events if e.send_id in sends and e.provider_event_id])
    suppressions = [
        {"email": email, "reason": reason, "created_at": utcnow()}
        for event in events
        if (reason := event.suppression) and (email := normalise(event.email or _address(sends, event.send_id)))
    ]
    suppressed = insert_rows_new(bind, SUPPRESSION, ["email"], suppressions)
    return recorded, suppressed


def record_deliveries(connection: Connection, events: Sequence[ProviderEvent]) -> int:
    """Store the events (each naming a stored send and with an id) not stored yet, and mark their
    outcomes on their sends; returns how many were new."""
    if not events:
        return 0
    rows = [
        {
            "send_id": event.send_id,
            "kind": event.provider_kind,
            "at": event.at or utcnow(),
            "provider_event_id": _event_id(event),
        }
        for event in events
    ]
    outcome = {_event_id(event): event.outcome for event in events}
    statement = insert_new(connection, DELIVERY, ["provider_event_id"]).returning(
        DELIVERY.c.provider_event_id, DELIVERY.c.send_id, DELIVERY.c.at
    )
    new = connection.execute(statement, rows).all()
    mark_outcomes(connection, [(send_id, outcome[event_id], at) for event_id, send_id, at in new])
    return len(new)


def _event_id(event: ProviderEvent) -> str:
    return str(event.provider_event_id)[:200]  # Delivery.provider_event_id's length


def _address(sends: dict[int, str], send_id: int | None) -> str:
    return sends.get(send_id, "") if send_id is not None else ""
