"""Stages, churn risk and last activity as SQL expressions over one customer row, defined once
(docs/campaigns.md "Stages and risk") and used by audience conditions and by the report alike.

Stage and risk are decided from a customer's `Facts`. Audience conditions take them as correlated
subqueries on the customer row (`Measures.facts`); the report passes columns it has grouped for all
customers in one pass over the events instead, so the rules themselves exist once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, exists, false, func, not_, or_, select
from sqlalchemy.sql import ColumnElement
from sqlmodel import col

from engine.config.settings import Config
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

    def has_event(
        self, name: str, customer: type[Customer] = Customer, since: datetime | None = None
    ) -> ColumnElement[bool]:
        query = select(col(Event.id)).where(self.seen_events(customer), col(Event.name) == name)
        if since is not None:
            query = query.where(col(Event.at) > since)
        return exists(query)

    def loyal_since(self) -> datetime:
        """Purchases after this count towards `loyal`."""
        return self.now - self.config.stages.loyal.within

    def facts(self, customer: type[Customer] = Customer) -> Facts:
        """The facts as correlated subqueries on the customer row."""
        recent = (
            select(func.count(col(Event.id)))
            .where(self.seen_events(customer), col(Event.name) == PURCHASE, col(Event.at) > self.loyal_since())
            .scalar_subquery()
        )
        or_event = self.config.risk.red.or_event
        return Facts(
            last_activity=self.last_activity(customer),
            recent_purchases=recent,
            purchased=self.has_event(PURCHASE, customer),
            red_event=self.has_event(or_event, customer) if or_event else false(),
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
        return facts.last_activity <= self.now - self.inactivity()[rule]

    def activity_limits(self) -> list[datetime]:
        """Every instant the rules compare a customer's last activity with."""
        return [self.now - duration for duration in self.inactivity().values()]

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

    def stage_of(self, customer: type[Customer] = Customer) -> ColumnElement[str]:
        """The customer's stage by name (one SQL expression): the rules above, first match wins."""
        facts = self.facts(customer)
        named = [(self.stage(name, customer, facts), name) for name in ("lost", "loyal", "current")]
        return case(*named, else_="prospect")

    def risk_of(self, customer: type[Customer] = Customer) -> ColumnElement[str]:
        """The customer's churn risk by name (one SQL expression), as `risk` decides it."""
        facts = self.facts(customer)
        return case(*((self.risk(name, customer, facts), name) for name in ("red", "yellow")), else_="green")
