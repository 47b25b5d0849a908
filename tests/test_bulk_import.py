"""Bulk imports: on PostgreSQL a batch goes in by COPY through a staging table, elsewhere by INSERT;
both store the same rows, in their order, skip an event id already stored (in the store or earlier
in the same batch), and keep every value as given."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime

from conftest import customer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlmodel import SQLModel

from engine.customers.importing import CUSTOMERS, EVENTS
from engine.store.dialect import copy_rows, insert_rows, make_engine

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def test_a_large_import_stores_the_same_rows_either_way(store_project):
    project = store_project
    people = [customer(f"c{n:03}", first_name=f"N{n}", tier=n % 3, joined="2026-02-01") for n in range(150)]
    project.customers(*people)
    events = [
        {
            "id": f"e{n % 240}",
            "customer": f"c{n % 150:03}",
            "event": "purchase",
            "at": f"2026-03-01T10:{n % 60:02}:00Z",
            "properties": {"total": n + 0.5, "items": ["a", {"b": n}], "note": 'ü \\u0001 "q"'},
        }
        for n in range(250)
    ]
    plain = [{"customer": "c000", "event": "login", "at": "2026-03-02T08:00:00+02:00"} for _ in range(120)]
    project.events(*events, *plain)
    project.events(*events[:130])  # a retry: every id is taken
    stored = project.query("SELECT uid, name, properties FROM event WHERE uid IS NOT NULL ORDER BY id")
    assert [uid for uid, _, _ in stored] == [f"e{n}" for n in range(240)]  # in order; e0..e9 once
    first = stored[7][2] if isinstance(stored[7][2], dict) else json.loads(stored[7][2])
    assert first == {"total": 7.5, "items": ["a", {"b": 7}], "note": 'ü \\u0001 "q"'}
    logins = project.query("SELECT at FROM event WHERE name = 'login'")
    assert len(logins) == 120 and {str(at)[:16] for (at,) in logins} == {"2026-03-02 06:00"}
    row = project.query("SELECT first_name, attributes, created_at FROM customer WHERE external_id = 'c149'")[0]
    attributes = row[1] if isinstance(row[1], dict) else json.loads(row[1])
    assert (row[0], attributes["tier"]) == ("N149", 149 % 3)
    assert str(row[2]).startswith("2026-01-01")
    assert project.query("SELECT count(*) FROM customer") == [(150,)]


def test_bulk_rows_are_written_as_sqlalchemy_writes_them(store_project):
    """COPY and SQLite's executemany bind each value through its column's type for the database, as
    SQLAlchemy's own statements do: a time stored so is found by an equal time bound by SQLAlchemy
    (on SQLite both are text, and a time in another format would match nothing)."""
    project = store_project
    project.customers(customer("c1"))
    project.events(
        *(
            {"id": f"e{n}", "customer": "c1", "event": "visit", "at": f"2026-03-01T10:00:{n % 60:02}.5Z"}
            for n in range(120)
        )
    )
    at = datetime(2026, 3, 1, 10, 0, 7, 500000, tzinfo=UTC)
    with project.db.connect() as connection:
        found = connection.execute(select(EVENTS.c.uid).where(EVENTS.c.at == at).order_by(EVENTS.c.uid))
        assert found.scalars().all() == ["e67", "e7"]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
INSTANTS = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC))
ROWS = st.lists(
    st.tuples(INSTANTS, st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4)), min_size=1, max_size=5
)
examples = itertools.count()


@settings(max_examples=30, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(rows=ROWS)
def test_sqlite_bulk_rows_are_byte_for_byte_what_sqlalchemy_writes(tmp_path, rows):
    """The driver's executemany (`execute_rows`) stores exactly the text SQLAlchemy's own insert
    stores, for any times and any JSON properties: one is a shortcut of the other, not a variant."""
    engine = make_engine(f"sqlite:///{tmp_path / 'bound.db'}")
    SQLModel.metadata.create_all(engine, tables=[CUSTOMERS, EVENTS])
    n = next(examples)
    with engine.begin() as connection:
        customer = {"external_id": f"c{n}", "email": "c@x.example", "created_at": NOW, "attributes": {}}
        connection.execute(CUSTOMERS.insert(), [customer])
        customer_id = connection.execute(select(CUSTOMERS.c.id).where(CUSTOMERS.c.external_id == f"c{n}")).scalar_one()
        made = [
            {"uid": f"{n}-{i}", "customer_id": customer_id, "name": "e", "at": at, "properties": properties}
            for i, (at, properties) in enumerate(rows)
        ]
        insert_rows(connection, EVENTS, [{**row, "uid": f"bulk-{row['uid']}"} for row in made])
        connection.execute(EVENTS.insert(), [{**row, "uid": f"core-{row['uid']}"} for row in made])
        stored = connection.exec_driver_sql(
            "SELECT uid, at, properties FROM event WHERE uid LIKE ? OR uid LIKE ?", (f"bulk-{n}-%", f"core-{n}-%")
        ).all()
    engine.dispose()
    by_way = {
        way: sorted((uid.split("-", 1)[1], at, text) for uid, at, text in stored if uid.startswith(way))
        for way in ("bulk", "core")
    }
    assert by_way["bulk"] == by_way["core"] and len(by_way["bulk"]) == len(rows)


def test_two_copies_in_one_transaction_each_store_only_their_own_rows(postgres_project):
    """The session keeps its staging table between batches: a second COPY in the same transaction
    (an import's events with ids, then those without) starts from an empty one."""
    project = postgres_project
    project.customers(customer("c1"))
    engine = make_engine(project.url)
    with engine.begin() as connection:
        customer_id = connection.execute(select(CUSTOMERS.c.id)).scalar_one()
        rows = [{"uid": None, "customer_id": customer_id, "name": "e", "at": NOW, "properties": {}} for _ in range(2)]
        with_ids = [{**row, "uid": f"u{n}"} for n, row in enumerate(rows)]
        assert copy_rows(connection, EVENTS, with_ids, ["uid"]) == 2
        assert copy_rows(connection, EVENTS, rows) == 2
    with engine.begin() as connection:
        assert copy_rows(connection, EVENTS, with_ids, ["uid"]) == 0
    engine.dispose()
    assert project.query("SELECT count(*), count(uid) FROM event") == [(4, 2)]
