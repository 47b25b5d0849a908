"""Finding a customer from what a person types in a search box: an id, the start of an email, a name.

The store may hold a million customers, so the search reads indexes first: the exact id, then ids and
emails starting with the text (ranges of their indexes). Only when those find no one does it look for
the text inside names, emails and ids, among the newest `SCANNED` customers, so that no search reads
the whole table; and when that finds fewer than asked for, for names that start with the text among
every customer, through the indexes on the lower-cased names (migration 0009):
"ann", "lee" or "ann lee" finds Ann Lee however old her record is (bench/find_customers.py).
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.engine import Connection, Engine
from sqlmodel import col

from engine.errors import NotFound
from engine.store.tables import Customer

SCANNED = 100_000  # the newest customers a search for text inside names and emails looks through
PAST_THE_END = "\U0010ffff"  # sorts after every other character: the end of a range of one prefix
NEIGHBOURS = 5
Reading = Select[
    str, str, str | None, str | None
]  # id, email, first and last name  # ids on each side of an unknown id that may be what was meant


@dataclass(frozen=True)
class CustomerMatch:
    id: str
    email: str
    name: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def find_customers(engine: Engine, query: str, limit: int = 20) -> list[CustomerMatch]:
    """Customers whose id is `query`, whose id or email starts with it, or whose name, email or id
    contains it (case-insensitive), best matches first, at most `limit`."""
    with engine.connect() as connection:
        return search(connection, query, limit)


def search(connection: Connection, query: str, limit: int = 20) -> list[CustomerMatch]:
    text = query.strip()
    if not text or limit < 1:
        return []
    lowered = text.lower()
    readings = [
        _matches().where(col(Customer.external_id) == text),
        _starting(col(Customer.external_id), text),
        _starting(col(Customer.email), lowered),  # emails are stored lower-cased
    ]
    found: dict[str, CustomerMatch] = {}
    for reading in readings:
        for row in connection.execute(reading.limit(limit)):
            found.setdefault(row.external_id, _match(row))
        if len(found) >= limit:
            break
    if not found and len(text) >= 2:
        newest = connection.scalar(select(func.max(col(Customer.id)))) or 0
        for row in connection.execute(_containing(lowered, newest - SCANNED).limit(limit)):
            found.setdefault(row.external_id, _match(row))
        for reading in _named(lowered):
            if len(found) >= limit:
                break
            for row in connection.execute(reading.limit(limit)):
                found.setdefault(row.external_id, _match(row))
    return list(found.values())[:limit]


def no_such_customer(connection: Connection, customer_id: str) -> NotFound:
    """'no customer with id X', with the closest id or the customer whose email or name it is."""
    meant = _closest(connection, customer_id)
    hint = f": did you mean '{meant.id}' ({meant.email})?" if meant else ""
    return NotFound(f"no customer with id '{customer_id}'{hint}")


def _closest(connection: Connection, customer_id: str) -> CustomerMatch | None:
    """The customer whose email was given instead of the id, the only match of a search for it, or
    the nearest id by spelling among its neighbours in the index (an id typed with a slip)."""
    typed = customer_id.strip()
    matches = search(connection, typed, NEIGHBOURS)
    exact = [m for m in matches if m.email == typed.lower()]
    if exact or len(matches) == 1:
        return (exact or matches)[0]
    known = {m.id: m for m in matches}
    external_id = col(Customer.external_id)
    below = _matches().where(external_id < typed).order_by(external_id.desc())
    above = _matches().where(external_id > typed).order_by(external_id)
    for reading in (below, above):
        for row in connection.execute(reading.limit(NEIGHBOURS)):
            known.setdefault(row.external_id, _match(row))
    close = difflib.get_close_matches(typed, list(known), n=1, cutoff=0.6)
    return known[close[0]] if close else None


def _matches() -> Reading:
    return select(col(Customer.external_id), col(Customer.email), col(Customer.first_name), col(Customer.last_name))


def _starting(column: Any, prefix: str) -> Reading:
    """A range of the column's index: every value that starts with `prefix`, in order."""
    return _matches().where(column >= prefix, column < prefix + PAST_THE_END).order_by(column)


def _named(lowered: str) -> list[Reading]:
    """Customers named by the text, among all: a first name that is its first word and a last name
    that starts with the rest ("ann le"), then a first name or a last name that starts with it."""
    first, last = func.lower(col(Customer.first_name)), func.lower(col(Customer.last_name))
    readings = [_starting(first, lowered), _starting(last, lowered)]
    given, _, family = lowered.partition(" ")
    if family.strip():
        readings.insert(0, _starting(last, family.strip()).where(first == given))
    return readings


def _containing(lowered: str, after: int) -> Reading:
    """Customers with an id past `after` whose id, email or name contains the text, newest first: a
    walk back along the primary key that stops at the `limit`th match or at `after`."""
    name = func.lower(func.coalesce(col(Customer.first_name), "") + " " + func.coalesce(col(Customer.last_name), ""))
    inside = [func.lower(col(Customer.external_id)), col(Customer.email), name]
    return (
        _matches()
        .where(col(Customer.id) > after, or_(*(value.contains(lowered, autoescape=True) for value in inside)))
        .order_by(col(Customer.id).desc())
    )


def _match(row: Any) -> CustomerMatch:
    name = " ".join(part for part in (row.first_name, row.last_name) if part)
    return CustomerMatch(row.external_id, row.email, name)
