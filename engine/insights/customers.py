"""One row per customer with their stage, risk, value and last activity: `lifecycle customers`, the
report's red list and the studio's customer list (docs/command-line.md `lifecycle customers`).

Red customers come first, by value (most first), then everyone else by value; ties by the customer's
id. The list is one statement: the customers' facts grouped in one pass over their events
(`Measures.per_customer`), their values from their value events (`Measures.values`), stage and risk
decided by the rules of engine/campaigns/measures.py; filters, order and paging are the database's.
Python only turns the rows it reads into `CustomerRow`s, so a million customers stream through in
constant memory (`each_customer`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Float, Select, case, cast, func, literal, null, or_, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import ColumnElement
from sqlmodel import col

from engine.campaigns.conditions import CORE_FIELDS, ConditionCompiler
from engine.campaigns.language import RISKS, STAGES, Comparison
from engine.campaigns.measures import Facts, Measures
from engine.config.datamodel import convert
from engine.config.settings import Config
from engine.errors import LifecycleError, NotFound
from engine.store.tables import Customer, CustomerRisk

RED = "red"
STREAMED = 1000  # rows fetched at a time when streaming


class BadFilter(LifecycleError):
    """A filter of the customer list that names nothing that exists, or a value of the wrong type."""


@dataclass(frozen=True)
class CustomerRow:
    id: str
    email: str
    stage: str
    risk: str
    churn_probability: float | None  # None under the risk rules
    value: float
    last_activity: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "stage": self.stage,
            "risk": self.risk,
            "churn_probability": self.churn_probability,
            "value": self.value,
            "last_activity": self.last_activity.isoformat(),
        }


COLUMNS = tuple(CustomerRow.__dataclass_fields__)  # the CSV header


def csv_cells(row: CustomerRow) -> list[Any]:
    """A row as `lifecycle customers --format csv` and the studio's download write it: empty for none."""
    return ["" if value is None else value for value in row.as_json().values()]


@dataclass(frozen=True)
class Filters:
    stage: str | None = None
    risk: str | None = None
    topic: str | None = None
    attributes: dict[str, str] | None = None
    search: str | None = None


def customer_rows(
    engine: Engine,
    config: Config,
    now: datetime,
    *,
    stage: str | None = None,
    risk: str | None = None,
    topic: str | None = None,
    attributes: dict[str, str] | None = None,
    search: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[CustomerRow]:
    """The customers that pass the filters, red first by value, then the rest by value, ties by id."""
    filters = Filters(stage, risk, topic, attributes, search)
    return list(each_customer(engine, config, now, filters, limit=limit, offset=offset))


def count_customers(
    engine: Engine,
    config: Config,
    now: datetime,
    *,
    stage: str | None = None,
    risk: str | None = None,
    topic: str | None = None,
    attributes: dict[str, str] | None = None,
    search: str | None = None,
) -> int:
    """How many customers `customer_rows` lists with these filters, for paging."""
    listed = customer_query(config, now, Filters(stage, risk, topic, attributes, search)).subquery()
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(listed)).scalar_one())


def each_customer(
    engine: Engine, config: Config, now: datetime, filters: Filters, limit: int | None = None, offset: int = 0
) -> Iterator[CustomerRow]:
    """The listed customers one at a time, read from the database a batch at a time."""
    query = ordered(customer_query(config, now, filters)).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as connection:
        rows = connection.execution_options(stream_results=True, yield_per=STREAMED).execute(query)
        for row in rows:
            yield _row(row)


def red_list(connection: Connection, config: Config, now: datetime, limit: int) -> list[dict[str, Any]]:
    """The report's red list: the `limit` red customers worth most, with their names."""
    query = ordered(customer_query(config, now, Filters(risk=RED))).limit(limit)
    return [
        {
            "id": row.id,
            "email": row.email,
            "name": " ".join(p for p in (row.first_name, row.last_name) if p) or None,
            "value": round(float(row.value), 2),
            "last_activity": _aware(row.last_activity).isoformat(),
        }
        for row in connection.execute(query)
    ]


def customer_query(config: Config, now: datetime, filters: Filters) -> Select[Any]:
    """Every customer created by `now` that passes the filters, with stage, risk and value; unordered."""
    measures = Measures(config, now)
    # the customer's own columns come along in the one pass, grouped by the key they depend on
    own = (col(Customer.external_id), col(Customer.email), col(Customer.first_name), col(Customer.last_name))
    grouped = measures.per_customer(*own, only=_customer_conditions(config, now, filters))
    values = measures.values()
    facts = Measures.grouped(grouped)
    stage = measures.stage_of(facts=facts)
    risk, probability = risk_columns(measures, facts, grouped.c.id)
    value = func.coalesce(values.c.value, literal(0.0))
    query = select(
        grouped.c.external_id.label("id"),
        grouped.c.email,
        grouped.c.first_name,
        grouped.c.last_name,
        stage.label("stage"),
        risk.label("risk"),
        probability.label("churn_probability"),
        value.label("value"),
        grouped.c.last_activity,
    ).select_from(grouped.outerjoin(values, values.c.customer_id == grouped.c.id))
    return query.where(*_measure_conditions(filters, stage, risk))


def risk_columns(
    measures: Measures, facts: Facts, customer_id: ColumnElement[int]
) -> tuple[ColumnElement[str], ColumnElement[float | None]]:
    """Risk by name and the churn probability behind it: the customer's latest score under
    `risk.model: predicted`, none under the rules."""
    if measures.config.risk.model != "predicted":
        return measures.risk_of(facts=facts), cast(null(), Float)
    probability = (
        select(col(CustomerRisk.probability))
        .where(col(CustomerRisk.customer_id) == customer_id, col(CustomerRisk.scored_at) <= measures.now)
        .scalar_subquery()
    )
    return measures.risk_of(facts=facts), probability


def ordered(query: Select[Any]) -> Select[Any]:
    """Red first, each part by value, most first; ties by the customer's id."""
    columns = query.selected_columns
    return query.order_by(case((columns.risk == RED, 0), else_=1), columns.value.desc(), columns.id)


def _measure_conditions(
    filters: Filters, stage: ColumnElement[str], risk: ColumnElement[str]
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if filters.stage is not None:
        _known("stage", filters.stage, STAGES)
        conditions.append(stage == filters.stage)
    if filters.risk is not None:
        _known("risk", filters.risk, RISKS)
        conditions.append(risk == filters.risk)
    return conditions


def _customer_conditions(config: Config, now: datetime, filters: Filters) -> list[ColumnElement[bool]]:
    """The filters on the customer row, applied before their events are read."""
    conditions: list[ColumnElement[bool]] = []
    compiler = ConditionCompiler(config, now)
    if filters.topic is not None:
        if filters.topic not in config.topics:
            raise NotFound(f"no topic named '{filters.topic}' (known: {', '.join(config.topics) or 'none'})")
        conditions.append(compiler.subscribed(filters.topic))
    for name, text in (filters.attributes or {}).items():
        conditions.append(compiler.attribute(name, Comparison(equals=_typed(config, name, text))))
    if filters.search:
        term = filters.search.lower()
        fields = (Customer.external_id, Customer.email, Customer.first_name, Customer.last_name)
        conditions.append(or_(*(func.lower(col(f)).contains(term, autoescape=True) for f in fields)))
    return conditions


def _known(kind: str, value: str, names: tuple[str, ...]) -> None:
    if value not in names:
        raise BadFilter(f"--{kind}: '{value}' is not one of {', '.join(names)}")


def _typed(config: Config, name: str, text: str) -> Any:
    """An attribute's value written as text, typed as the attribute is: as declared, else as it reads
    (a number, true or false, or text), so that `points=5` finds the number 5."""
    if name in CORE_FIELDS:
        return text
    declared = config.data_model.attribute(name)
    if declared is not None:
        try:
            return convert(declared, text, config.timezone)
        except ValueError as exc:
            raise BadFilter(f"--where {name}: {exc}") from None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    return text


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _row(row: Any) -> CustomerRow:
    return CustomerRow(
        id=row.id,
        email=row.email,
        stage=row.stage,
        risk=row.risk,
        churn_probability=None if row.churn_probability is None else float(row.churn_probability),
        value=round(float(row.value), 2),
        last_activity=_aware(row.last_activity),
    )
