"""The differences between SQLite and PostgreSQL, in one place: the engine and its
connection settings, INSERT ... ON CONFLICT, the report's join hints, `instant + N seconds`
in SQL (the one piece of date arithmetic that differs by database), and what each database can do
at once: how many write, where short reads run best, advisory locks, planner settings.
The rest of the engine asks these functions, by what differs, rather than the database's name.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    ColumnElement,
    Float,
    Integer,
    Table,
    event,
    func,
    literal,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.sqlite.base import SQLiteCompiler
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.sql.selectable import FromClause, Join
from sqlmodel import create_engine
from sqlmodel.sql.sqltypes import UTCDateTime

from engine.store.jsontext import json_text, json_value


class InOrder(Join):
    """A join that reads its left side first and probes the right side for each of its rows.
    SQLite may otherwise reorder a join by its estimates, which without ANALYZE statistics (a
    store nobody has analysed) can be far off; CROSS JOIN is its documented way to keep the order.
    Other databases get a plain join and plan it themselves."""

    inherit_cache = True


class _SQLiteCompiler(SQLiteCompiler):
    """SQLAlchemy's SQLite compiler, plus two ways the report tells SQLite how to read: a table's
    `with_hint(table, "INDEXED BY ix", "sqlite")` is written after its name (the dialect leaves it
    out), and an `InOrder` join is written as CROSS JOIN."""

    def get_from_hint_text(self, table: FromClause, text: str | None) -> str | None:
        return text

    def visit_join(self, join: Join, asfrom: bool = False, from_linter: Any = None, **kwargs: Any) -> str:
        joined = cast(Callable[..., str], super().visit_join)  # SQLAlchemy leaves it unannotated
        text: str = joined(join, asfrom=asfrom, from_linter=from_linter, **kwargs)
        if not isinstance(join, InOrder):
            return text
        left: str = join.left._compiler_dispatch(self, asfrom=True, from_linter=from_linter, **kwargs)
        return left + " CROSS JOIN " + text.removeprefix(left).removeprefix(" JOIN ")


# The store writes only JSON that both databases (and SQLite's json_extract) read back: NaN and
# Infinity, which Python's json module writes by default, fail the write that brings them.
JSON_SERIALIZER = json_text
SQLITE_INSTANT = "%04d-%02d-%02d %02d:%02d:%02d.%06d"  # SQLAlchemy's SQLite DATETIME storage format
COPY_FROM = 100  # rows: a smaller batch goes in by INSERT, as quick without the staging table
# SQLite's words for an error in the data read, not in reaching the database.
SQLITE_DATA_ERRORS = ("malformed json", "json cannot hold blob")

# As much of a SQLite file as SQLite will map (it caps this at its compile-time limit, 2 GB by default).
SQLITE_MMAP_SIZE = 1 << 40


def make_engine(url: str, lock_timeout: float = 60) -> Engine:
    """An engine for the store. SQLite gets WAL, a busy timeout and write transactions that take
    the write lock up front, so two ticks at once serialise instead of failing mid-way; a
    connection with the execution option `read_only=True` reads without that lock.
    `lock_timeout` is how many seconds SQLite waits for the write lock before it gives up.
    SQLite reads through a memory map, so that index probes (the report's) cost no system call."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"timeout": lock_timeout, "check_same_thread": False},
            json_serializer=JSON_SERIALIZER,
            json_deserializer=json_value,
        )
        engine.dialect.statement_compiler = _SQLiteCompiler

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_SIZE}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection: Connection) -> None:
            # Readers (`read_only` connections) need no write lock: WAL lets them run beside a writer.
            read_only = connection.get_execution_options().get("read_only")
            driver = cast(sqlite3.Connection, connection.connection.driver_connection)
            driver.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, json_serializer=JSON_SERIALIZER, json_deserializer=json_value)


def insert_new(connection: Connection, table: Table, conflict: list[str]) -> postgresql.Insert | sqlite.Insert:
    """`INSERT ... ON CONFLICT DO NOTHING` for the connection's database: the unique keys, not
    the code, decide what already exists, so concurrent or repeated evaluation adds nothing twice."""
    return _insert(connection.dialect, table).on_conflict_do_nothing(index_elements=conflict)


def upsert(dialect: Dialect, table: Table, conflict: list[str]) -> postgresql.Insert | sqlite.Insert:
    """`INSERT ... ON CONFLICT DO UPDATE` of every other column, for `dialect`'s database:
    one statement sets a row whether or not it exists."""
    statement = _insert(dialect, table)
    return statement.on_conflict_do_update(
        index_elements=conflict,
        set_={column.name: statement.excluded[column.name] for column in table.columns if column.name not in conflict},
    )


def _insert(dialect: Dialect, table: Table) -> postgresql.Insert | sqlite.Insert:
    return postgresql.insert(table) if dialect.name == "postgresql" else sqlite.insert(table)


def insert_rows_new(connection: Connection, table: Table, conflict: list[str], rows: list[dict[str, Any]]) -> int:
    """Insert the rows whose unique key is not taken yet; return how many went in. Counted with
    RETURNING, since drivers differ in what rowcount says for a batch (SQLite's sums it up)."""
    if not rows:
        return 0
    if copies(connection, rows):
        return copy_rows(connection, table, rows, conflict)
    if connection.dialect.name == "sqlite":
        return execute_rows(connection, table, rows, conflict)
    statement = insert_new(connection, table, conflict).returning(*table.primary_key.columns)
    return len(connection.execute(statement, rows).all())


def insert_rows(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert the rows, in bulk: COPY on PostgreSQL, the driver's executemany on SQLite."""
    if copies(connection, rows):
        copy_rows(connection, table, rows)
    elif rows and connection.dialect.name == "sqlite":
        execute_rows(connection, table, rows)
    elif rows:
        connection.execute(table.insert(), rows)


def execute_rows(
    connection: Connection, table: Table, rows: list[dict[str, Any]], conflict: list[str] | None = None
) -> int:
    """SQLite: the rows in one executemany of the driver, each value through its column's own bind
    processor (so stored as SQLAlchemy stores it), skipping those whose `conflict` key is taken;
    returns how many went in (sqlite3's rowcount, summed over the rows). SQLAlchemy's own
    executemany builds parameters row by row in Python, which cost the import most of its time.
    Every row has the same keys; a column left out gets the database's default."""
    columns = list(rows[0])
    return execute_bound(connection, table, columns, bound_rows(connection.dialect, table, columns, rows), conflict)


def execute_bound(
    connection: Connection,
    table: Table,
    columns: list[str],
    values: Iterable[Sequence[Any]],
    conflict: list[str] | None = None,
) -> int:
    """SQLite: rows already bound (`bound_rows`), values in the order of `columns`, in one
    executemany of the driver, skipping those whose `conflict` key is taken; returns how many went in."""
    quote = connection.dialect.identifier_preparer.quote
    skip = _skipping_taken(connection, conflict)
    statement = (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(name) for name in columns)}) "
        f"VALUES ({', '.join('?' for _ in columns)}){skip}"
    )
    result = connection.exec_driver_sql(statement, [tuple(row) for row in values])
    return int(result.rowcount)


def _skipping_taken(connection: Connection, conflict: list[str] | None) -> str:
    """The clause that skips a row whose `conflict` key is taken, or nothing without a key."""
    quote = connection.dialect.identifier_preparer.quote
    return f" ON CONFLICT ({', '.join(quote(name) for name in conflict)}) DO NOTHING" if conflict else ""


def bound_rows(
    dialect: Dialect, table: Table, columns: Sequence[str], rows: Iterable[dict[str, Any]]
) -> Iterator[list[Any]]:
    """Each row's values of `columns` (a row may hold other keys too), in that order, as the driver
    takes them: through the processor of the column's type for this database, as SQLAlchemy's own
    statements bind them (SQLite's times as text in SQLAlchemy's format), PostgreSQL's JSON as text
    for COPY (the one statement that takes these rows there). Binding needs no connection, so it
    may be done before a write transaction begins."""
    processors = [(name, _processor(table.c[name].type, dialect)) for name in columns]
    for row in rows:
        yield [process(row[name]) if process else row[name] for name, process in processors]


def _processor(kind: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    if dialect.name == "sqlite" and isinstance(kind, UTCDateTime):
        return sqlite_instant
    impl = kind.dialect_impl(dialect)
    if dialect.name == "postgresql" and isinstance(impl, JSON):
        # COPY stages JSON as text (`copy_bound`): the plain JSON type's processor writes it with the
        # store's serializer, where psycopg's wraps each value for a dumper of its own, in Python
        # (2 µs an event of the ingest's COPY).
        return cast(Callable[[Any], Any], JSON.bind_processor(impl, dialect))
    return cast(Callable[[Any], Any] | None, impl.bind_processor(dialect))


def sqlite_instant(value: datetime | None) -> str | None:
    """An instant as SQLAlchemy binds it for SQLite: UTCDateTime's UTC, then SQLite DATETIME's
    format (`2026-11-01 10:00:00.000000`), filled from a tuple rather than from a dict of seven
    fields built for each value, which cost the ingest a tenth of its time per event."""
    if value is None:
        return None
    if value.utcoffset() is None:
        raise ValueError("an instant must have timezone information")
    utc = value.astimezone(UTC)
    return SQLITE_INSTANT % (utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond)


def copies(bind: Engine | Connection, rows: Sized) -> bool:
    """Whether `rows` go in by COPY: on PostgreSQL, a batch large enough to repay the staging table."""
    return bind.dialect.name == "postgresql" and len(rows) >= COPY_FROM


def copy_rows(
    connection: Connection, table: Table, rows: list[dict[str, Any]], conflict: list[str] | None = None
) -> int:
    """PostgreSQL's COPY, several times quicker than INSERTs for a batch: the rows are copied into a
    staging table (numbered, so they go in in their order) and inserted from there, skipping those
    whose `conflict` key is taken; returns how many went in. Every row has the same keys."""
    columns = list(rows[0])
    return copy_bound(connection, table, columns, bound_rows(connection.dialect, table, columns, rows), conflict)


def copy_bound(
    connection: Connection,
    table: Table,
    columns: list[str],
    values: Iterable[Sequence[Any]],
    conflict: list[str] | None = None,
) -> int:
    """`copy_rows` for rows already bound (`bound_rows`), values in the order of `columns`. The staging
    table is the session's own (temporary), one for each set of columns, kept for its next batch and
    emptied at each commit: creating and dropping one for every batch of 500 events cost the database
    about 2 of its 27 µs an event. The rows go in COPY's binary format, each value as its column's
    type stores it: with the text format the driver wrote each value as text first, twice the
    client's CPU a row (2.3 µs against 1.2, batches of 500 events). Binary JSON is a version byte
    before the text, which the driver cannot write from text, so JSON is staged as text and cast as
    it goes in."""
    quote = connection.dialect.identifier_preparer.quote
    names = ", ".join(quote(name) for name in columns)
    staging, target = quote(f"staging_{table.name}_{zlib.crc32(names.encode()):08x}"), quote(table.name)
    json_columns = {name for name in columns if isinstance(table.c[name].type.dialect_impl(connection.dialect), JSON)}
    staged = ", ".join(
        f"{quote(name)}::text AS {quote(name)}" if name in json_columns else quote(name) for name in columns
    )
    connection.exec_driver_sql(
        f"CREATE TEMP TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS "
        f"AS SELECT 0 AS _row, {staged} FROM {target} WITH NO DATA"
    )
    connection.exec_driver_sql(f"DELETE FROM {staging}")  # what an earlier copy of this transaction left
    types = _staged_types(connection, staging)
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor, cursor.copy(f"COPY {staging} (_row, {names}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(types)
        for number, row in enumerate(values):
            copy.write_row([number, *row])
    typed = ", ".join(
        f"CAST({quote(name)} AS {table.c[name].type.compile(dialect=connection.dialect)})"
        if name in json_columns
        else quote(name)
        for name in columns
    )
    skip = _skipping_taken(connection, conflict)
    inserted = connection.exec_driver_sql(
        f"INSERT INTO {target} ({names}) SELECT {typed} FROM {staging} ORDER BY _row{skip}"
    )
    return int(inserted.rowcount)


def _staged_types(connection: Connection, staging: str) -> list[int]:
    """The type of each column of a staging table, as binary COPY needs them told: asked once for
    each of the session's staging tables, which keep their columns while the session lasts."""
    known: dict[str, list[int]] = connection.info.setdefault("staged types", {})
    if staging not in known:
        known[staging] = list(
            connection.exec_driver_sql(
                "SELECT atttypid::int FROM pg_attribute WHERE attrelid = %(staging)s::regclass "
                "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                {"staging": staging},
            ).scalars()
        )
    return known[staging]


def ids_of(connection: Connection, key: Column[Any], values: list[str]) -> dict[str, int]:
    """The `id` of each row of `key`'s table whose `key` is one of `values`, as {value: id}. The
    values are bound as ONE parameter, however many: PostgreSQL's `= ANY(array)`, SQLite's
    `IN (SELECT value FROM json_each(text))`; an IN list binds one parameter a value, and looking up
    the customers of 500 events so took 7 µs of the web server's CPU an id on PostgreSQL. It runs on
    the driver's own cursor, in the connection's transaction: SQLAlchemy's statement and rows cost
    another µs an id (2.0 µs against 1.0 on PostgreSQL, 1.6 against 0.9 on SQLite)."""
    quote = connection.dialect.identifier_preparer.quote
    table, column = quote(key.table.name), quote(key.name)
    parameter: list[str] | str = values
    if connection.dialect.name == "postgresql":
        statement = f"SELECT {column}, id FROM {table} WHERE {column} = ANY(%s)"
    else:
        statement = f"SELECT {column}, id FROM {table} WHERE {column} IN (SELECT value FROM json_each(?))"
        parameter = JSON_SERIALIZER(values)
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(statement, (parameter,))
        return dict(cursor.fetchall())
    finally:
        cursor.close()


def one_writer(bind: Engine | Connection) -> bool:
    """Whether one write transaction runs at a time: SQLite's, which the store begins with the write
    lock (BEGIN IMMEDIATE). Then nothing else writes while a transaction runs, and more threads
    writing at once only queue for the lock. PostgreSQL runs many, row locks keeping them apart."""
    return bind.dialect.name == "sqlite"


def lock_taken(error: Exception) -> bool:
    """Whether `error` says SQLite's write lock is held by another connection (with `lock_timeout=0`,
    at once). The store's BEGIN runs on the driver's connection, so the error may come unwrapped."""
    cause = error.orig if isinstance(error, DBAPIError) else error
    return isinstance(cause, sqlite3.OperationalError) and "database is locked" in str(cause)


def unavailable(error: BaseException) -> bool:
    """Whether `error` says the database cannot be used now (down, unreachable, locked, out of
    space), so the work is worth trying again later, rather than a bug or bad data it read, which
    retrying would only repeat."""
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    return isinstance(error, OperationalError) and not any(
        words in str(error.orig).lower() for words in SQLITE_DATA_ERRORS
    )


def on_event_loop(engine: Engine) -> bool:
    """Whether short store work is quicker done right on the web server's event loop than handed to
    a worker thread: SQLite works on a local file, and in WAL mode a read never waits for a writer.
    Other databases answer over the network, so a worker thread waits for them."""
    return engine.dialect.name == "sqlite"


def concurrent_reads(engine: Engine, reads: int) -> int:
    """How many of `reads` long, independent reads to run at once. PostgreSQL: all of them, each in
    a server process of its own. SQLite: one, as two readers of one large file at once took longer
    than the two in turn (bench/report_10m.py)."""
    return 1 if engine.dialect.name == "sqlite" else reads


def keep_latest(dialect: Dialect, table: Table, key: str, column: str) -> postgresql.Insert | sqlite.Insert:
    """`INSERT ... ON CONFLICT DO UPDATE` that keeps the later of the stored and the new `column`
    (PostgreSQL's `greatest`, SQLite's two-argument `max`): a row that only ever moves forward."""
    statement = _insert(dialect, table)
    stored, new = table.c[column], statement.excluded[column]
    later = func.greatest(stored, new) if dialect.name == "postgresql" else func.max(stored, new)
    return statement.on_conflict_do_update(index_elements=[key], set_={column: later})


def try_advisory_lock(connection: Connection, key: int) -> bool:
    """Take the lock `key` until the transaction ends, or return False at once if another
    transaction holds it: PostgreSQL's advisory lock, so that machines sharing the store take turns.
    On SQLite always True: its write transactions already run one at a time."""
    if one_writer(connection):
        return True
    return bool(connection.execute(select(func.pg_try_advisory_xact_lock(key))).scalar())


def refresh_statistics(connection: Connection, *tables: str) -> None:
    """PostgreSQL: read the tables' statistics again after a large change (a broadcast's million
    new sends), rather than wait for autovacuum, which may be minutes away. Until then the planner
    prices a query on columns it has never seen filled by default guesses: it read every send for
    each batch's frequency cap. SQLite's plans are fixed by the queries themselves (index hints)."""
    if connection.dialect.name == "postgresql":
        for table in tables:
            connection.execute(text(f"ANALYZE {table}"))


def plan_for_index_probes(connection: Connection) -> None:
    """PostgreSQL: for the rest of the transaction, price an index probe near a sequential read
    (random_page_cost 1.1, the usual setting for a store on SSD or in memory) and compile no query
    to machine code (JIT). SQLite has no such settings: its planner is told with `InOrder` and
    index hints instead."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SET LOCAL random_page_cost = 1.1"))
        connection.execute(text("SET LOCAL jit = off"))


class read_json(FunctionElement[Any]):
    """`value`, read from the JSON column `column`, as the database's JSON functions can. SQLite
    keeps JSON as text, and a row written before the store refused NaN (`JSON_SERIALIZER`) holds
    text its json_extract calls malformed, failing the whole statement: there the value reads as
    NULL instead, so the row matches no condition and fails nothing but itself. PostgreSQL never
    stores such a value, and reads `value` as it is."""

    inherit_cache = True

    def __init__(self, column: Any, value: ColumnElement[Any]):
        super().__init__(column, value)
        self.type = value.type


@compiles(read_json)
def _read_json(element: read_json, compiler: SQLCompiler, **kw: Any) -> str:
    _, value = element.clauses
    return compiler.process(value, **kw)


@compiles(read_json, "sqlite")
def _read_json_sqlite(element: read_json, compiler: SQLCompiler, **kw: Any) -> str:
    column, value = element.clauses
    return f"(CASE WHEN json_valid({compiler.process(column, **kw)}) THEN {compiler.process(value, **kw)} END)"


class json_valid(FunctionElement[bool]):
    """Whether a JSON column's value is one the database's JSON functions read (see read_json)."""

    type = Boolean()
    inherit_cache = True


@compiles(json_valid)
def _json_valid(element: json_valid, compiler: SQLCompiler, **kw: Any) -> str:
    return "true"


@compiles(json_valid, "sqlite")
def _json_valid_sqlite(element: json_valid, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_valid({compiler.process(element.clauses, **kw)})"


class shifted(FunctionElement[datetime]):
    """A timestamp column moved by a fixed duration of whole seconds (as campaign durations are)."""

    type = UTCDateTime()
    inherit_cache = True

    def __init__(self, instant: ColumnElement[datetime] | datetime, delta: timedelta):
        # `datetime` too: a SQLModel column reads as one to a type checker (and a value works as well)
        if delta.microseconds:
            raise ValueError(f"shifted moves by whole seconds, not {delta}")
        super().__init__(instant, literal(int(delta.total_seconds()), Integer))


@compiles(shifted)
def _postgresql(element: shifted, compiler: SQLCompiler, **kw: Any) -> str:
    instant, seconds = element.clauses
    return f"({compiler.process(instant, **kw)} + make_interval(secs => {compiler.process(seconds, **kw)}))"


@compiles(shifted, "sqlite")
def _sqlite(element: shifted, compiler: SQLCompiler, **kw: Any) -> str:
    instant, seconds = element.clauses
    moved = compiler.process(instant, **kw)
    # SQLAlchemy stores SQLite times as 'YYYY-MM-DD HH:MM:SS.ffffff' and SQLite's own arithmetic keeps
    # only milliseconds: move the first 19 characters by whole seconds and keep the fraction as it is.
    return (
        f"(strftime('%Y-%m-%d %H:%M:%S', substr({moved}, 1, 19), {compiler.process(seconds, **kw)} "
        f"|| ' seconds') || substr({moved}, 20))"
    )


class json_number(FunctionElement[float]):
    """The JSON column's property `name` as a number when it holds a JSON number, else NULL: text,
    true/false, a list or nothing at all is no number (PostgreSQL would fail the whole statement
    on casting such text, SQLite would read a number's prefix out of it)."""

    type = Float()
    inherit_cache = True

    def __init__(self, column: Any, name: str):
        super().__init__(column, literal(name))


@compiles(json_number)
def _json_number(element: json_number, compiler: SQLCompiler, **kw: Any) -> str:
    column, name = (compiler.process(c, **kw) for c in element.clauses)
    return f"(CASE WHEN jsonb_typeof({column} -> {name}) = 'number' THEN ({column} ->> {name})::float8 END)"


@compiles(json_number, "sqlite")
def _json_number_sqlite(element: json_number, compiler: SQLCompiler, **kw: Any) -> str:
    column, name = (compiler.process(c, **kw) for c in element.clauses)
    path = f"('$.\"' || {name} || '\"')"
    return (
        f"(CASE WHEN json_valid({column}) AND json_type({column}, {path}) IN ('integer', 'real') "
        f"THEN json_extract({column}, {path}) END)"
    )


class days_between(FunctionElement[float]):
    """The days (a fraction) from one timestamp to a later one, computed by the database, so that a
    read of many rows carries numbers rather than timestamps to convert one by one."""

    type = Float()
    inherit_cache = True


@compiles(days_between)
def _days_postgresql(element: days_between, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"(EXTRACT(EPOCH FROM ({end} - {start})) / 86400.0)"


@compiles(days_between, "sqlite")
def _days_sqlite(element: days_between, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"(julianday({end}) - julianday({start}))"
