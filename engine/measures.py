"""Stages, churn risk and last activity as SQL expressions over one customer row, defined once
(../shared/spec/README.md "Measures") and used by audience conditions and by the report alike."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, exists, false, func, not_, or_, select
from sqlalchemy.sql import ColumnElement

from .config import Config
from .store import Customer, Event

PURCHASE = "purchase"


class Measures:
    def __init__(self, config: Config, now: datetime):
        self.config = config
        self.now = now

    def seen_events(self, customer=Customer):
        """Events of the customer that have happened by `now` (later ones are not seen yet)."""
        return and_(Event.customer_id == customer.id, Event.at <= self.now)

    def last_activity(self, customer=Customer) -> ColumnElement:
        latest = select(func.max(Event.at)).where(self.seen_events(customer)).scalar_subquery()
        return func.coalesce(latest, customer.created_at)

    def inactive_for(self, duration, customer=Customer) -> ColumnElement:
        return self.last_activity(customer) <= self.now - duration

    def has_event(self, name: str, customer=Customer, since: datetime | None = None) -> ColumnElement:
        query = select(Event.id).where(self.seen_events(customer), Event.name == name)
        if since is not None:
            query = query.where(Event.at > since)
        return exists(query)

    def stage(self, name: str, customer=Customer) -> ColumnElement:
        stages = self.config.stages
        lost = self.inactive_for(stages.lost.inactive_for, customer)
        recent = (select(func.count(Event.id))
                  .where(self.seen_events(customer), Event.name == PURCHASE,
                         Event.at > self.now - stages.loyal.within)
                  .scalar_subquery())
        loyal = and_(not_(lost), recent >= stages.loyal.purchases)
        purchased = self.has_event(PURCHASE, customer)
        return {
            "lost": lost,
            "loyal": loyal,
            "current": and_(not_(lost), not_(loyal), purchased),
            "prospect": and_(not_(lost), not_(purchased)),
        }[name]

    def risk(self, name: str, customer=Customer) -> ColumnElement:
        risk = self.config.risk
        red_event = self.has_event(risk.red.or_event, customer) if risk.red.or_event else false()
        red = or_(self.inactive_for(risk.red.inactive_for, customer), red_event)
        yellow = and_(not_(red), self.inactive_for(risk.yellow.inactive_for, customer))
        return {"red": red, "yellow": yellow, "green": and_(not_(red), not_(yellow))}[name]
