"""What the churn model and the backtest know of each customer at a cut-off, and what happened after.

Features are read set-wise: one grouped query over the customers and their events, one over their
sends, each a row per customer, every aggregate limited to what was stamped by the cut-off. What
happened after it (the label) is a separate query, so no feature can see the future it predicts
(tests/test_risk_model.py adds later events and finds the features unchanged).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy
import pandas
from sqlalchemy import and_, case, func, literal, select
from sqlalchemy.engine import Connection
from sqlmodel import col

from engine.config.settings import Config
from engine.store.dialect import days_between, read_json
from engine.store.tables import Customer, Event, Send

MISSING = -1.0
RECENT = timedelta(days=30)
WINDOWS = (
    30,
    180,
    365,
)  # days: how the rate of buying has changed lately  # "active lately": any event within this before the cut-off

# The model's inputs, in order. Durations are in days; a gap or rate that does not exist yet is -1
# (every feature is otherwise at least 0): the trees split it off, where a column of NaN alone
# would stop scikit-learn's binning.
FEATURES = (
    "recency",  # since the last value event (since sign-up for those without one)
    "activity_recency",  # since the last event of any name (the rules' "last activity")
    "frequency",  # value events so far
    "recent_frequency",  # value events within the horizon before the cut-off
    *(f"frequency_{days}d" for days in WINDOWS),  # value events within each window before the cut-off
    "value",  # the sum of value.property
    "mean_value",
    "tenure",  # since sign-up
    "mean_gap",  # the mean gap between value events
    "overdue",  # recency / mean_gap: how late the next purchase is against the customer's own rhythm
    "recent_events",  # events of any name within 30 days
    "red_events",  # events named by risk.red.or_event (complaints)
    "sends",
    "opens",
    "clicks",
    "complaints",
    "unsubscribes",
    "open_rate",
    "click_rate",
    "unsubscribed",  # unsubscribed from everything by the cut-off
)


def customer_facts(connection: Connection, config: Config, cutoff: datetime, horizon: timedelta) -> pandas.DataFrame:
    """A row per customer created by `cutoff` (index: customer id) with the raw facts known then;
    times as days before the cut-off (NaN: never)."""
    at, name = col(Event.at), col(Event.name)
    value_event = name == config.value.event
    properties = col(Event.properties)
    amount = read_json(properties, properties[config.value.property].as_float())
    or_event = config.risk.red.or_event
    query = (
        select(
            col(Customer.id),
            days_between(col(Customer.created_at), cutoff).label("tenure"),
            case((col(Customer.unsubscribed_at) <= cutoff, 1), else_=0).label("unsubscribed"),
            func.count(case((value_event, 1))).label("frequency"),
            func.count(case((and_(value_event, at > cutoff - horizon), 1))).label("recent_frequency"),
            *(
                func.count(case((and_(value_event, at > cutoff - timedelta(days=days)), 1))).label(f"frequency_{days}d")
                for days in WINDOWS
            ),
            days_between(func.min(case((value_event, at))), cutoff).label("since_first_value"),
            days_between(func.max(case((value_event, at))), cutoff).label("since_value"),
            func.coalesce(func.sum(case((value_event, amount))), 0.0).label("value"),
            days_between(func.max(at), cutoff).label("since_event"),
            func.count(case((at > cutoff - RECENT, 1))).label("recent_events"),
            func.count(case((name == or_event, 1))).label("red_events") if or_event else literal(0).label("red_events"),
        )
        .select_from(Customer)
        .outerjoin(Event, and_(col(Event.customer_id) == col(Customer.id), at <= cutoff))
        .where(col(Customer.created_at) <= cutoff)
        .group_by(col(Customer.id))
    )
    return _frame(connection, query)


def engagement(connection: Connection, cutoff: datetime) -> pandas.DataFrame:
    """Per customer, their emails sent by `cutoff` and what came of them by then."""

    def by(column: Any) -> Any:
        return func.count(case((column <= cutoff, 1)))

    query = (
        select(
            col(Send.customer_id).label("id"),
            func.count().label("sends"),
            by(col(Send.opened_at)).label("opens"),
            by(col(Send.clicked_at)).label("clicks"),
            by(col(Send.complained_at)).label("complaints"),
            by(col(Send.unsubscribed_at)).label("unsubscribes"),
        )
        .where(col(Send.sent_at) <= cutoff)
        .group_by(col(Send.customer_id))
    )
    return _frame(connection, query)


def _frame(connection: Connection, query: Any) -> pandas.DataFrame:
    """The rows, all numbers, as floats (NULL: NaN) indexed by customer id: one conversion of the
    whole array rather than a pass over each row's values."""
    result = connection.execute(query)
    columns = list(result.keys())
    # tuples first: numpy probes a Row for array interfaces, and each failed probe raises inside SQLAlchemy
    values = numpy.array([tuple(row) for row in result], dtype=float).reshape(-1, len(columns))
    frame = pandas.DataFrame(
        values[:, 1:], columns=columns[1:], index=pandas.Index(values[:, 0].astype(numpy.int64), name="id")
    )
    return frame


def features_at(connection: Connection, config: Config, cutoff: datetime) -> pandas.DataFrame:
    """The model's features (`FEATURES`) per customer created by `cutoff`, from what was stamped by it."""
    facts = customer_facts(connection, config, cutoff, config.risk.horizon)
    mails = engagement(connection, cutoff).reindex(facts.index, fill_value=0)
    frame = pandas.DataFrame(index=facts.index)
    tenure = facts["tenure"]
    frame["recency"] = facts["since_value"].fillna(tenure)
    frame["activity_recency"] = facts["since_event"].fillna(tenure)
    frame["frequency"] = facts["frequency"]
    for column in ("recent_frequency", *(f"frequency_{days}d" for days in WINDOWS)):
        frame[column] = facts[column]
    frame["value"] = facts["value"]
    frame["mean_value"] = frame["value"] / frame["frequency"].replace(0, numpy.nan)
    frame["tenure"] = tenure
    span = facts["since_first_value"] - facts["since_value"]
    frame["mean_gap"] = span / (frame["frequency"] - 1).where(frame["frequency"] > 1)
    frame["overdue"] = frame["recency"] / frame["mean_gap"].where(frame["mean_gap"] > 0)
    frame["recent_events"] = facts["recent_events"]
    frame["red_events"] = facts["red_events"]
    for column in ("sends", "opens", "clicks", "complaints", "unsubscribes"):
        frame[column] = mails[column]
    sent = frame["sends"].replace(0, numpy.nan)
    frame["open_rate"] = frame["opens"] / sent
    frame["click_rate"] = frame["clicks"] / sent
    frame["unsubscribed"] = facts["unsubscribed"]
    return frame[list(FEATURES)].fillna(MISSING)


def churned(
    connection: Connection, config: Config, cutoff: datetime, horizon: timedelta, ids: pandas.Index
) -> pandas.Series:
    """The label of each of these customers: True when they did no value event in (cutoff, cutoff + horizon]."""
    at = col(Event.at)
    bought = (
        select(col(Event.customer_id))
        .where(col(Event.name) == config.value.event, at > cutoff, at <= cutoff + horizon)
        .distinct()
    )
    buyers = numpy.fromiter((row[0] for row in connection.execute(bought)), dtype=numpy.int64)
    return pandas.Series(~ids.isin(buyers), index=ids, name="churned")
