"""The customer store and the ledger tables (SQLModel on SQLAlchemy 2), and the database engine.

Times are aware datetimes in UTC (timestamptz on PostgreSQL). Free-form customer attributes and event properties are JSON, so
that conditions on them run in the database (`json_extract` on SQLite, `->>` on PostgreSQL).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from sqlalchemy import JSON, BigInteger, Column, Index, UniqueConstraint, event, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.sqlite.base import SQLiteCompiler
from sqlalchemy.engine import Engine
from sqlalchemy.sql.selectable import Join
from sqlmodel import Field, SQLModel, create_engine

JsonType = JSON().with_variant(JSONB(), "postgresql")


class Customer(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    external_id: str = Field(unique=True, index=True, max_length=200)
    email: str = Field(index=True, max_length=320)
    first_name: Optional[str] = None
    last_name: Optional[str] = None
    locale: Optional[str] = Field(default=None, max_length=20)
    timezone: Optional[str] = Field(default=None, max_length=64)
    created_at: datetime = Field(index=True)
    confirmed_at: Optional[datetime] = None
    confirmed_source: Optional[str] = None
    unsubscribed_at: Optional[datetime] = None
    # The customer's own frequency choice, lower than the marketing cap: `weekly` or `monthly`.
    frequency: Optional[str] = None
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JsonType, nullable=False))


class Event(SQLModel, table=True):
    __table_args__ = (Index("ix_event_customer_name_at", "customer_id", "name", "at"),
                      Index("ix_event_customer_at_name", "customer_id", "at", "name"),
                      Index("ix_event_name_at", "name", "at"))
    id: Optional[int] = Field(default=None, primary_key=True)
    uid: Optional[str] = Field(default=None, unique=True, max_length=200)
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

    id: Optional[int] = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    action: str = Field(max_length=50)  # subscribe, unsubscribe, unsubscribe_all, confirm, ...
    topic: Optional[str] = None
    at: datetime
    source: str = Field(max_length=100)


class Suppression(SQLModel, table=True):
    email: str = Field(primary_key=True, max_length=320)
    reason: str = Field(max_length=100)
    created_at: datetime


class Entry(SQLModel, table=True):
    """A customer entering a campaign once per entry key: the database forbids a second one."""

    __table_args__ = (UniqueConstraint("campaign", "customer_id", "entry_key", name="uq_entry_key"),
                      Index("ix_entry_campaign_customer", "campaign", "customer_id", "entered_at"),
                      Index("ix_entry_unscheduled", "scheduled"),
                      # the report's entries and holdouts, read from the index alone, and its
                      # conversions, found from each goal event
                      Index("ix_entry_campaign_held", "campaign", "held_out", "entered_at"),
                      Index("ix_entry_customer_entered", "customer_id", "entered_at"))
    id: Optional[int] = Field(default=None, primary_key=True)
    campaign: str = Field(max_length=100)
    customer_id: int = Field(foreign_key="customer.id")
    entry_key: str = Field(max_length=100)
    entered_at: datetime
    event_id: Optional[int] = Field(default=None, foreign_key="event.id")
    held_out: bool = False
    scheduled: bool = False
    # active, completed, exited, stopped (a step was skipped), expired, held_out
    status: str = Field(default="active", max_length=20)


# Provider events (Delivery.kind) behind each outcome of a send (engine/outcomes.py).
OUTCOME_KINDS = {
    "delivered": ("delivered",),
    "opened": ("open",),
    "clicked": ("click",),
    "bounced": ("bounce", "dropped"),
    "complained": ("spamreport",),
    "unsubscribed": ("unsubscribe",),
}


def _first_at_index(outcome: str) -> Index:
    """Only the sends that have the outcome, in the order of its first time (the report's months)."""
    column = f"{outcome}_at"
    return Index(f"ix_send_{column}", column, sqlite_where=text(f"{column} IS NOT NULL"),
                 postgresql_where=text(f"{column} IS NOT NULL"))


class Send(SQLModel, table=True):
    """One step of one entry: scheduled, then sent, failed, skipped (with reason), expired, ...

    `outcomes` and the `*_at` columns summarise the provider's events about the send
    (engine/outcomes.py): a bit per outcome and the time of its first event."""

    __table_args__ = (UniqueConstraint("entry_id", "step", name="uq_send_step"),
                      Index("ix_send_status_next", "status", "next_attempt_at"),
                      Index("ix_send_customer_sent", "customer_id", "sent_at"),
                      Index("ix_send_campaign_status", "campaign", "status"),
                      # the report's figures: one ordered pass over this index, never the table
                      Index("ix_send_figures", "status", "campaign", "step", "variant", "outcomes", "reason"),
                      Index("ix_send_status_sent", "status", "sent_at"),
                      *(_first_at_index(outcome) for outcome in OUTCOME_KINDS))
    id: Optional[int] = Field(default=None, primary_key=True)
    entry_id: int = Field(foreign_key="entry.id")
    campaign: str = Field(max_length=100)
    customer_id: int = Field(foreign_key="customer.id")
    step: int
    marketing: bool = True
    priority: int = 0
    variant: Optional[str] = None
    due_at: datetime
    next_attempt_at: datetime
    status: str = Field(default="scheduled", max_length=20)
    reason: Optional[str] = None
    attempts: int = 0
    to_email: Optional[str] = None
    sent_at: Optional[datetime] = None
    message_id: Optional[str] = None
    updated_at: Optional[datetime] = None
    # The worker that claimed the send; if it dies mid-send, the send becomes `unknown`.
    claimed_by: Optional[str] = Field(default=None, max_length=40)
    outcomes: int = Field(default=0, sa_column_kwargs={"server_default": text("0")})
    delivered_at: Optional[datetime] = None
    opened_at: Optional[datetime] = None
    clicked_at: Optional[datetime] = None
    bounced_at: Optional[datetime] = None
    complained_at: Optional[datetime] = None
    unsubscribed_at: Optional[datetime] = None


class SendTally(SQLModel, table=True):
    """How many sends there are of each campaign, step and variant in each status, with each set of
    outcomes and, for a skip, each reason: the report's campaign figures. Kept by the database
    (migration 0004, engine/tallies.py); the application never writes here."""

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
    id: Optional[int] = Field(default=None, primary_key=True)
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
    id: Optional[int] = Field(default=None, primary_key=True)
    campaign: str = Field(max_length=100)
    held_out: bool
    change: int


class Worker(SQLModel, table=True):
    """A running tick or daemon. Its heartbeat (wall clock) and process id tell the others
    whether the sends it claimed are still in flight or were cut off by a crash."""

    id: str = Field(primary_key=True, max_length=40)
    host: str = Field(max_length=255)
    pid: int
    started_at: datetime
    heartbeat_at: datetime


class Delivery(SQLModel, table=True):
    """What the provider told us after the send: delivered, open, click, bounce, spamreport, ..."""

    __table_args__ = (UniqueConstraint("provider_event_id", name="uq_delivery_event"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    send_id: int = Field(foreign_key="send.id", index=True)
    kind: str = Field(max_length=30)
    at: datetime
    provider_event_id: Optional[str] = Field(default=None, max_length=200)


class InOrder(Join):
    """A join that reads its left side first and probes the right side for each of its rows.
    SQLite may otherwise reorder a join by its estimates, which without ANALYZE statistics (a
    store nobody has analysed) can be far off; CROSS JOIN is its documented way to keep the order.
    Other databases get a plain join and plan it themselves."""

    inherit_cache = True


class _SQLiteCompiler(SQLiteCompiler):
    """SQLAlchemy's SQLite compiler, plus two ways the report tells SQLite how to read: a table's
    `with_hint(table, "INDEXED BY ix", "sqlite")` is written after its name (the dialect leaves it
    out), and an `InOrder` join is written as CROSS JOIN."""

    def get_from_hint_text(self, table, text):
        return text

    def visit_join(self, join, asfrom=False, from_linter=None, **kwargs):
        text = super().visit_join(join, asfrom=asfrom, from_linter=from_linter, **kwargs)
        if not isinstance(join, InOrder):
            return text
        left = join.left._compiler_dispatch(self, asfrom=True, from_linter=from_linter, **kwargs)
        return left + " CROSS JOIN " + text.removeprefix(left).removeprefix(" JOIN ")


# As much of a SQLite file as SQLite will map (it caps this at its compile-time limit, 2 GB by default).
SQLITE_MMAP_SIZE = 1 << 40


def make_engine(url: str, lock_timeout: float = 60) -> Engine:
    """An engine for the store. SQLite gets WAL, a busy timeout and write transactions that take
    the write lock up front, so two ticks at once serialise instead of failing mid-way; a
    connection with the execution option `read_only=True` reads without that lock.
    `lock_timeout` is how many seconds SQLite waits for the write lock before it gives up.
    SQLite reads through a memory map, so that index probes (the report's) cost no system call."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": lock_timeout, "check_same_thread": False})
        engine.dialect.statement_compiler = _SQLiteCompiler

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection, _record):
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_SIZE}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection):
            # Readers (`read_only` connections) need no write lock: WAL lets them run beside a writer.
            read_only = connection.get_execution_options().get("read_only")
            connection.connection.driver_connection.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True)


def insert_new(connection, table, conflict: list[str]):
    """`INSERT ... ON CONFLICT DO NOTHING` for the connection's database: the unique keys, not
    the code, decide what already exists, so concurrent or repeated evaluation adds nothing twice."""
    return _insert(connection.dialect.name)(table).on_conflict_do_nothing(index_elements=conflict)


def upsert(dialect: str, table, conflict: list[str]):
    """`INSERT ... ON CONFLICT DO UPDATE` of every other column, for the database named `dialect`:
    one statement sets a row whether or not it exists."""
    statement = _insert(dialect)(table)
    return statement.on_conflict_do_update(index_elements=conflict, set_={
        column.name: statement.excluded[column.name] for column in table.columns if column.name not in conflict})


def _insert(dialect: str):
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def insert_rows_new(connection, table, conflict: list[str], rows: list[dict]) -> int:
    """Insert the rows whose unique key is not taken yet; return how many went in. Counted with
    RETURNING, since drivers differ in what rowcount says for a batch."""
    if not rows:
        return 0
    statement = insert_new(connection, table, conflict).returning(*table.primary_key.columns)
    return len(connection.execute(statement, rows).all())
