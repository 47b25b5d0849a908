"""A customer's own choices: topics, frequency, language, unsubscribe from everything, and the
double opt-in confirmation. Every change updates the customer's current state (which the next
tick reads) and appends a `Consent` row with the time and the channel it came through.

The web service calls this module; it knows nothing of HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import Insert

from engine.config.settings import Config
from engine.store.dialect import insert_new, upsert
from engine.store.tables import Consent, Customer, Event, Subscription, table_of

FREQUENCY_CHOICES = {"weekly": timedelta(days=7), "monthly": timedelta(days=30)}  # a customer's own cap of 1 per
FREQUENCIES = tuple(FREQUENCY_CHOICES)  # besides None: as often as the campaigns allow
CONFIRMED_EVENT = "confirmed"  # the welcome campaign starts on it

# Built once: the preference centre runs these on every page view, and composing a statement
# costs several times more than SQLite takes to answer it.
CUSTOMERS, SUBSCRIPTIONS, CONSENTS = table_of(Customer), table_of(Subscription), table_of(Consent)
CHOICES = (
    select(
        CUSTOMERS.c.locale,
        CUSTOMERS.c.frequency,
        CUSTOMERS.c.unsubscribed_at,
        SUBSCRIPTIONS.c.topic,
        SUBSCRIPTIONS.c.subscribed,
    )
    .outerjoin(SUBSCRIPTIONS, SUBSCRIPTIONS.c.customer_id == CUSTOMERS.c.id)
    .where(CUSTOMERS.c.id == bindparam("customer_id"))
)
UPDATE_CUSTOMER = update(CUSTOMERS).where(CUSTOMERS.c.id == bindparam("customer_id"))
CONFIRM = UPDATE_CUSTOMER.where(CUSTOMERS.c.confirmed_at.is_(None))


@dataclass(frozen=True)
class Choices:
    """What a customer can set in the preference centre."""

    topics: dict[str, bool]  # every declared topic: subscribed or not
    frequency: str | None  # None, 'weekly' or 'monthly'
    locale: str
    unsubscribed: bool  # from all marketing


class Preferences:
    """Reads and changes a customer's choices on a connection the caller holds: a change is part
    of the caller's transaction, so several customers' changes can share one commit."""

    def __init__(self, config: Config):
        self.config = config

    def load(self, connection: Connection, customer_id: int) -> Choices | None:
        """The customer's current choices, topics without a choice at their default; None if the
        customer does not exist. One query: the customer's row joined with each topic choice."""
        rows = _fetch_choices(connection, customer_id)
        if not rows:
            return None
        chosen = {topic: bool(subscribed) for *_, topic, subscribed in rows if topic is not None}
        topics = {name: chosen.get(name, topic.default == "subscribed") for name, topic in self.config.topics.items()}
        locale, frequency, unsubscribed_at, *_ = rows[0]
        locale = locale if locale in self.config.locales else self.config.default_locale
        return Choices(topics, frequency, locale, unsubscribed_at is not None)

    def save(
        self, connection: Connection, customer_id: int, wanted: Choices, source: str, now: datetime
    ) -> Choices | None:
        """Store what differs from the current choices (a consent row for each difference).
        Returns the choices after it, None if the customer does not exist."""
        current = self.load(connection, customer_id)
        if current is None:
            return None
        actions: list[tuple[str, str | None]] = []
        for topic, subscribed in wanted.topics.items():
            if topic in current.topics and current.topics[topic] != subscribed:
                _choose_topic(connection, customer_id, topic, subscribed, source, now)
                actions.append(("subscribe" if subscribed else "unsubscribe", topic))
        columns: dict[str, Any] = {}
        if wanted.frequency != current.frequency:
            columns["frequency"] = wanted.frequency
            actions.append((f"frequency:{wanted.frequency or 'any'}", None))
        if wanted.locale != current.locale:
            columns["locale"] = wanted.locale
            actions.append((f"locale:{wanted.locale}", None))
        if wanted.unsubscribed != current.unsubscribed:
            columns["unsubscribed_at"] = now if wanted.unsubscribed else None
            actions.append(("unsubscribe_all" if wanted.unsubscribed else "resubscribe_all", None))
        if columns:
            connection.execute(UPDATE_CUSTOMER, {"customer_id": customer_id, **columns})
        _record(connection, customer_id, actions, source, now)
        return self.load(connection, customer_id)

    def unsubscribe(
        self, connection: Connection, customer_id: int, topic: str | None, source: str, now: datetime
    ) -> Choices | None:
        """One-click unsubscribe from the topic of the email, or from all marketing when the email
        had no topic; repeating it changes nothing. Returns the choices after it, None if the
        customer does not exist."""
        current = self.load(connection, customer_id)
        if current is None:
            return None
        if topic is None and not current.unsubscribed:
            connection.execute(UPDATE_CUSTOMER, {"customer_id": customer_id, "unsubscribed_at": now})
            _record(connection, customer_id, [("unsubscribe_all", None)], source, now)
            return replace(current, unsubscribed=True)
        if topic is not None and current.topics.get(topic) is not False:
            _choose_topic(connection, customer_id, topic, False, source, now)
            _record(connection, customer_id, [("unsubscribe", topic)], source, now)
            return replace(current, topics={**current.topics, topic: False})
        return current

    def confirm(self, connection: Connection, customer_id: int, source: str, now: datetime) -> Choices | None:
        """Double opt-in: the first click records the confirmation, its consent row and a
        `confirmed` event (which starts the welcome drip); later clicks change nothing.
        Returns the customer's choices, None if the customer does not exist."""
        current = self.load(connection, customer_id)
        if current is None:
            return None
        changed = connection.execute(
            CONFIRM, {"customer_id": customer_id, "confirmed_at": now, "confirmed_source": source}
        ).rowcount
        if changed:
            _record(connection, customer_id, [("confirm", None)], source, now)
            connection.execute(
                insert_new(connection, table_of(Event), ["uid"]),
                {
                    "uid": f"{CONFIRMED_EVENT}:{customer_id}",
                    "customer_id": customer_id,
                    "name": CONFIRMED_EVENT,
                    "at": now,
                    "properties": {"source": source},
                },
            )
        return current


def _fetch_choices(connection: Connection, customer_id: int) -> Sequence[Any]:
    """The rows of CHOICES, run on the driver's cursor of the caller's connection (and transaction).
    Every preference page and unsubscribe starts here, and SQLAlchemy's execution machinery costs
    several times what the query itself does (bench/web_latency.py)."""
    compiled = _compiled_choices(connection.dialect)
    params = compiled.construct_params({"customer_id": customer_id})
    cursor = connection.connection.cursor()
    try:
        names = compiled.positiontup  # None unless the driver takes parameters by position
        cursor.execute(compiled.string, params if names is None else [params[name] for name in names])
        return cursor.fetchall()
    finally:
        cursor.close()


@cache
def _compiled_choices(dialect: Dialect) -> SQLCompiler:
    return CHOICES.compile(dialect=dialect)


def _choose_topic(
    connection: Connection, customer_id: int, topic: str, subscribed: bool, source: str, now: datetime
) -> None:
    """Set the customer's current row for the topic."""
    connection.execute(
        _topic_choice(connection.dialect),
        {"customer_id": customer_id, "topic": topic, "subscribed": subscribed, "updated_at": now, "source": source},
    )


@cache
def _topic_choice(dialect: Dialect) -> Insert:
    """Built once per database, like CHOICES."""
    return upsert(dialect, SUBSCRIPTIONS, ["customer_id", "topic"])


def _record(
    connection: Connection, customer_id: int, actions: list[tuple[str, str | None]], source: str, now: datetime
) -> None:
    """The append-only consent trail: one row per change."""
    if actions:
        connection.execute(
            CONSENTS.insert(),
            [
                {"customer_id": customer_id, "action": action, "topic": topic, "at": now, "source": source}
                for action, topic in actions
            ],
        )
