"""A customer's own choices: topics, frequency, language, unsubscribe from everything, and the
double opt-in confirmation. Every change updates the customer's current state (which the next
tick reads) and appends a `Consent` row with the time and the channel it came through.

The web service calls this module; it knows nothing of HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine

from .config import Config
from .ledger import FREQUENCY_CHOICES
from .store import Consent, Customer, Event, Subscription, insert_new

FREQUENCIES = tuple(FREQUENCY_CHOICES)  # besides None: as often as the campaigns allow
CONFIRMED_EVENT = "confirmed"  # the welcome campaign starts on it


@dataclass(frozen=True)
class Choices:
    """What a customer can set in the preference centre."""

    topics: dict[str, bool]  # every declared topic: subscribed or not
    frequency: str | None  # None, 'weekly' or 'monthly'
    locale: str
    unsubscribed: bool  # from all marketing


class Preferences:
    def __init__(self, engine: Engine, config: Config):
        self.engine = engine
        self.config = config

    def load(self, customer_id: int) -> Choices | None:
        """The customer's current choices, topics without a choice at their default; None if the
        customer does not exist."""
        with self.engine.connect().execution_options(read_only=True) as connection:
            return self._current(connection, customer_id)

    def _current(self, connection: Connection, customer_id: int) -> Choices | None:
        """One query: the customer's row joined with each topic choice they made."""
        rows = connection.execute(
            select(Customer.locale, Customer.frequency, Customer.unsubscribed_at, Subscription.topic,
                   Subscription.subscribed)
            .outerjoin(Subscription, Subscription.customer_id == Customer.id)
            .where(Customer.id == customer_id)).all()
        if not rows:
            return None
        chosen = {row.topic: row.subscribed for row in rows if row.topic is not None}
        topics = {name: chosen.get(name, topic.default == "subscribed") for name, topic in self.config.topics.items()}
        first = rows[0]
        locale = first.locale if first.locale in self.config.locales else self.config.default_locale
        return Choices(topics, first.frequency, locale, first.unsubscribed_at is not None)

    def save(self, customer_id: int, wanted: Choices, source: str, now: datetime) -> Choices | None:
        """Store what differs from the current choices (a consent row for each difference), in one
        transaction. Returns the choices after it, None if the customer does not exist."""
        with self.engine.begin() as connection:
            current = self._current(connection, customer_id)
            if current is None:
                return None
            actions = []
            for topic, subscribed in wanted.topics.items():
                if topic in current.topics and current.topics[topic] != subscribed:
                    _choose_topic(connection, customer_id, topic, subscribed, source, now)
                    actions.append(("subscribe" if subscribed else "unsubscribe", topic))
            columns = {}
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
                connection.execute(update(Customer).where(Customer.id == customer_id).values(columns))
            _record(connection, customer_id, actions, source, now)
            return self._current(connection, customer_id)

    def unsubscribe(self, customer_id: int, topic: str | None, source: str, now: datetime) -> Choices | None:
        """One-click unsubscribe from the topic of the email, or from all marketing when the email
        had no topic; repeating it changes nothing. Returns the choices after it, None if the
        customer does not exist."""
        with self.engine.begin() as connection:
            current = self._current(connection, customer_id)
            if current is None:
                return None
            if topic is None and not current.unsubscribed:
                connection.execute(update(Customer).where(Customer.id == customer_id).values(unsubscribed_at=now))
                _record(connection, customer_id, [("unsubscribe_all", None)], source, now)
                return replace(current, unsubscribed=True)
            if topic is not None and current.topics.get(topic) is not False:
                _choose_topic(connection, customer_id, topic, False, source, now)
                _record(connection, customer_id, [("unsubscribe", topic)], source, now)
                return replace(current, topics={**current.topics, topic: False})
            return current

    def confirm(self, customer_id: int, source: str, now: datetime) -> Choices | None:
        """Double opt-in: the first click records the confirmation, its consent row and a
        `confirmed` event (which starts the welcome drip); later clicks change nothing.
        Returns the customer's choices, None if the customer does not exist."""
        with self.engine.begin() as connection:
            current = self._current(connection, customer_id)
            if current is None:
                return None
            changed = connection.execute(update(Customer).where(Customer.id == customer_id,
                                                                Customer.confirmed_at.is_(None))
                                         .values(confirmed_at=now, confirmed_source=source)).rowcount
            if changed:
                _record(connection, customer_id, [("confirm", None)], source, now)
                connection.execute(insert_new(connection, Event.__table__, ["uid"]),
                                   {"uid": f"{CONFIRMED_EVENT}:{customer_id}", "customer_id": customer_id,
                                    "name": CONFIRMED_EVENT, "at": now, "properties": {"source": source}})
            return current


def _choose_topic(connection: Connection, customer_id: int, topic: str, subscribed: bool, source: str,
                  now: datetime) -> None:
    """Replace the customer's current row for the topic."""
    connection.execute(Subscription.__table__.delete().where(Subscription.customer_id == customer_id,
                                                             Subscription.topic == topic))
    connection.execute(Subscription.__table__.insert(), {"customer_id": customer_id, "topic": topic,
                                                         "subscribed": subscribed, "updated_at": now,
                                                         "source": source})


def _record(connection: Connection, customer_id: int, actions: list[tuple[str, str | None]], source: str,
            now: datetime) -> None:
    """The append-only consent trail: one row per change."""
    if actions:
        connection.execute(Consent.__table__.insert(), [{"customer_id": customer_id, "action": action,
                                                         "topic": topic, "at": now, "source": source}
                                                        for action, topic in actions])
