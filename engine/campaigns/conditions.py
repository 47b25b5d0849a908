"""Audience conditions compiled to one SQL expression over the customer table, so that an
audience is selected set-wise in the database rather than customer by customer in Python."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from functools import partial
from typing import Any

from sqlalchemy import and_, false, func, literal, not_, or_, select, true
from sqlalchemy.sql import ColumnElement
from sqlmodel import col

from engine.campaigns.language import Comparison, Condition
from engine.campaigns.measures import Measures
from engine.config.datamodel import iso
from engine.config.settings import Config
from engine.store.dialect import read_json
from engine.store.tables import Customer, Event, Subscription

CORE_FIELDS = {"email", "first_name", "last_name", "locale", "timezone", "created_at", "confirmed_at"}


class ConditionCompiler:
    def __init__(self, config: Config, now: datetime):
        self.config = config
        self.now = now
        self.measures = Measures(config, now)

    def all_of(self, conditions: list[Condition], customer: type[Customer] = Customer) -> ColumnElement[bool]:
        return and_(true(), *(self.condition(c, customer) for c in conditions))

    def condition(self, c: Condition, customer: type[Customer] = Customer) -> ColumnElement[bool]:
        if c.any is not None:
            return or_(false(), *(self.condition(x, customer) for x in c.any))
        if c.not_ is not None:
            return not_(self.condition(c.not_, customer))
        if c.stage is not None:
            return self.measures.stage(c.stage, customer)
        if c.risk is not None:
            return self.measures.risk(c.risk, customer)
        if c.subscribed is not None:
            return self.subscribed(c.subscribed, customer)
        if c.event is not None:
            return self.history(c, customer)
        assert c.attribute is not None  # a condition names exactly one kind (Condition._one_kind)
        return self.attribute(c.attribute, c.comparison(), customer)

    def subscribed(self, topic: str, customer: type[Customer] = Customer) -> ColumnElement[bool]:
        declared = self.config.topics.get(topic)
        default = declared is None or declared.default == "subscribed"
        choice = (
            select(col(Subscription.subscribed))
            .where(col(Subscription.customer_id) == customer.id, col(Subscription.topic) == topic)
            .scalar_subquery()
        )
        return func.coalesce(choice, literal(default)) == true()

    def history(self, c: Condition, customer: type[Customer] = Customer) -> ColumnElement[bool]:
        count = self.history_count(c, customer)
        if c.at_least is None and c.at_most is None:
            return count >= 1
        checks: list[ColumnElement[bool]] = []
        if c.at_least is not None:
            checks.append(count >= c.at_least)
        if c.at_most is not None:
            checks.append(count <= c.at_most)
        return and_(*checks)

    def history_count(self, c: Condition, customer: type[Customer] = Customer) -> ColumnElement[int]:
        """How many of the events an event-history condition names the customer did (seen by now)."""
        query = select(func.count(col(Event.id))).where(self.measures.seen_events(customer), col(Event.name) == c.event)
        if c.within is not None:
            query = query.where(col(Event.at) > self.now - c.within)
        return query.where(self.where(c.where)).scalar_subquery()

    def where(self, where: dict[str, Comparison] | None, table: type[Event] = Event) -> ColumnElement[bool]:
        """Filters on the properties of an event (`where:` of triggers, exits and history)."""
        if not where:
            return true()
        return and_(
            *(self.compare(partial(_json, table.properties, name), comparison) for name, comparison in where.items())
        )

    def attribute(self, name: str, comparison: Comparison, customer: type[Customer] = Customer) -> ColumnElement[bool]:
        if name in CORE_FIELDS:
            column = getattr(customer, name)
            return self.compare(lambda kind: column, comparison, native_dates=name.endswith("_at"))
        return self.compare(lambda kind: _json(customer.attributes, name, kind), comparison)

    def compare(
        self, value_of: Callable[[str], ColumnElement[Any]], comparison: Comparison, native_dates: bool = False
    ) -> ColumnElement[bool]:
        """One operator applied to a value; `value_of(kind)` extracts it typed as the operand."""
        ((operator, operand),) = comparison.operators().items()
        if operator == "exists":
            present = value_of("string").is_not(None)
            return present if operand else not_(present)
        if operator in ("within_last", "within_next"):
            start, end = (self.now - operand, self.now) if operator == "within_last" else (self.now, self.now + operand)
            value = value_of("date")
            if native_dates:
                return and_(value >= start, value <= end)
            return and_(value >= iso(start), value <= iso(end))
        sample = operand[0] if isinstance(operand, list) and operand else operand
        value = value_of(_kind(sample))
        operand = _operand(operand, native_dates)
        tests: dict[str, Callable[[], ColumnElement[bool]]] = {
            "equals": lambda: value == operand,
            "not_equals": lambda: or_(value.is_(None), value != operand),
            "in": lambda: value.in_(operand),
            "not_in": lambda: or_(value.is_(None), value.not_in(operand)),
            "gt": lambda: value > operand,
            "gte": lambda: value >= operand,
            "lt": lambda: value < operand,
            "lte": lambda: value <= operand,
        }
        return tests[operator]()


def _kind(sample: Any) -> str:
    if isinstance(sample, bool):
        return "boolean"
    if isinstance(sample, (int, float)):
        return "number"
    if isinstance(sample, (datetime, date)):
        return "date"
    return "string"


def _operand(operand: Any, native_dates: bool) -> Any:
    if isinstance(operand, list):
        return [_operand(x, native_dates) for x in operand]
    if isinstance(operand, (datetime, date)) and not native_dates:
        return iso(operand)
    return operand


def _json(column: Any, name: str, kind: str) -> ColumnElement[Any]:
    """The JSON column's value at `name`, read as `kind`. (SQLAlchemy's types know a JSON column's
    index as a plain expression, without these readers: hence `column: Any`.)"""
    element = column[name]
    if kind == "number":
        value: ColumnElement[Any] = element.as_float()
    elif kind == "boolean":
        value = element.as_boolean()
    else:
        value = element.as_string()
    return read_json(column, value)
