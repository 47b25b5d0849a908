"""Evaluation: turn each campaign's trigger into entries, set-wise in SQL.

Each trigger kind yields candidates (customer, entry key, entry time, event); one INSERT ... SELECT
adds those that pass the audience and the `reentry` rule, and the unique key (campaign, customer,
entry key) makes a second evaluation, here or on another machine, add nothing.

Each campaign looks back to its watermark, the instant its last evaluation reached, so that after
an outage every trigger of the outage gets its entry once (and a first step that can no longer go
out is recorded `expired`); a campaign evaluated for the first time looks back only as far as a
first step could still go out, so importing last year's history creates nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    cast,
    exists,
    func,
    insert,
    literal,
    not_,
    null,
    select,
    true,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement, Select
from sqlalchemy.sql.base import ReadOnlyColumnCollection
from sqlalchemy.sql.selectable import Exists, Subquery
from sqlmodel import col
from sqlmodel.sql.sqltypes import UTCDateTime

from engine.campaigns.assignment import in_holdout
from engine.campaigns.conditions import ConditionCompiler
from engine.campaigns.language import Campaign, DateTrigger, Inactivity
from engine.clock import as_utc
from engine.config.settings import Config
from engine.delivery import ledger
from engine.delivery.ledger import NewSend
from engine.delivery.statuses import EntryStatus
from engine.store.dialect import insert_new, keep_latest, read_json, shifted
from engine.store.tables import Customer, Entry, Event, Watermark, table_of

Query = Select[*tuple[Any, ...]]

_scratch = MetaData()
# Candidates computed in Python (dates in each customer's timezone) wait here for the same
# INSERT ... SELECT as every other trigger kind.
date_candidate = Table(
    "date_candidate",
    _scratch,
    Column("customer_id", Integer),
    Column("entry_key", String),
    Column("entered_at", UTCDateTime()),
    prefixes=["TEMPORARY"],
)


@dataclass(frozen=True)
class EntryRules:
    """What a candidate must pass to enter, rule by rule, so that `lifecycle why` can show each one."""

    signed_up: ColumnElement[bool]  # the customer existed by the candidate's time
    audience: list[ColumnElement[bool]]  # one for each condition of the campaign's audience
    topic: ColumnElement[bool] | None  # subscribed to the campaign's topic (marketing)
    reentry: ColumnElement[bool] | None  # no earlier entry keeps them out, per `reentry`

    def all(self) -> list[ColumnElement[bool]]:
        return [self.signed_up, *self.audience, *(r for r in (self.topic, self.reentry) if r is not None)]


class Evaluator:
    def __init__(
        self,
        connection: Connection,
        config: Config,
        now: datetime,
        batch_size: int = 5000,
        only: int | None = None,
    ):
        """`only`: one customer's store id, whose candidates alone are wanted (`lifecycle why`)."""
        self.connection = connection
        self.config = config
        self.now = now
        self.batch_size = batch_size
        self.conditions = ConditionCompiler(config, now)
        self.only = only

    def _mine(self, customer_id: Any) -> ColumnElement[bool]:
        return true() if self.only is None else customer_id == self.only

    def evaluate(self, campaign: Campaign) -> int:
        """Create the campaign's new entries and their first sends; returns the entries created."""
        candidates = self.candidates(campaign)
        created = self.enter(campaign, candidates) if candidates is not None else []
        self.schedule_first_steps(campaign, created)
        self._advance_watermark(campaign)
        return len(created)

    def earliest(self, campaign: Campaign) -> datetime:
        """The oldest trigger that still counts: back to the watermark, and at least as far as a
        first step could still go out (a replay of an earlier `--now` sees what it saw then)."""
        recent = self.now - campaign.expire_after - campaign.steps[0].delay
        mark = self.connection.execute(
            select(col(Watermark.evaluated_until)).where(col(Watermark.campaign) == campaign.name)
        ).scalar()
        return recent if mark is None else min(as_utc(mark), recent)

    def _advance_watermark(self, campaign: Campaign) -> None:
        statement = keep_latest(self.connection.dialect, table_of(Watermark), "campaign", "evaluated_until")
        self.connection.execute(statement, {"campaign": campaign.name, "evaluated_until": self.now})

    # -- candidates per trigger kind: (customer_id, entry_key, entered_at, event_id) --------------

    def candidates(self, campaign: Campaign) -> Query | None:
        trigger = campaign.trigger
        if trigger.event is not None:
            return self._event_candidates(campaign, trigger.event)
        if trigger.inactivity is not None:
            return self._inactivity_candidates(campaign, trigger.inactivity)
        if trigger.date is not None:
            return self._date_candidates(campaign, trigger.date)
        return self._schedule_candidates(campaign)

    def _event_candidates(self, campaign: Campaign, name: str) -> Query:
        return select(
            col(Event.customer_id).label("customer_id"),
            (literal("event:") + cast(col(Event.id), String)).label("entry_key"),
            col(Event.at).label("entered_at"),
            col(Event.id).label("event_id"),
        ).where(
            col(Event.name) == name,
            col(Event.at) <= self.now,
            col(Event.at) >= self.earliest(campaign),
            self.conditions.where(campaign.trigger.where),
            self._mine(col(Event.customer_id)),
        )

    def _inactivity_candidates(self, campaign: Campaign, rule: Inactivity) -> Query:
        activity = select(func.max(col(Event.at))).where(self.conditions.measures.seen_events())
        if rule.event:
            activity = activity.where(col(Event.name) == rule.event)
        last = func.coalesce(activity.scalar_subquery(), col(Customer.created_at))
        return select(
            col(Customer.id).label("customer_id"),
            (literal("inactive:") + cast(last, String)).label("entry_key"),
            shifted(last, rule.for_).label("entered_at"),
            cast(null(), Integer).label("event_id"),
        ).where(
            last <= self.now - rule.for_,
            last >= self.earliest(campaign) - rule.for_,
            self._mine(col(Customer.id)),
        )

    def _schedule_candidates(self, campaign: Campaign) -> Query | None:
        firings = self.firings(campaign)
        if not firings:
            return None
        fired = max(firings)  # one broadcast per tick; missed older firings are not replayed
        return select(
            col(Customer.id).label("customer_id"),
            literal("fire:" + fired.isoformat()).label("entry_key"),
            literal(fired, UTCDateTime()).label("entered_at"),
            cast(null(), Integer).label("event_id"),
        ).where(self._mine(col(Customer.id)))

    def firings(self, campaign: Campaign) -> list[datetime]:
        trigger, earliest = campaign.trigger, self.earliest(campaign)
        if trigger.at is not None:
            return [trigger.at] if earliest <= trigger.at <= self.now else []
        if trigger.schedule is None:
            return []
        zone = ZoneInfo(self.config.timezone)
        times = croniter(trigger.schedule, self.now.astimezone(zone) + timedelta(seconds=1))
        found = []
        while (fired := as_utc(times.get_prev(datetime))) >= earliest:
            found.append(fired)
        return found

    def _date_candidates(self, campaign: Campaign, rule: DateTrigger) -> Query:
        """Dates are read in each customer's timezone, so the exact moment is computed in Python
        for the few customers whose date falls near now, then joins the common INSERT."""
        earliest = self.earliest(campaign)
        value = read_json(col(Customer.attributes), col(Customer.attributes)[rule.attribute].as_string())
        first_day, last_day = (
            (earliest - rule.offset - timedelta(days=1)).date(),
            (self.now - rule.offset + timedelta(days=1)).date(),
        )
        days = [first_day + timedelta(days=n) for n in range((last_day - first_day).days + 1)]
        near: ColumnElement[bool]
        if rule.anniversary:
            near = func.substr(value, 6, 5).in_({d.strftime("%m-%d") for d in days})
        else:
            near = and_(value >= first_day.isoformat(), value <= (last_day + timedelta(days=1)).isoformat())
        query = select(col(Customer.id), value, col(Customer.timezone)).where(
            col(Customer.created_at) <= self.now, near, self._mine(col(Customer.id))
        )
        date_candidate.create(self.connection, checkfirst=True)
        self.connection.execute(date_candidate.delete())
        rows = []
        for customer_id, text, zone in self.connection.execute(query):
            for key, moment in self._date_moments(rule, text, zone or self.config.timezone, days):
                if earliest <= moment <= self.now:
                    rows.append({"customer_id": customer_id, "entry_key": key, "entered_at": moment})
        if rows:
            self.connection.execute(insert(date_candidate), rows)
        c = date_candidate.c
        return select(c.customer_id, c.entry_key, c.entered_at, cast(null(), Integer).label("event_id"))

    def _date_moments(
        self, rule: DateTrigger, text: str, zone: str, days: list[date]
    ) -> Iterator[tuple[str, datetime]]:
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return
        if rule.anniversary:
            for day in days:
                if (parsed.month, parsed.day) == (day.month, day.day):
                    on = parsed.replace(year=day.year)
                    yield f"date:{on.date().isoformat()}", self._moment(on, text, zone) + rule.offset
        else:
            yield f"date:{text}", self._moment(parsed, text, zone) + rule.offset

    @staticmethod
    def _moment(parsed: datetime, text: str, zone: str) -> datetime:
        """A date without a time means 00:00 in the customer's timezone."""
        if len(text) <= 10:
            parsed = datetime.combine(parsed.date(), time(0), ZoneInfo(zone))
        return as_utc(parsed, zone)

    # -- entering --------------------------------------------------------------------------------

    def enter(self, campaign: Campaign, candidates: Query) -> list[int]:
        """Add the candidates that pass the rules as entries; returns the new entries' ids."""
        c = candidates.subquery("candidate").c
        chosen = (
            select(c.customer_id, c.entry_key, c.entered_at, c.event_id)
            .join(Customer, col(Customer.id) == c.customer_id)
            .where(*self.entry_rules(campaign, c).all())
        )
        statement = insert_new(self.connection, table_of(Entry), ["campaign", "customer_id", "entry_key"])
        columns = ["campaign", "customer_id", "entry_key", "entered_at", "event_id", "held_out", "scheduled", "status"]
        if campaign.reentry == "always":
            return self._insert(statement, columns, campaign, chosen.subquery())
        # One entry per customer at a time: the earliest allowed candidate, then look again,
        # since that entry may block or allow the next.
        ranked = chosen.add_columns(
            func.row_number().over(partition_by=c.customer_id, order_by=(c.entered_at, c.entry_key)).label("rank")
        ).subquery()
        created: list[int] = []
        while True:
            first = (
                select(ranked.c.customer_id, ranked.c.entry_key, ranked.c.entered_at, ranked.c.event_id)
                .where(ranked.c.rank == 1)
                .subquery()
            )
            added = self._insert(statement, columns, campaign, first)
            created += added
            if not added:
                return created

    def entry_rules(self, campaign: Campaign, c: ReadOnlyColumnCollection[str, Any]) -> EntryRules:
        """The rules of entering for candidates `c`, joined with their customer row."""
        blocked = self.reentry_block(campaign, c)
        marketing_topic = campaign.topic if campaign.marketing else None  # a marketing campaign always has one
        return EntryRules(
            signed_up=col(Customer.created_at) <= self.now,
            audience=[self.conditions.condition(condition) for condition in campaign.audience],
            topic=self.conditions.subscribed(marketing_topic) if marketing_topic is not None else None,
            reentry=not_(blocked) if blocked is not None else None,
        )

    def _insert(self, statement: Any, columns: list[str], campaign: Campaign, rows: Subquery) -> list[int]:
        """Insert entries, in customer order: the indexes of the entries (and then of their sends)
        fill from one end rather than at random places, several times faster for a broadcast to a
        million. An entry whose first send is scheduled from its id right after is `scheduled` at once,
        so it is not written a second time."""
        source = (
            select(
                literal(campaign.name),
                rows.c.customer_id,
                rows.c.entry_key,
                rows.c.entered_at,
                rows.c.event_id,
                literal(False),
                literal(ledger.alike(campaign, 1)),
                literal(EntryStatus.ACTIVE),
            )
            .where(true())  # SQLite needs a WHERE before ON CONFLICT in INSERT ... SELECT
            .order_by(rows.c.customer_id)
        )
        return list(self.connection.execute(statement.from_select(columns, source).returning(Entry.id)).scalars())

    def reentry_block(self, campaign: Campaign, c: ReadOnlyColumnCollection[str, Any]) -> Exists | None:
        """An earlier entry that keeps this candidate out, per `reentry`."""
        if campaign.reentry == "always":
            return None
        earlier = select(col(Entry.id)).where(
            col(Entry.campaign) == campaign.name, col(Entry.customer_id) == c.customer_id
        )
        if campaign.reentry != "never":
            window = campaign.reentry
            earlier = earlier.where(
                col(Entry.entered_at) > shifted(c.entered_at, -window),
                col(Entry.entered_at) < shifted(c.entered_at, window),
            )
        return exists(earlier)

    # -- first steps -----------------------------------------------------------------------------

    def schedule_first_steps(self, campaign: Campaign, created: list[int]) -> None:
        """Give every new entry its first send (or its holdout record): in one statement when every
        send is alike, else in batches of the entries not yet `scheduled`. The entries just `created`
        are the campaign's entries from the first of them on: ids only grow, and this evaluation
        holds the campaign's lock until it commits."""
        first = campaign.steps[0]
        if ledger.alike(campaign, 1):
            if created:
                entries = select(col(Entry.id), col(Entry.customer_id), shifted(Entry.entered_at, first.delay))
                new = entries.where(col(Entry.id) >= min(created), col(Entry.campaign) == campaign.name)
                new = new.with_hint(Entry, "NOT INDEXED", "sqlite")  # a range of ids, not the campaign's index
                ledger.schedule_alike(self.connection, campaign, 1, new, self.now)
            return
        query = (
            select(col(Entry.id), col(Entry.customer_id), col(Entry.entered_at), col(Customer.external_id))
            .join(Customer, col(Customer.id) == col(Entry.customer_id))
            .where(col(Entry.campaign) == campaign.name, col(Entry.scheduled) == False)  # noqa: E712
            .order_by(col(Entry.id))
            .limit(self.batch_size)
        )
        while rows := self.connection.execute(query).all():
            sends = [NewSend(r.id, r.customer_id, r.external_id, r.entered_at + first.delay) for r in rows]
            held = {s.entry_id for s in sends if in_holdout(campaign, s.external_id)}
            ledger.schedule(self.connection, campaign, 1, sends, self.now, held)
            ids = [s.entry_id for s in sends]
            self.connection.execute(update(Entry).where(col(Entry.id).in_(ids)).values(scheduled=True))
