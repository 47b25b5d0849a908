"""The events of a batch of tracking calls (Segment's `/v1/batch`), stored set-wise: each call
checked as the importer checks an event, then all of them in one transaction and one statement.
The write transaction holds SQLite's one write lock, so what needs no database (checking, binding
each value as the driver takes it) is done before it begins; inside it are one lookup of all the
batch's customers, one insert that skips the event ids already stored (`messageId`, so a retried
batch stores nothing twice) and the commit. Should the store refuse the insert, it is rolled back
whole and the importer stores the calls again, row by row, so that the refused call is named.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DataError, IntegrityError

from engine.config.settings import Config
from engine.customers.importing import (
    EVENTS,
    BadRecord,
    Importer,
    ImportResult,
    checked_record,
    clean_event,
    customer_ids,
)
from engine.errors import Problem
from engine.store.dialect import bound_rows, copies, copy_bound, execute_bound, one_writer

Write = Callable[[Connection, Table, list[str], list[list[Any]], list[str]], int]
COLUMNS = ["customer_id", "uid", "name", "at", "properties"]
CHECKED = COLUMNS[1:]  # bound from each checked event before the transaction; the customer's id is looked up in it


def store_events(
    engine: Engine, config: Config, records: list[tuple[int, Any]], label: str, importer: Importer
) -> ImportResult:
    """Each record (index, event record or BadRecord) stored, skipped as already stored, or named
    as a problem, exactly as `importer.events` would; a batch too small for PostgreSQL's COPY goes
    through the importer itself."""
    bad, good, checked = [], [], []
    for index, record in records:
        try:
            checked.append((index, checked_record(lambda r: clean_event(r, config), record)))
            good.append((index, record))
        except BadRecord as exc:
            bad.append(Problem(label, index, 1, str(exc)))
    if not checked:
        result = ImportResult()
    elif one_writer(engine) or copies(engine, checked):
        result = _set_wise(engine, checked, label) or importer.events(good, label)
    else:
        result = importer.events(good, label)
    result.problems = sorted([*bad, *result.problems], key=lambda problem: problem.line)
    return result


def _set_wise(engine: Engine, checked: list[tuple[int, dict[str, Any]]], label: str) -> ImportResult | None:
    """The checked events in one transaction, or None if the store refused it (nothing of it stays)."""
    values = zip(checked, bound_rows(engine.dialect, EVENTS, CHECKED, (row for _, row in checked)), strict=True)
    bound = [(index, row["customer"], value) for (index, row), value in values]
    result = ImportResult()
    try:
        with engine.begin() as connection:
            _insert(connection, bound, execute_bound if one_writer(engine) else copy_bound, label, result)
    except (DataError, IntegrityError):
        return None
    return result


def _insert(
    connection: Connection, bound: list[tuple[int, str, list[Any]]], write: Write, label: str, result: ImportResult
) -> None:
    """(index, customer, bound values) of each event: the known customers' stored, the others named."""
    ids = customer_ids(connection, {customer for _, customer, _ in bound})
    known = []
    for index, customer, values in bound:
        if customer not in ids:
            result.problems.append(Problem(label, index, 1, f"customer '{customer}' does not exist"))
            continue
        known.append([ids[customer], *values])
    if known:
        result.stored = write(connection, EVENTS, COLUMNS, known, ["uid"])
        result.skipped = len(known) - result.stored
