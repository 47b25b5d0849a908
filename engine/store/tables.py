"""The customer store and the ledger tables (SQLModel on SQLAlchemy 2).

Times are aware datetimes in UTC (timestamptz on PostgreSQL). Free-form customer attributes and event
properties are JSON, so that conditions on them run in the database (`json_extract` on SQLite, `->>` on
PostgreSQL).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, LargeBinary, Table, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

JsonType = JSON().with_variant(JSONB(), "postgresql")


class Customer(SQLModel, table=True):
    __table_args__ = (  # a name's start is searched among every customer (engine/customers/search.py)
        Index("ix_customer_name_lower", text("lower(first_name)"), text("lower(last_name)")),
        Index("ix_customer_last_name_lower", text("lower(last_name)")),
    )
    id: int | None = Field(default=None, primary_key=True)
    external_id: str = Field(unique=True, index=True, max_length=200)
    email: str = Field(index=True, max_length=320)
    first_name: str | None = None
    last_name: str | None = None
    locale: str | None = Field(default=None, max_length=20)
    timezone: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(index=True)
    confirmed_at: datetime | None = None
    confirmed_source: str | None = None
    unsubscribed_at: datetime | None = None
    # The customer's own frequency choice, lower than the marketing cap: `weekly` or `monthly`.
    frequency: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JsonType, nullable=False))


class Event(SQLModel, table=True):
    __table_args__ = (
        Index("ix_event_customer_name_at", "customer_id", "name", "at"),
        Index("ix_event_customer_at_name", "customer_id", "at", "name"),
        Index("ix_event_name_at", "name", "at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    uid: str | None = Field(default=None, unique=True, max_length=200)
    customer_id: int = Field(foreign_key="customer.id")
    name: str = Field(max_length=100)
    at: datetime
    properties: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JsonType, nullable=False))


class Subscription(SQLModel, table=True):
    """The customer's current choice for one topic; absent means the topic's default."""

    customer_id: int = Field(foreign_key="customer.id", primary_key=True)
    topic: str = Field(primary_key=True, max_length=100)
    subscribed: bool
    updated_at: datetime
    source: str = Field(max_length=100)


class Consent(SQLModel, table=True):
    """An append-only record of every consent change: what, when and through which channel."""

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    action: str = Field(max_length=50)  # subscribe, unsubscribe, unsubscribe_all, confirm, ...
    topic: str | None = None
    at: datetime
    source: str = Field(max_length=100)


class Suppression(SQLModel, table=True):
    email: str = Field(primary_key=True, max_length=320)
    reason: str = Field(max_length=100)
    created_at: datetime


class Entry(SQLModel, table=True):
    """A customer entering a campaign once per entry key: the database forbids a second one."""

    __table_args__ = (
        UniqueConstraint("campaign", "customer_id", "entry_key", name="uq_entry_key"),
        Index("ix_entry_campaign_customer", "campaign", "customer_id", "entered_at"),
        # the entries not yet given their first send (engine/delivery/evaluation.py)
        Index(
            "ix_entry_unscheduled",
            "scheduled",
            sqlite_where=text("scheduled = 0"),  # as SQLAlchemy writes False: SQLite reads `false` apart
            postgresql_where=text("scheduled = false"),
        ),
        # the report's entries and holdouts, read from the index alone, and its
        # conversions, found from each goal event
        Index("ix_entry_campaign_held", "campaign", "held_out", "entered_at"),
        Index("ix_entry_customer_entered", "customer_id", "entered_at"),
        # half of each page free, so an entry's status changes beside it without touching an index
        # (a heap-only update; migration 0013)
        {"postgresql_with": {"fillfactor": 50}},
    )
    id: int | None = Field(default=None, primary_key=True)
    campaign: str = Field(max_length=100)
    customer_id: int = Field(foreign_key="customer.id")
    entry_key: str = Field(max_length=100)
    entered_at: datetime
    event_id: int | None = Field(default=None, foreign_key="event.id")
    held_out: bool = False
    scheduled: bool = False
    # active, completed, exited, stopped (a step was skipped), expired, held_out
    status: str = Field(default="active", max_length=20)


# What became of a send after it left, as its provider told (engine/delivery/outcomes.py): each has a
# bit in Send.outcomes, 1 << its index here, and a first-time column `<outcome>_at`. Append only.
OUTCOMES = ("delivered", "opened", "clicked", "bounced", "complained", "unsubscribed")
# The sends a tick may still claim (engine/delivery/statuses.py CLAIMABLE), as the partial index
# `ix_send_due` and the query that reads it both spell it: SQLite uses the index only when the
# query's WHERE holds this very term.
WAITING_SENDS = "status IN ('scheduled', 'deferred')"


def _first_at_index(outcome: str) -> Index:
    """Only the sends that have the outcome, in the order of its first time (the report's months)."""
    column = f"{outcome}_at"
    return Index(
        f"ix_send_{column}",
        column,
        sqlite_where=text(f"{column} IS NOT NULL"),
        postgresql_where=text(f"{column} IS NOT NULL"),
    )


class Send(SQLModel, table=True):
    """One step of one entry: scheduled, then sent, failed, skipped (with reason), expired, ...

    `outcomes` and the `*_at` columns summarise the provider's events about the send
    (engine/delivery/outcomes.py): a bit per outcome and the time of its first event."""

    __table_args__ = (
        UniqueConstraint("entry_id", "step", name="uq_send_step"),
        Index("ix_send_customer_sent", "customer_id", "sent_at"),
        # the report's figures: one ordered pass over this index, never the table
        Index("ix_send_figures", "status", "campaign", "step", "variant", "outcomes", "reason"),
        Index("ix_send_status_sent", "status", "sent_at"),
        # the deliverability guard's window: a campaign's latest sends that went out, newest first
        Index("ix_send_campaign_sent", "campaign", "status", "sent_at"),
        # the sends still waiting, in the order they were due: a batch is read from the start of a range
        Index(
            "ix_send_due",
            "campaign",
            "step",
            "due_at",
            "id",
            "next_attempt_at",
            sqlite_where=text(WAITING_SENDS),
            postgresql_where=text(WAITING_SENDS),
        ),
        *(_first_at_index(outcome) for outcome in OUTCOMES),
    )
    id: int | None = Field(default=None, primary_key=True)
    entry_id: int = Field(foreign_key="entry.id")
    campaign: str = Field(max_length=100)
    customer_id: int = Field(foreign_key="customer.id")
    step: int
    marketing: bool = True
    priority: int = 0
    variant: str | None = None
    due_at: datetime
    next_attempt_at: datetime
    status: str = Field(default="scheduled", max_length=20)
    reason: str | None = None
    attempts: int = 0
    to_email: str | None = None
    sent_at: datetime | None = None
    message_id: str | None = None
    updated_at: datetime | None = None
    # The worker that claimed the send; if it dies mid-send, the send becomes `unknown`.
    claimed_by: str | None = Field(default=None, max_length=40)
    # Set when an operator resent it after its outcome was unknown (`lifecycle unknown --resolve resend`).
    resent_at: datetime | None = None
    outcomes: int = Field(default=0, sa_column_kwargs={"server_default": text("0")})
    delivered_at: datetime | None = None
    opened_at: datetime | None = None
    clicked_at: datetime | None = None
    bounced_at: datetime | None = None
    complained_at: datetime | None = None
    unsubscribed_at: datetime | None = None


class SendTally(SQLModel, table=True):
    """How many sends there are of each campaign, step and variant in each status, with each set of
    outcomes and, for a skip, each reason: the report's campaign figures. Kept by the database
    (migration 0004, engine/store/tallies.py); the application never writes here."""

    __tablename__ = "send_tally"
    campaign: str = Field(primary_key=True, max_length=100)
    step: int = Field(primary_key=True)
    variant: str = Field(primary_key=True)  # '' for none
    status: str = Field(primary_key=True, max_length=20)
    outcomes: int = Field(primary_key=True)
    reason: str = Field(primary_key=True)  # '' unless skipped
    sends: int = Field(sa_type=BigInteger)


class SendTallyChange(SQLModel, table=True):
    """+1 or -1 for a key of `SendTally`, appended by a trigger when a send enters or leaves it."""

    __tablename__ = "send_tally_change"
    id: int | None = Field(default=None, primary_key=True)
    campaign: str = Field(max_length=100)
    step: int
    variant: str
    status: str = Field(max_length=20)
    outcomes: int
    reason: str
    change: int


class EntryTally(SQLModel, table=True):
    """How many entries each campaign has, held out or not; kept like `SendTally`."""

    __tablename__ = "entry_tally"
    campaign: str = Field(primary_key=True, max_length=100)
    held_out: bool = Field(primary_key=True)
    entries: int = Field(sa_type=BigInteger)


class EntryTallyChange(SQLModel, table=True):
    __tablename__ = "entry_tally_change"
    id: int | None = Field(default=None, primary_key=True)
    campaign: str = Field(max_length=100)
    held_out: bool
    change: int


class Watermark(SQLModel, table=True):
    """The instant up to which a campaign's triggers were last evaluated: the next evaluation looks
    back to it, however long ago, so the triggers of an outage are not missed."""

    campaign: str = Field(primary_key=True, max_length=100)
    evaluated_until: datetime


class Worker(SQLModel, table=True):
    """A running tick or daemon. Its heartbeat (wall clock) and process id tell the others
    whether the sends it claimed are still in flight or were cut off by a crash."""

    id: str = Field(primary_key=True, max_length=40)
    host: str = Field(max_length=255)
    pid: int
    started_at: datetime
    heartbeat_at: datetime


class CampaignPause(SQLModel, table=True):
    """A campaign whose sending is held (engine/delivery/pauses.py): by an operator (`lifecycle pause`)
    or by the deliverability guard. One row a campaign; it is paused while `resumed_at` is null, and
    the row stays after a resume so the guard's window starts afresh from it."""

    __tablename__ = "campaign_pause"
    campaign: str = Field(primary_key=True, max_length=100)
    paused_at: datetime
    paused_by: str = Field(max_length=20)  # guard or operator
    reason: str
    # what the guard saw: {measure, count, sends, limit}, for the alert email in the team's language
    figures: dict[str, Any] | None = Field(default=None, sa_column=Column(JsonType, nullable=True))
    alerted_at: datetime | None = None  # when the guard's alert email was handed to the sender
    resumed_at: datetime | None = None


class SendRate(SQLModel, table=True):
    """The pace of one sender, shared by every daemon on the store (engine/delivery/ratelimit.py):
    the next free slot on the wall clock (seconds since the epoch), and how long the provider asked
    every daemon to hold off, with how many times in a row it asked."""

    __tablename__ = "send_rate"
    sender: str = Field(primary_key=True, max_length=200)
    next_free: float = 0.0
    paused_until: datetime | None = None
    throttles: int = 0


class Delivery(SQLModel, table=True):
    """What the provider told us after the send: delivered, open, click, bounce, spamreport, ..."""

    __table_args__ = (UniqueConstraint("provider_event_id", name="uq_delivery_event"),)
    id: int | None = Field(default=None, primary_key=True)
    send_id: int = Field(foreign_key="send.id", index=True)
    kind: str = Field(max_length=30)
    at: datetime
    provider_event_id: str | None = Field(default=None, max_length=200)


class RiskModel(SQLModel, table=True):
    """One run of `lifecycle risk train` (engine/customers/risk/): the rule thresholds calibrated from
    the store's gaps between purchases, and the churn model learned from its history with its
    backtested figures. `model` is the fitted model, pickled and signed with the project secret
    (`signature`); NULL when the store had too little history to train one."""

    __tablename__ = "risk_model"
    version: int | None = Field(default=None, primary_key=True)
    trained_at: datetime
    data_until: datetime  # the training's `now`: nothing later was seen
    horizon_seconds: int
    yellow_seconds: int | None = None  # calibrated rules; NULL when too few gaps between purchases
    red_seconds: int | None = None
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JsonType, nullable=False))
    model: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    signature: str | None = Field(default=None, max_length=128)


class CustomerRisk(SQLModel, table=True):
    """Each customer's latest predicted churn risk, so that `{risk: red}` stays SQL under
    `risk.model: predicted`; rewritten whole by each scoring."""

    __tablename__ = "customer_risk"
    customer_id: int = Field(foreign_key="customer.id", primary_key=True)
    probability: float
    colour: str = Field(max_length=10)
    scored_at: datetime
    model_version: int


def table_of(model: type[SQLModel]) -> Table:
    """A table model's Core table, for statements that skip the ORM. SQLModel sets `__table__` on
    every table model but does not declare it, so a type checker cannot see it."""
    table: Table = model.__table__  # type: ignore[attr-defined]
    return table
