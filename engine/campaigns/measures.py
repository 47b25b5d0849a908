"""Stages, churn risk, last activity, who is counted at an instant and what a customer is worth, as
SQL over one customer, defined once (docs/campaigns.md "Stages and risk") and used by audience
conditions, the report and `lifecycle customers` alike.

Everything is point in time: a measure as of an instant reads only the events stamped at or before
it, so a figure for a past instant never changes because of what happened after it. Windows
("within 365d") include their boundary: an event exactly 365 days before now is within 365d.

Stage and risk are decided from a customer's `Facts`. Audience conditions take them as correlated
subqueries on the customer row (`Measures.facts`); the report and the customer list group them for
all customers in one pass over the events instead (`Measures.per_customer`), so the rules themselves
exist once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, exists, false, func, literal, not_, or_, select
from sqlalchemy.orm import Mapped
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.selectable import Subquery
from sqlmodel import col

from engine.campaigns.language import RISKS, STAGES
from engine.config.settings import Config
from engine.store.dialect import json_number
from engine.store.tables import Customer, CustomerRisk, Event

PURCHASE = "purchase"


@dataclass(frozen=True)
class Facts:
    """What stage and risk are decided from, as SQL over one customer, as of `now`."""

    last_activity: ColumnElement[Any]  # the latest event, else created_at
    recent_purchases: ColumnElement[Any]  # purchases within stages.loyal.within
    purchased: ColumnElement[Any]  # a purchase ever
    red_event: ColumnElement[Any]  # an event named by risk.red.or_event
    predicted: ColumnElement[Any] | None = None  # the scored colour under `risk.model: predicted`, else NULL


class Measures:
    def __init__(self, config: Config, now: datetime):
        self.config = config
        self.now = now

    def seen_events(self, customer: type[Customer] = Customer) -> ColumnElement[bool]:
        """Events of the customer that have happened by `now` (later ones are not seen yet)."""
        return and_(col(Event.customer_id) == customer.id, col(Event.at) <= self.now)

    def last_activity(self, customer: type[Customer] = Customer) -> ColumnElement[datetime]:
        latest = select(func.max(Event.at)).where(self.seen_events(customer)).scalar_subquery()
        return func.coalesce(latest, customer.created_at)

    def has_event(self, name: str, customer: type[Customer] = Customer) -> ColumnElement[bool]:
        return exists(select(col(Event.id)).where(self.seen_events(customer), col(Event.name) == name))

    def loyal_since(self) -> datetime:
        """Purchases at or after this count towards `loyal` (the window includes its boundary)."""
        return self.now - self.config.stages.loyal.within

    def facts(self, customer: type[Customer] = Customer) -> Facts:
        """The facts as correlated subqueries on the customer row."""
        recent = (
            select(func.count(col(Event.id)))
            .where(self.seen_events(customer), col(Event.name) == PURCHASE, col(Event.at) >= self.loyal_since())
            .scalar_subquery()
        )
        or_event = self.config.risk.red.or_event
        return Facts(
            last_activity=self.last_activity(customer),
            recent_purchases=recent,
            purchased=self.has_event(PURCHASE, customer),
            red_event=self.has_event(or_event, customer) if or_event else false(),
        )

    def per_customer(
        self, *extra: ColumnElement[Any] | Mapped[Any], only: Sequence[ColumnElement[bool]] = ()
    ) -> Subquery:
        """A row per customer created by `now` (and passing `only`, conditions on the customer row):
        `id`, `created_at`, their `last_activity` as of `now`, purchases (`recent` and all,
        `purchases`), `red_events`, the colour of their score under `risk.model: predicted`
        (`predicted`), and `extra` columns: aggregates over their events seen by `now`
        or the customer's own columns. One ordered pass over the customers, each with a seek into
        the index on the events (customer_id, at, name), instead of subqueries per customer and measure."""
        name, at = col(Event.name), col(Event.at)
        or_event = self.config.risk.red.or_event
        return (
            select(
                col(Customer.id),
                col(Customer.created_at),
                func.coalesce(func.max(at), col(Customer.created_at)).label("last_activity"),
                func.count(case((and_(name == PURCHASE, at >= self.loyal_since()), 1))).label("recent"),
                func.count(case((name == PURCHASE, 1))).label("purchases"),
                func.count(case((name == or_event, 1))).label("red_events"),
                *([self.predicted(Customer).label("predicted")] if self.config.risk.model == "predicted" else []),
                *extra,
            )
            .select_from(Customer)
            .outerjoin(Event, and_(col(Event.customer_id) == col(Customer.id), at <= self.now))
            .where(col(Customer.created_at) <= self.now, *only)
            .group_by(col(Customer.id))
            .subquery()
        )

    @staticmethod
    def grouped(customers: Subquery) -> Facts:
        """The facts from `per_customer`."""
        return Facts(
            last_activity=customers.c.last_activity,
            recent_purchases=customers.c.recent,
            purchased=customers.c.purchases > 0,
            red_event=customers.c.red_events > 0,
            predicted=customers.c.predicted if "predicted" in customers.c else None,
        )

    def inactivity(self) -> dict[str, timedelta]:
        """How long without an event makes a customer lost, red and yellow: the only durations the
        rules compare last activity with (the report counts customers by them)."""
        stages, risk = self.config.stages, self.config.risk
        return {
            "lost": stages.lost.inactive_for,
            "red": risk.inactive_for("red"),
            "yellow": risk.inactive_for("yellow"),
        }

    def inactive(self, rule: str, facts: Facts) -> ColumnElement[bool]:
        """now − last activity ≥ the rule's duration."""  # noqa: RUF002 (the formula as written)
        return facts.last_activity <= self.now - self.inactivity()[rule]

    def activity_limits(self) -> list[datetime]:
        """Every instant the rules compare a customer's last activity with."""
        return [self.now - duration for duration in self.inactivity().values()]

    def counted(
        self, at: datetime, created_at: ColumnElement[datetime], last_activity: ColumnElement[datetime]
    ) -> ColumnElement[bool]:
        """Counted at the instant `at` (retention's S and E): created by then, and not lost as of then,
        `last_activity` being the customer's last activity as of `at` (events stamped ≤ `at` only).
        At `now` this is every customer created by now whose stage is not `lost`."""
        return and_(created_at <= at, last_activity > at - self.config.stages.lost.inactive_for)

    def stage(self, name: str, customer: type[Customer] = Customer, facts: Facts | None = None) -> ColumnElement[bool]:
        facts = facts or self.facts(customer)
        stages = self.config.stages
        lost = self.inactive("lost", facts)
        loyal = and_(not_(lost), facts.recent_purchases >= stages.loyal.purchases)
        return {
            "lost": lost,
            "loyal": loyal,
            "current": and_(not_(lost), not_(loyal), facts.purchased),
            "prospect": and_(not_(lost), not_(facts.purchased)),
        }[name]

    def risk(self, name: str, customer: type[Customer] = Customer, facts: Facts | None = None) -> ColumnElement[bool]:
        """The customer's colour: by the rules, or under `risk.model: predicted` the colour of their
        latest score (`customer_risk`, written by `lifecycle risk train`), the rules for those without one."""
        facts = facts or self.facts(customer)
        red = or_(self.inactive("red", facts), facts.red_event)
        yellow = and_(not_(red), self.inactive("yellow", facts))
        if self.config.risk.model == "predicted":
            rules = case((red, "red"), (yellow, "yellow"), else_="green")
            return (
                func.coalesce(self.predicted(customer) if facts.predicted is None else facts.predicted, rules) == name
            )
        return {"red": red, "yellow": yellow, "green": and_(not_(red), not_(yellow))}[name]

    def predicted(self, customer: type[Customer] = Customer) -> ColumnElement[Any]:
        """The colour of the customer's score made by `now`, else NULL."""
        return (
            select(col(CustomerRisk.colour))
            .where(col(CustomerRisk.customer_id) == customer.id, col(CustomerRisk.scored_at) <= self.now)
            .scalar_subquery()
        )

    def stage_of(self, customer: type[Customer] = Customer, facts: Facts | None = None) -> ColumnElement[str]:
        """The customer's stage by name (one SQL expression): the rules above, first match wins."""
        facts = facts or self.facts(customer)
        return case(*((self.stage(s, customer, facts), s) for s in STAGES))

    def risk_of(self, customer: type[Customer] = Customer, facts: Facts | None = None) -> ColumnElement[str]:
        """The customer's churn risk by name (one SQL expression)."""
        facts = facts or self.facts(customer)
        return case(*((self.risk(r, customer, facts), r) for r in RISKS))

    def values(self) -> Subquery:
        """`customer_id` and `value`: the sum of `value.property` over each customer's `value.event`
        events by `now`, for the customers who have any; a property that is not a number counts 0.
        SQLite reads them in customer order from the index on (customer_id, name, at), grouping as it
        goes; by the index on (name, at) it sorted them first, which took twice as long."""
        value = self.config.value
        number = func.coalesce(json_number(col(Event.properties), value.property), literal(0.0))
        return (
            select(col(Event.customer_id), func.sum(number).label("value"))
            .where(col(Event.name) == value.event, col(Event.at) <= self.now)
            .group_by(col(Event.customer_id))
            .with_hint(Event, "INDEXED BY ix_event_customer_name_at", "sqlite")
            .subquery()
        )
