"""Bulk imports: on PostgreSQL a batch goes in by COPY through a staging table, elsewhere by INSERT;
both store the same rows, in their order, skip an event id already stored (in the store or earlier
in the same batch), and keep every value as given."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from conftest import customer
from sqlalchemy import select

from engine.customers.importing import EVENTS


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
