"""The ledger of sends: which are due, what each customer has already had, and every status
change. A send is claimed (`sending`) in its own commit before it leaves, and marked `sent`
after, so a crash in between leaves evidence rather than a blind resend."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlalchemy import and_, bindparam, exists, false, func, or_, select, update
from sqlalchemy.engine import Connection

from engine.campaigns.conditions import ConditionCompiler
from engine.campaigns.language import Campaign
from engine.config.settings import Config
from engine.mail.compose import CUSTOMER_COLUMNS
from engine.store.dialect import shifted
from engine.store.tables import Customer, Entry, Event, Send, Suppression

WAITING = ("scheduled", "deferred")
COUNTED = ("sent", "sending", "unknown")  # what counts towards a frequency cap


EVALUATION_LOCK = 0x4C69666563  # any fixed number: the advisory lock that serialises evaluation


def lock_evaluation(connection: Connection) -> bool:
    """One evaluator at a time across machines on PostgreSQL (SQLite's write lock already does
    this), so `reentry: never` holds even when two daemons see the same signup at once. A daemon
    that finds another evaluating skips evaluation this tick and goes straight to sending."""
    if connection.dialect.name != "postgresql":
        return True
    return bool(connection.execute(select(func.pg_try_advisory_xact_lock(EVALUATION_LOCK))).scalar())


def expire_overdue(connection: Connection, campaign: Campaign, now: datetime) -> int:
    """Steps that could not go out by due + expire_after are dropped, and their entries end."""
    overdue = and_(Send.campaign == campaign.name, Send.status.in_(WAITING), Send.due_at < now - campaign.expire_after)
    entries = select(Send.entry_id).where(overdue).scalar_subquery()
    connection.execute(update(Entry).where(Entry.id.in_(entries), Entry.status == "active").values(status="expired"))
    return (
        connection.execute(
            update(Send).where(overdue).values(status="expired", reason="expired", updated_at=now)
        ).rowcount
        or 0
    )


def due_sends(connection: Connection, config: Config, campaign: Campaign, step: int, now: datetime, limit: int):
    """The next due sends of one step, with everything the send-time checks need, in one query."""
    conditions = ConditionCompiler(config, now)
    step_spec = campaign.steps[step - 1]
    recipient_email = campaign.recipient if campaign.recipient else Customer.email
    checks = [
        exists(select(Suppression.email).where(Suppression.email == recipient_email)).label("suppressed"),
        conditions.all_of(list(campaign.audience) + list(step_spec.audience)).label("in_audience"),
        _exited(conditions, campaign, now).label("exited"),
    ]
    if campaign.marketing:
        checks.append(conditions.subscribed(campaign.topic).label("subscribed"))
    query = (
        select(
            Send.id,
            Send.step,
            Send.due_at,
            Send.variant,
            Send.attempts,
            Send.entry_id,
            Entry.entered_at,
            Entry.event_id,
            *CUSTOMER_COLUMNS,
            *checks,
        )
        .join(Entry, Entry.id == Send.entry_id)
        .join(Customer, Customer.id == Send.customer_id)
        .where(Send.campaign == campaign.name, Send.step == step, Send.status.in_(WAITING), Send.next_attempt_at <= now)
        .order_by(Send.due_at, Send.id)
        .limit(limit)
        # PostgreSQL: workers skip each other's rows instead of waiting; SQLite has one writer
        .with_for_update(skip_locked=True, of=Send)
    )
    return connection.execute(query).mappings().all()


def _exited(conditions: ConditionCompiler, campaign: Campaign, now: datetime):
    """An exit event after the entry; for an inactivity trigger, the activity coming back."""
    rules = [(rule.event, rule.where) for rule in campaign.exit]
    checks = [
        exists(
            select(Event.id).where(
                Event.customer_id == Customer.id,
                Event.name == name,
                Event.at > Entry.entered_at,
                Event.at <= now,
                conditions.where(where),
            )
        )
        for name, where in rules
    ]
    inactivity = campaign.trigger.inactivity
    if inactivity is not None:
        back = select(Event.id).where(
            Event.customer_id == Customer.id, Event.at <= now, Event.at > shifted(Entry.entered_at, -inactivity.for_)
        )
        if inactivity.event:
            back = back.where(Event.name == inactivity.event)
        checks.append(exists(back))
    return or_(false(), *checks)


def recent_marketing(connection: Connection, customer_ids: list[int], since: datetime) -> dict[int, list[datetime]]:
    """When each customer was last sent marketing, for the frequency cap (one query a batch)."""
    query = select(Send.customer_id, Send.sent_at).where(
        Send.customer_id.in_(customer_ids),
        Send.marketing == True,  # noqa: E712
        Send.status.in_(COUNTED),
        Send.sent_at > since,
    )
    times: dict[int, list[datetime]] = defaultdict(list)
    for customer_id, sent_at in connection.execute(query):
        times[customer_id].append(sent_at)
    return times


def events_by_id(connection: Connection, ids: list[int]) -> dict[int, dict]:
    if not ids:
        return {}
    rows = connection.execute(select(Event.id, Event.name, Event.at, Event.properties).where(Event.id.in_(ids)))
    return {r.id: {"name": r.name, "at": r.at, "properties": r.properties} for r in rows}


def mark(connection: Connection, changes: list[dict]) -> None:
    """Apply changes [{id, field: value, ...}]: one executemany per set of fields changed."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for change in changes:
        groups[tuple(sorted(k for k in change if k != "id"))].append(change)
    table = Send.__table__
    for fields, rows in groups.items():
        statement = (
            update(table).where(table.c.id == bindparam("send_id")).values({f: bindparam(f"new_{f}") for f in fields})
        )
        connection.execute(statement, [{"send_id": r["id"], **{f"new_{f}": r[f] for f in fields}} for r in rows])


def claim(
    connection: Connection, ids: list[int], now: datetime, emails: dict[int, str], worker: str | None
) -> set[int]:
    """Mark sends `sending`; only those still waiting are claimed, so two workers never both send."""
    if not ids:
        return set()
    claimed = (
        connection.execute(
            update(Send)
            .where(Send.id.in_(ids), Send.status.in_(WAITING))
            .values(
                status="sending",
                reason=None,
                attempts=Send.attempts + 1,
                sent_at=now,
                updated_at=now,
                claimed_by=worker,
            )
            .returning(Send.id)
        )
        .scalars()
        .all()
    )
    claimed = set(claimed)
    mark(connection, [{"id": i, "to_email": emails[i]} for i in claimed])
    return claimed


def end_entries(connection: Connection, entry_status: dict[int, str]) -> None:
    by_status: dict[str, list[int]] = defaultdict(list)
    for entry_id, status in entry_status.items():
        by_status[status].append(entry_id)
    for status, ids in by_status.items():
        connection.execute(update(Entry).where(Entry.id.in_(ids), Entry.status == "active").values(status=status))
