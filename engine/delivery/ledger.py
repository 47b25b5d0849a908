"""The ledger of sends: which are due, what each customer has already had, and every status
change of a send or an entry (engine/delivery/statuses.py); no other module writes one. A send is
claimed (`sending`) in its own commit before it leaves, and marked `sent` after, so a crash in
between leaves evidence rather than a blind resend.

Each change is set-wise: one statement (an executemany) for a kind of change to a batch of sends."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, Protocol, cast

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    exists,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import Label
from sqlmodel import col
from sqlmodel.sql.sqltypes import UTCDateTime

from engine.campaigns.assignment import pick_variant
from engine.campaigns.conditions import ConditionCompiler
from engine.campaigns.language import Campaign
from engine.clock import utcnow
from engine.config.settings import Config
from engine.delivery.outcomes import outcome_names
from engine.delivery.statuses import CLAIMABLE, COUNTED_FOR_CAP, EntryStatus, SendStatus, SkipReason
from engine.mail.compose import CUSTOMER_COLUMNS
from engine.store.dialect import insert_new, json_valid, shifted, try_advisory_lock
from engine.store.tables import Customer, Entry, Event, Send, Suppression, table_of

CUSTOMER: Sequence[Any] = CUSTOMER_COLUMNS  # columns, though mypy reads SQLModel fields as their values
CUSTOMER_FIELDS = tuple(column.key for column in CUSTOMER)


class DueSend(NamedTuple):
    """A due send with its entry, its customer and the send-time checks, as `due_sends` reads it:
    a tuple, made from each row as it comes (a frozen dataclass cost a broadcast 20 µs a send)."""

    id: int
    step: int
    due_at: datetime
    variant: str | None
    attempts: int
    entry_id: int
    entered_at: datetime
    event_id: int | None
    # the customer (engine/mail/compose.py CUSTOMER_COLUMNS)
    customer_id: int
    external_id: str
    email: str
    first_name: str | None
    last_name: str | None
    locale: str | None
    timezone: str | None
    created_at: datetime
    confirmed_at: datetime | None
    unsubscribed_at: datetime | None
    frequency: str | None
    attributes: dict[str, Any]
    # the checks, evaluated in the same query (`send_checks`, in this order)
    suppressed: bool
    in_audience: bool
    exited: bool
    subscribed: bool = True  # transactional mail asks no consent: always True
    readable: bool = True  # the customer's attributes are JSON the database reads (dialect.readable_json)

    @property
    def customer(self) -> dict[str, Any]:
        """The customer's columns, as composing a message reads them."""
        return {name: getattr(self, name) for name in CUSTOMER_FIELDS}


class NewSend(NamedTuple):
    """A send to create: for which entry and customer, and when it is due."""

    entry_id: int
    customer_id: int
    external_id: str  # picks the A/B variant
    due_at: datetime


# `ix_send_due`'s condition, written out (not bound) so that SQLite sees the query holds it.
WAITING = col(Send.status).in_([literal_column(f"'{status.value}'") for status in CLAIMABLE])


def lock_evaluation(connection: Connection, campaign: str) -> bool:
    """One evaluator of a campaign at a time across machines on PostgreSQL (SQLite's write lock
    already does this), so `reentry: never` holds even when two daemons see the same signup at
    once; other campaigns are evaluated meanwhile by the other daemons. A daemon that finds a
    campaign being evaluated leaves it to the other this tick."""
    digest = hashlib.blake2b(campaign.encode(), digest_size=8, person=b"evaluation").digest()
    return try_advisory_lock(connection, int.from_bytes(digest, "big", signed=True))


# -- reading ---------------------------------------------------------------------------------------


def due_sends(
    connection: Connection, config: Config, campaign: Campaign, step: int, now: datetime, limit: int
) -> list[DueSend]:
    """The next due sends of one step, with everything the send-time checks need, in one query."""
    query = due_query(config, campaign, step, now, limit)
    return [DueSend._make(row) for row in connection.execute(query)]


def due_query(config: Config, campaign: Campaign, step: int, now: datetime, limit: int) -> Select[Any]:
    """`due_sends`' query: read from the start of the step's range of `ix_send_due`, whatever the
    number of sends still waiting."""
    return (
        select(
            col(Send.id),
            col(Send.step),
            col(Send.due_at),
            col(Send.variant),
            col(Send.attempts),
            col(Send.entry_id),
            col(Entry.entered_at),
            col(Entry.event_id),
            *CUSTOMER,
            *send_checks(config, campaign, step, now),
        )
        .join(Entry, col(Entry.id) == col(Send.entry_id))
        .join(Customer, col(Customer.id) == col(Send.customer_id))
        .where(
            col(Send.campaign) == campaign.name,
            col(Send.step) == step,
            WAITING,
            col(Send.next_attempt_at) <= now,
        )
        .order_by(col(Send.due_at), col(Send.id))
        .limit(limit)
        # PostgreSQL: workers skip each other's rows instead of waiting; SQLite has one writer
        .with_for_update(skip_locked=True, of=Send)
    )


def send_checks(
    config: Config,
    campaign: Campaign,
    step: int,
    now: datetime,
    entered_at: ColumnElement[datetime] | datetime | None = None,
) -> list[Label[bool]]:
    """The send-time checks of `DueSend` on the customer row, labelled by their fields and in their
    order: for a stored entry, or for one that would enter at `entered_at` (`lifecycle why`)."""
    conditions = ConditionCompiler(config, now)
    step_spec = campaign.steps[step - 1]
    recipient_email = campaign.recipient if campaign.recipient else col(Customer.email)
    marketing_topic = campaign.topic if campaign.marketing else None  # a marketing campaign always has one
    return [
        exists(select(col(Suppression.email)).where(col(Suppression.email) == recipient_email)).label("suppressed"),
        conditions.all_of(list(campaign.audience) + list(step_spec.audience)).label("in_audience"),
        _exited(conditions, campaign, now, entered_at).label("exited"),
        (true() if marketing_topic is None else conditions.subscribed(marketing_topic)).label("subscribed"),
        json_valid(col(Customer.attributes)).label("readable"),
    ]


def _exited(
    conditions: ConditionCompiler,
    campaign: Campaign,
    now: datetime,
    entered_at: ColumnElement[datetime] | datetime | None,
) -> ColumnElement[bool]:
    """An exit event after the entry (the stored one, or one at `entered_at`); for an inactivity
    trigger, the activity coming back."""
    entered: Any = col(Entry.entered_at) if entered_at is None else entered_at
    rules = [(rule.event, rule.where) for rule in campaign.exit]
    checks = [
        exists(
            select(col(Event.id)).where(
                col(Event.customer_id) == col(Customer.id),
                col(Event.name) == name,
                col(Event.at) > entered,
                col(Event.at) <= now,
                conditions.where(where),
            )
        )
        for name, where in rules
    ]
    inactivity = campaign.trigger.inactivity
    if inactivity is not None:
        back = select(col(Event.id)).where(
            col(Event.customer_id) == col(Customer.id),
            col(Event.at) <= now,
            col(Event.at) > shifted(entered, -inactivity.for_),
        )
        if inactivity.event:
            back = back.where(col(Event.name) == inactivity.event)
        checks.append(exists(back))
    return or_(false(), *checks)


def recent_marketing(connection: Connection, customer_ids: list[int], since: datetime) -> dict[int, list[datetime]]:
    """When each customer was last sent marketing, for the frequency cap (one query a batch). The
    status is checked here, not in the query: with it there, PostgreSQL may read every recent send
    of those statuses (a broadcast's, growing with each batch) rather than these customers' own."""
    query = select(col(Send.customer_id), col(Send.sent_at), col(Send.status)).where(
        col(Send.customer_id).in_(customer_ids),
        col(Send.marketing) == True,  # noqa: E712
        col(Send.sent_at) > since,
    )
    times: dict[int, list[datetime]] = defaultdict(list)
    for row in connection.execute(query):
        if row.status in COUNTED_FOR_CAP:
            times[row.customer_id].append(row.sent_at)
    return times


def events_by_id(connection: Connection, ids: list[int]) -> dict[int, dict[str, Any]]:
    if not ids:
        return {}
    rows = connection.execute(
        select(col(Event.id), col(Event.name), col(Event.at), col(Event.properties)).where(col(Event.id).in_(ids))
    )
    return {r.id: {"name": r.name, "at": r.at, "properties": r.properties} for r in rows}


@dataclass(frozen=True, slots=True)
class UnknownSend:
    """A send whose outcome is not known (its worker stopped mid-send), with what the provider has
    said of it since: a delivery, an open or a click shows that it went out."""

    id: int
    campaign: str
    step: int
    entry_id: int
    customer_id: int
    external_id: str
    to_email: str | None
    claimed_at: datetime | None
    reason: str | None
    outcomes: list[str]

    def as_json(self) -> dict[str, Any]:
        claimed = self.claimed_at.isoformat() if self.claimed_at else None
        return {
            "send_id": self.id,
            "campaign": self.campaign,
            "step": self.step,
            "customer": self.external_id,
            "email": self.to_email,
            "claimed_at": claimed,
            "reason": self.reason,
            "outcomes": self.outcomes,
        }


def unknown_sends(connection: Connection, campaign: str | None = None) -> list[UnknownSend]:
    """The sends left `unknown`, oldest claim first, of one campaign or of all."""
    query = (
        select(
            col(Send.id),
            col(Send.campaign),
            col(Send.step),
            col(Send.entry_id),
            col(Send.customer_id),
            col(Customer.external_id),
            col(Send.to_email),
            col(Send.sent_at),
            col(Send.reason),
            col(Send.outcomes),
        )
        .join(Customer, col(Customer.id) == col(Send.customer_id))
        .where(col(Send.status) == SendStatus.UNKNOWN)
        .order_by(col(Send.sent_at), col(Send.id))
    )
    if campaign is not None:
        query = query.where(col(Send.campaign) == campaign)
    return [
        UnknownSend(
            id=row.id,
            campaign=row.campaign,
            step=row.step,
            entry_id=row.entry_id,
            customer_id=row.customer_id,
            external_id=row.external_id,
            to_email=row.to_email,
            claimed_at=row.sent_at,
            reason=row.reason,
            outcomes=outcome_names(row.outcomes),
        )
        for row in connection.execute(query)
    ]


# -- writing: every status change ------------------------------------------------------------------


def schedule(
    connection: Connection,
    campaign: Campaign,
    step: int,
    sends: Sequence[NewSend],
    now: datetime,
    held: Collection[int] = (),
) -> None:
    """Create one step's sends, `scheduled`; an entry in `held` (the holdout) gets a `held_out`
    record instead, and the entry is held out too."""
    rows = [
        {
            "entry_id": send.entry_id,
            "campaign": campaign.name,
            "customer_id": send.customer_id,
            "step": step,
            "marketing": campaign.marketing,
            "priority": campaign.priority,
            "variant": pick_variant(campaign, step, send.external_id),
            "due_at": send.due_at,
            "next_attempt_at": send.due_at,
            "status": SendStatus.HELD_OUT if send.entry_id in held else SendStatus.SCHEDULED,
            "reason": "holdout" if send.entry_id in held else None,
            "attempts": 0,
            "updated_at": now,
        }
        for send in sends
    ]
    if rows:
        connection.execute(insert_new(connection, table_of(Send), ["entry_id", "step"]), rows)
    if held:
        connection.execute(
            update(Entry).where(col(Entry.id).in_(held)).values(held_out=True, status=EntryStatus.HELD_OUT)
        )


def schedule_alike(
    connection: Connection,
    campaign: Campaign,
    step: int,
    sends: Select[int | None, int, datetime],
    now: datetime,
) -> None:
    """Create one step's sends, `scheduled`, set-wise from `sends` (entry id, customer id, due at),
    for a step with no variants to pick per customer and no holdout: one INSERT ... SELECT costs
    SQLite about a fifth of an INSERT a row."""
    rows = sends.subquery()
    columns = ["entry_id", "customer_id", "due_at", "next_attempt_at", "campaign", "step"]
    columns += ["marketing", "priority", "status", "attempts", "updated_at"]
    values = [
        *(literal(value) for value in (campaign.name, step, campaign.marketing, campaign.priority)),
        literal(SendStatus.SCHEDULED),
        literal(0),
        literal(now, UTCDateTime()),
    ]
    source = select(rows.c[0], rows.c[1], rows.c[2], rows.c[2], *values).where(true())  # SQLite wants a WHERE
    connection.execute(insert_new(connection, table_of(Send), ["entry_id", "step"]).from_select(columns, source))


def alike(campaign: Campaign, step: int) -> bool:
    """Whether every send of the step is the same but for its customer: no variants, no holdout."""
    return campaign.steps[step - 1].variants is None and (step > 1 or not campaign.holdout)


def expired_before(campaign: Campaign, now: datetime) -> datetime:
    """A step still waiting that was due before this is dropped (`expired`)."""
    return now - campaign.expire_after


def expire_overdue(connection: Connection, campaign: Campaign, now: datetime) -> int:
    """Steps that could not go out by due + expire_after are dropped, and their entries end."""
    overdue = and_(
        col(Send.campaign) == campaign.name,
        col(Send.status).in_(CLAIMABLE),
        col(Send.due_at) < expired_before(campaign, now),
    )
    entries = select(col(Send.entry_id)).where(overdue).scalar_subquery()
    connection.execute(
        update(Entry)
        .where(col(Entry.id).in_(entries), col(Entry.status) == EntryStatus.ACTIVE)
        .values(status=EntryStatus.EXPIRED)
    )
    statement = update(Send).where(overdue).values(status=SendStatus.EXPIRED, reason="expired", updated_at=now)
    return connection.execute(statement).rowcount or 0


def skip(connection: Connection, skipped: Sequence[tuple[DueSend, SkipReason]], now: datetime) -> None:
    """Sends that will never go out, with why; their entries end: `exited` on an exit event,
    `stopped` for any other reason."""
    _change(
        connection,
        [{"id": send.id, "status": SendStatus.SKIPPED, "reason": why, "updated_at": now} for send, why in skipped],
    )
    ended: dict[EntryStatus, list[int]] = defaultdict(list)
    for send, why in skipped:
        ended[EntryStatus.EXITED if why == SkipReason.EXIT else EntryStatus.STOPPED].append(send.entry_id)
    _end_entries(connection, ended)


def defer(
    connection: Connection,
    deferred: Sequence[tuple[DueSend, str, datetime]],
    now: datetime,
    count_try: bool = True,
) -> None:
    """Sends that wait again, with why, until the time given: (send, reason, until). Without
    `count_try`, the claim's try is given back (the provider refused to take it, not the message)."""
    _change(
        connection,
        [
            {
                "id": send.id,
                "status": SendStatus.DEFERRED,
                "reason": why,
                "next_attempt_at": until,
                "updated_at": now,
                **({} if count_try else {"attempts": send.attempts}),
            }
            for send, why, until in deferred
        ],
    )


def claim(connection: Connection, ids: list[int], now: datetime, recipient: str | None, worker: str | None) -> set[int]:
    """Mark sends `sending` as their messages go to the sender; only those still waiting are
    claimed, so two workers never both send. Each keeps the address it goes to: the campaign's
    `recipient` (an email to the team), else the customer's now."""
    if not ids:
        return set()
    address = (
        literal(recipient)
        if recipient
        else select(col(Customer.email)).where(col(Customer.id) == col(Send.customer_id)).scalar_subquery()
    )
    statement = (
        update(Send)
        .where(col(Send.id).in_(ids), col(Send.status).in_(CLAIMABLE))
        .values(
            status=SendStatus.SENDING,
            reason=None,
            attempts=col(Send.attempts) + 1,
            sent_at=now,
            updated_at=now,
            claimed_by=worker,
            to_email=address,
        )
        .returning(col(Send.id))
        # by id: with the status in the query, SQLite would read every waiting send of the store
        # through a status index for each claim (a million-customer broadcast: most of its time)
        .with_hint("NOT INDEXED", dialect_name="sqlite")
    )
    return cast(set[int], set(connection.execute(statement).scalars()))


class Settled(Protocol):
    """What marking a send sent needs of it: a DueSend, or an UnknownSend settled by hand."""

    @property
    def id(self) -> int: ...
    @property
    def entry_id(self) -> int: ...
    @property
    def customer_id(self) -> int: ...
    @property
    def external_id(self) -> str: ...


def mark_sent(
    connection: Connection, campaign: Campaign, step: int, sent: Sequence[tuple[Settled, str | None]], now: datetime
) -> None:
    """Sends that went out, with the provider's message id: each entry's next step is scheduled, due
    its delay from now, or after the last step the entry is completed. `sent_at` stays as the claim
    set it (`now`, or an unknown send's claim): writing it again would rewrite three indexes a send."""
    _record_sent(connection, sent, now)
    if step < len(campaign.steps):
        due = now + campaign.steps[step].delay
        if alike(campaign, step + 1):
            ids = [send.id for send, _ in sent]
            for start in range(0, len(ids), SET_WISE):
                went = select(col(Send.entry_id), col(Send.customer_id), literal(due, UTCDateTime()))
                went = went.where(col(Send.id).in_(ids[start : start + SET_WISE]))
                schedule_alike(connection, campaign, step + 1, went, now)
            return
        following = [NewSend(send.entry_id, send.customer_id, send.external_id, due) for send, _ in sent]
        schedule(connection, campaign, step + 1, following, now)
    else:
        _end_entries(connection, {EntryStatus.COMPLETED: [send.entry_id for send, _ in sent]})


# PostgreSQL's sends that went, with their message ids (`_record_sent`).
WENT = (
    func.unnest(bindparam("ids", type_=ARRAY(Integer)), bindparam("message_ids", type_=ARRAY(String)))
    .table_valued("id", "message_id")
    .render_derived(name="went")
)


def _record_sent(connection: Connection, sent: Sequence[tuple[Settled, str | None]], now: datetime) -> None:
    """`sent`, with each message id. PostgreSQL writes a new version of a row, every index entry
    included, for each update of it: one statement joined to the ids and message ids, bound as two
    arrays (`UPDATE … FROM unnest(…)`), so that it is compiled once for every group, not for each
    as a list of VALUES was (half the tick's own CPU in a broadcast). SQLite changes rows in place,
    and moves a status set-wise in a quarter of the time it takes row by row: the status for all at
    once, then the ids."""
    went = {"status": SendStatus.SENT, "updated_at": now}
    with_ids = [(send.id, message_id) for send, message_id in sent if message_id]
    if connection.dialect.name == "postgresql" and with_ids:
        statement = update(Send).where(col(Send.id) == WENT.c.id).values(**went, message_id=WENT.c.message_id)
        connection.execute(statement, {"ids": [i for i, _ in with_ids], "message_ids": [m for _, m in with_ids]})
        _set(connection, [send.id for send, message_id in sent if not message_id], went)
        return
    _set(connection, [send.id for send, _ in sent], went)
    _change(connection, [{"id": send_id, "message_id": message_id} for send_id, message_id in with_ids])


def mark_failed(connection: Connection, failed: Sequence[tuple[DueSend, str | None]], now: datetime) -> None:
    """Sends the provider refused for good, with its error; their entries stop."""
    _change(
        connection,
        [{"id": send.id, "status": SendStatus.FAILED, "reason": error, "updated_at": now} for send, error in failed],
    )
    _end_entries(connection, {EntryStatus.STOPPED: [send.entry_id for send, _ in failed]})


def mark_unknown_sends(connection: Connection, sends: Sequence[tuple[DueSend, str]], now: datetime) -> None:
    """Claimed sends whose outcome is not known (the sender raised, or gave no result for them),
    with why: they may or may not have gone out, so they are neither retried nor called failed."""
    _change(
        connection,
        [{"id": send.id, "status": SendStatus.UNKNOWN, "reason": why, "updated_at": now} for send, why in sends],
    )


def settle_as_sent(connection: Connection, campaign: Campaign, sends: Sequence[UnknownSend]) -> None:
    """Unknown sends the operator knows went out: `sent` as of their claim, and each entry's next
    step scheduled from then, as if the result had come back at the time."""
    by_claim: dict[datetime | None, list[UnknownSend]] = defaultdict(list)
    for send in sends:
        by_claim[send.claimed_at].append(send)
    for claimed_at, group in by_claim.items():
        for step in sorted({send.step for send in group}):
            went = [(send, None) for send in group if send.step == step]
            mark_sent(connection, campaign, step, went, claimed_at or utcnow())


def resend(connection: Connection, sends: Sequence[UnknownSend], now: datetime) -> int:
    """Unknown sends the operator wants sent again: waiting from `now`, with the time of the
    decision kept in `resent_at`, so a second message to the customer is never a silent one."""
    if not sends:
        return 0
    statement = (
        update(Send)
        .where(col(Send.id).in_([send.id for send in sends]), col(Send.status) == SendStatus.UNKNOWN)
        .values(status=SendStatus.SCHEDULED, reason=None, next_attempt_at=now, resent_at=now, updated_at=now)
    )
    return connection.execute(statement).rowcount or 0


def suppress_invalid(connection: Connection, emails: Sequence[str], now: datetime) -> None:
    """Addresses the provider called invalid are never mailed again."""
    if emails:
        rows = [{"email": email, "reason": "invalid", "created_at": now} for email in emails]
        connection.execute(insert_new(connection, table_of(Suppression), ["email"]), rows)


def mark_unknown(connection: Connection, dead: Sequence[str], stale_before: datetime, now: datetime) -> int:
    """Sends in flight (`sending`) claimed by a dead worker, or by no worker and untouched since
    `stale_before`, become `unknown`: they may or may not have gone out."""
    unowned_and_old = col(Send.claimed_by).is_(None) & (col(Send.updated_at) < stale_before)
    lost = or_(col(Send.claimed_by).in_(dead), unowned_and_old) if dead else unowned_and_old
    statement = (
        update(Send)
        .where(col(Send.status) == SendStatus.SENDING, lost)
        .values(status=SendStatus.UNKNOWN, reason="in flight when its worker stopped", updated_at=now)
    )
    return connection.execute(statement).rowcount or 0


SET_WISE = 500  # ids in one `IN (...)`: well under SQLite's and PostgreSQL's limits on parameters


def _change(connection: Connection, changes: Iterable[Mapping[str, Any]]) -> None:
    """Apply changes [{id, field: value, ...}]. Sends that take the same values change together in
    one statement (`WHERE id IN`): moved set-wise, a send's status costs SQLite about a third of
    what the same moves cost one by one. The rest go in one executemany per set of fields."""
    alike: dict[tuple[tuple[str, Any], ...], list[int]] = defaultdict(list)
    for change in changes:
        alike[tuple(sorted((k, v) for k, v in change.items() if k != "id"))].append(change["id"])
    apart: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for same, ids in alike.items():
        if len(ids) > 1:
            _set(connection, ids, dict(same))
        else:
            apart[tuple(field for field, _ in same)].append({"send_id": ids[0], **{f"new_{f}": v for f, v in same}})
    for fields, rows in apart.items():
        statement = (
            update(Send).where(col(Send.id) == bindparam("send_id")).values({f: bindparam(f"new_{f}") for f in fields})
        )
        connection.execute(statement, rows)


def _set(connection: Connection, ids: Sequence[int], same: Mapping[str, Any]) -> None:
    """Give the sends `ids` the `same` values, `SET_WISE` at a time."""
    for start in range(0, len(ids), SET_WISE):
        connection.execute(update(Send).where(col(Send.id).in_(ids[start : start + SET_WISE])).values(same))


def _end_entries(connection: Connection, ended: Mapping[EntryStatus, list[int]]) -> None:
    """End the entries still active: one statement for each status they take."""
    for status, ids in ended.items():
        if ids:
            connection.execute(
                update(Entry)
                .where(col(Entry.id).in_(ids), col(Entry.status) == EntryStatus.ACTIVE)
                .values(status=status)
            )
