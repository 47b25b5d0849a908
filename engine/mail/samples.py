"""The data `validate` and `preview` render with when no real customer or event is at hand.

It is typed like real data, so that comparisons, arithmetic and the date, number and money
filters run on samples as they will on customers: the demo store's customers and events, every
declared attribute and property (config.yaml's `attributes:` and `events:`) with a value of its
type, and, when nothing is declared, a value from the store for each name a template uses. The
names it holds are the known ones: any other is an undefined name in `validate`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col

from engine.config.datamodel import Declared, FieldType, convert, iso
from engine.config.settings import Config
from engine.customers.demo_data import sample_customers, sample_events
from engine.store.dialect import make_engine
from engine.store.tables import Customer, Event

# What templates see as `customer` besides attributes (compose.customer_view), and as `event`.
CUSTOMER_FIELDS = ("id", "email", "first_name", "last_name", "locale", "timezone", "created_at")
EVENT_FIELDS = ("name", "at", "properties")


@dataclass
class Samples:
    """Sample customers (one per locale) and the sample properties of each event name."""

    customers: dict[str, dict[str, Any]]
    properties: dict[str, dict[str, Any]] = field(default_factory=dict)

    def customer(self, locale: str) -> dict[str, Any]:
        return {**next(iter(self.customers.values())), **self.customers.get(locale, {}), "locale": locale}

    def attribute_names(self) -> set[str]:
        return {name for customer in self.customers.values() for name in customer}

    def event(self, name: str | None, at: datetime) -> dict[str, Any] | None:
        if name is None:
            return None
        return {"name": name, "at": iso(at), "properties": dict(self.properties.get(name, {}))}


def build_samples(
    config: Config,
    now: datetime,
    attributes: Iterable[str] = (),
    properties: dict[str, set[str]] | None = None,
) -> Samples:
    """The demo store's data, typed by the declarations; without declarations, plus the store's
    values of the named `attributes` and `properties` (by event name) that the demo lacks."""
    customers, events = _demo(now.date())
    samples = Samples({locale: dict(customers.get(locale) or next(iter(customers.values()))) for locale in customers})
    samples.properties = {name: dict(props) for name, props in events.items()}
    model = config.data_model
    if model.declared:
        for customer in samples.customers.values():
            for name, declared in model.attributes.items():
                customer[name] = typed_sample(declared, customer.get(name), now)
        for event, declarations in model.events.items():
            props = samples.properties.setdefault(event, {})
            for name, declared in declarations.items():
                props[name] = typed_sample(declared, props.get(name), now)
        return samples
    known = samples.attribute_names()
    wanted_attributes = [a for a in attributes if a not in known and a not in CUSTOMER_FIELDS]
    wanted_properties = {
        event: [p for p in names if p not in samples.properties.get(event, {})]
        for event, names in (properties or {}).items()
    }
    found_attributes, found_properties = _from_store(config, wanted_attributes, wanted_properties)
    for customer in samples.customers.values():
        customer.update(found_attributes)
    for event, props in found_properties.items():
        samples.properties.setdefault(event, {}).update(props)
    return samples


def typed_sample(declared: Declared, demo: Any, now: datetime) -> Any:
    """The demo's value when it fits the declaration, else a value of the declared type."""
    if demo is not None:
        try:
            return convert(declared, demo)
        except ValueError:
            pass
    if declared.values:
        return list(declared.values[:2]) if declared.type == FieldType.LIST else declared.values[0]
    made: dict[FieldType, Any] = {
        FieldType.STRING: "sample",
        FieldType.NUMBER: 42.5,
        FieldType.INTEGER: 42,
        FieldType.BOOLEAN: True,
        FieldType.DATE: now.date().isoformat(),
        FieldType.DATETIME: iso(now),
        FieldType.LIST: ["sample"],
    }
    return made[declared.type]


@lru_cache(maxsize=1)
def _demo(day: date) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The demo store's customer fields and attributes (one customer per locale, with every
    attribute name any demo customer has) and event properties by event name, made once a day."""
    now = datetime.combine(day, time(12), UTC)
    customers = sample_customers(now, count=40)
    by_locale: dict[str, dict[str, Any]] = {}
    everything: dict[str, Any] = {}
    for customer in customers:
        flat = {k: v for k, v in customer.items() if k not in ("topics", "attributes", "confirmed_at")}
        for name, value in flat.items():
            everything.setdefault(name, value)
        by_locale.setdefault(str(customer.get("locale")), flat)
    samples = {locale: {**everything, **flat} for locale, flat in by_locale.items()}
    properties: dict[str, dict[str, Any]] = {}
    for event in sample_events(customers, now):
        props = properties.setdefault(event["event"], {})
        for name, value in (event.get("properties") or {}).items():
            props.setdefault(name, value)
    return samples, properties


def _from_store(
    config: Config, attributes: list[str], properties: dict[str, list[str]]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A stored value of each named attribute and property, where one exists: one indexed probe
    a name that stops at the first row holding it. No store (or no schema yet) knows nothing."""
    found: dict[str, Any] = {}
    found_properties: dict[str, dict[str, Any]] = {}
    if not attributes and not any(properties.values()):
        return found, found_properties
    url = config.database_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return found, found_properties
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            for name in attributes:
                held = col(Customer.attributes)[name].as_string().is_not(None)
                row = connection.execute(select(col(Customer.attributes)).where(held).limit(1)).first()
                if row is not None:
                    found[name] = row[0][name]
            for event, names in properties.items():
                for name in names:
                    held = col(Event.properties)[name].as_string().is_not(None)
                    query = select(col(Event.properties)).where(col(Event.name) == event, held).limit(1)
                    row = connection.execute(query).first()
                    if row is not None:
                        found_properties.setdefault(event, {})[name] = row[0][name]
    except SQLAlchemyError:
        pass  # no schema yet: nothing is stored, so nothing is known from the store
    finally:
        engine.dispose()
    return found, found_properties
