"""One customer as a marketer looks them up (`lifecycle customer ID`, the studio's customer page):
profile, attributes, stage and risk now, their topic choices, whether their address is suppressed,
and one timeline of their events, campaign entries and sends, newest first.

Plain data with `as_json()`; the command line and the studio present it. Each part is read through an
index on the customer (events, entries, sends) and only the newest `TIMELINE_LIMIT` items are kept,
so a customer with years of history costs a few bounded reads; how many were left out is said.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine
from sqlmodel import col

from engine.campaigns.language import Campaign, check_campaigns
from engine.campaigns.measures import Measures
from engine.config.settings import Config
from engine.customers.preferences import Preferences
from engine.customers.search import CustomerMatch, find_customers
from engine.delivery.outcomes import outcome_names
from engine.delivery.statuses import SendStatus
from engine.store.tables import Customer, Entry, Event, Send, Suppression, table_of

TIMELINE_LIMIT = 200  # the newest items shown; older ones are counted in `left_out`
PROFILE = ("email", "first_name", "last_name", "locale", "timezone", "created_at", "confirmed_at")
PROFILE_MORE = ("confirmed_source", "unsubscribed_at", "frequency")
# At one instant, what caused what: an event, the entry it made, the send of that entry.
KIND_ORDER = {"event": 0, "entry": 1, "send": 2}

Kind = Literal["event", "entry", "send"]


@dataclass(frozen=True)
class TimelineItem:
    at: datetime
    kind: Kind
    title: str
    detail: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "kind": self.kind, "title": self.title, "detail": plain(self.detail)}


@dataclass(frozen=True)
class CustomerView:
    profile: dict[str, Any]
    attributes: dict[str, Any]
    stage: str
    risk: str
    topics: dict[str, bool]  # every declared topic: subscribed or not (their choice, else its default)
    suppressed: str | None  # why their address gets nothing, if it is on the suppression list
    timeline: list[TimelineItem]  # newest first
    left_out: int = 0  # older items not in `timeline`

    def as_json(self) -> dict[str, Any]:
        return {
            "profile": plain(self.profile),
            "attributes": plain(self.attributes),
            "stage": self.stage,
            "risk": self.risk,
            "topics": self.topics,
            "suppressed": self.suppressed,
            "timeline": [item.as_json() for item in self.timeline],
            "left_out": self.left_out,
        }


def customer_view(
    engine: Engine,
    config: Config,
    customer_id: str,
    now: datetime,
    campaigns: Sequence[Campaign] | None = None,
    limit: int = TIMELINE_LIMIT,
) -> CustomerView | None:
    """The customer with this id as of `now` (events after it are not seen yet, as for stage and
    risk), or None. `campaigns` (default: the valid ones of the project) give each send its template
    and say whether it converted (its campaign's `goal` event within the window after it)."""
    if campaigns is None:
        campaigns, _ = check_campaigns(config)
    measures = Measures(config, now)
    with engine.connect() as connection:
        columns = [getattr(Customer, name) for name in (*PROFILE, *PROFILE_MORE)]
        row = connection.execute(
            select(
                col(Customer.id),
                col(Customer.external_id),
                *columns,
                col(Customer.attributes),
                measures.stage_of().label("stage"),
                measures.risk_of().label("risk"),
            ).where(col(Customer.external_id) == customer_id)
        ).first()
        if row is None:
            return None
        choices = Preferences(config).load(connection, row.id)
        suppressed = connection.scalar(select(col(Suppression.reason)).where(col(Suppression.email) == row.email))
        timeline, total = _timeline(connection, {c.name: c for c in campaigns}, row.id, now, limit)
    profile = {"id": row.external_id, **{name: getattr(row, name) for name in (*PROFILE, *PROFILE_MORE)}}
    return CustomerView(
        profile=profile,
        attributes=dict(row.attributes) if isinstance(row.attributes, dict) else {},
        stage=row.stage,
        risk=row.risk,
        topics=choices.topics if choices else {},
        suppressed=suppressed,
        timeline=timeline,
        left_out=total - len(timeline),
    )


def _timeline(
    connection: Connection, campaigns: dict[str, Campaign], customer: int, now: datetime, limit: int
) -> tuple[list[TimelineItem], int]:
    """The newest `limit` items of the three kinds together, and how many there are in all."""
    seen = (col(Event.customer_id) == customer, col(Event.at) <= now)
    events = connection.execute(
        select(col(Event.name), col(Event.at), col(Event.properties))
        .where(*seen)
        .order_by(col(Event.at).desc(), col(Event.id).desc())
        .limit(limit)
    ).all()
    entries = connection.execute(
        select(*table_of(Entry).columns, col(Event.name).label("event_name"))
        .outerjoin(Event, col(Event.id) == col(Entry.event_id))
        .where(col(Entry.customer_id) == customer)
        .order_by(col(Entry.entered_at).desc(), col(Entry.id).desc())
        .limit(limit)
    ).all()
    sends = connection.execute(
        select(*table_of(Send).columns)
        .where(col(Send.customer_id) == customer)
        .order_by(col(Send.id).desc())
        .limit(limit)
    ).all()
    total = sum(
        connection.scalar(select(func.count()).select_from(table).where(*where)) or 0
        for table, where in (
            (Event, seen),
            (Entry, (col(Entry.customer_id) == customer,)),
            (Send, (col(Send.customer_id) == customer,)),
        )
    )
    goals = _goal_events(connection, campaigns, customer, now)
    items = [
        *(TimelineItem(e.at, "event", e.name, {"name": e.name, "properties": e.properties}) for e in events),
        *(_entry(row) for row in entries),
        *(_send(send, campaigns.get(send.campaign), goals) for send in sends),
    ]
    items.sort(key=lambda item: (item.at, KIND_ORDER[item.kind]), reverse=True)
    return items[:limit], total


def _entry(entry: Any) -> TimelineItem:
    """An entry row, with the name of the event that made it (none for other triggers)."""
    detail = {
        "campaign": entry.campaign,
        "status": entry.status,
        "held_out": entry.held_out,
        "trigger": entry.event_name or entry.entry_key.partition(":")[0],
    }
    return TimelineItem(entry.entered_at, "entry", f"entered {entry.campaign}", detail)


def _send(send: Any, campaign: Campaign | None, goals: dict[str, list[datetime]]) -> TimelineItem:
    """A send at the time it went (or was tried), else when it is or was due, else when it was decided."""
    waiting = send.status in (SendStatus.SCHEDULED, SendStatus.HELD_OUT)
    at = send.sent_at or (send.due_at if waiting else send.updated_at or send.due_at)
    outcomes = {name: getattr(send, f"{name}_at") for name in outcome_names(send.outcomes)}
    if campaign is not None and campaign.goal is not None and send.sent_at is not None:
        start, end = send.sent_at, send.sent_at + campaign.goal.within
        converted = next((t for t in goals.get(campaign.goal.event, []) if start < t <= end), None)
        if converted is not None:
            outcomes["converted"] = converted
    detail = {
        "campaign": send.campaign,
        "step": send.step,
        "status": send.status,
        "reason": send.reason,
        "variant": send.variant,
        "template": _template(campaign, send.step, send.variant),
        "due_at": send.due_at,
        "sent_at": send.sent_at,
        "until": send.next_attempt_at if send.status == SendStatus.DEFERRED else None,
        "to": send.to_email,
        "outcomes": outcomes,
    }
    title = f"{send.campaign} step {send.step}: {send.status}" + (f" ({send.reason})" if send.reason else "")
    return TimelineItem(at, "send", title, detail)


def _template(campaign: Campaign | None, step: int, variant: str | None) -> str | None:
    if campaign is None or not 1 <= step <= len(campaign.steps):
        return None
    choices = campaign.steps[step - 1].choices()
    return next((c.template for c in choices if c.name == variant), choices[0].template)


def _goal_events(
    connection: Connection, campaigns: dict[str, Campaign], customer: int, now: datetime
) -> dict[str, list[datetime]]:
    """When the customer did each campaign goal's event (by `now`), oldest first."""
    names = {c.goal.event for c in campaigns.values() if c.goal is not None}
    if not names:
        return {}
    rows = connection.execute(
        select(col(Event.name), col(Event.at))
        .where(col(Event.customer_id) == customer, col(Event.name).in_(names), col(Event.at) <= now)
        .order_by(col(Event.at))
    )
    found: dict[str, list[datetime]] = {}
    for name, at in rows:
        found.setdefault(name, []).append(at)
    return found


def plain(value: Any) -> Any:
    """A value as JSON holds it: times and dates in ISO-8601."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


__all__ = ["CustomerMatch", "CustomerView", "TimelineItem", "customer_view", "find_customers"]
