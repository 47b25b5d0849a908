"""The differences between SQLite and PostgreSQL, in one place: the engine and its
connection settings, INSERT ... ON CONFLICT, the report's join hints, and `instant + N seconds`
in SQL, the one piece of date arithmetic that differs by database.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Integer, event, literal
from sqlalchemy.dialects.sqlite.base import SQLiteCompiler
from sqlalchemy.engine import Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.sql.selectable import Join
from sqlmodel import create_engine
from sqlmodel.sql.sqltypes import UTCDateTime


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

    def get_from_hint_text(self, table, text):
        return text

    def visit_join(self, join, asfrom=False, from_linter=None, **kwargs):
        text = super().visit_join(join, asfrom=asfrom, from_linter=from_linter, **kwargs)
        if not isinstance(join, InOrder):
            return text
        left = join.left._compiler_dispatch(self, asfrom=True, from_linter=from_linter, **kwargs)
        return left + " CROSS JOIN " + text.removeprefix(left).removeprefix(" JOIN ")


# As much of a SQLite file as SQLite will map (it caps this at its compile-time limit, 2 GB by default).
SQLITE_MMAP_SIZE = 1 << 40


def make_engine(url: str, lock_timeout: float = 60) -> Engine:
    """An engine for the store. SQLite gets WAL, a busy timeout and write transactions that take
    the write lock up front, so two ticks at once serialise instead of failing mid-way; a
    connection with the execution option `read_only=True` reads without that lock.
    `lock_timeout` is how many seconds SQLite waits for the write lock before it gives up.
    SQLite reads through a memory map, so that index probes (the report's) cost no system call."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": lock_timeout, "check_same_thread": False})
        engine.dialect.statement_compiler = _SQLiteCompiler

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection, _record):
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_SIZE}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection):
            # Readers (`read_only` connections) need no write lock: WAL lets them run beside a writer.
            read_only = connection.get_execution_options().get("read_only")
            connection.connection.driver_connection.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True)


def insert_new(connection, table, conflict: list[str]):
    """`INSERT ... ON CONFLICT DO NOTHING` for the connection's database: the unique keys, not
    the code, decide what already exists, so concurrent or repeated evaluation adds nothing twice."""
    return _insert(connection.dialect.name)(table).on_conflict_do_nothing(index_elements=conflict)


def upsert(dialect: str, table, conflict: list[str]):
    """`INSERT ... ON CONFLICT DO UPDATE` of every other column, for the database named `dialect`:
    one statement sets a row whether or not it exists."""
    statement = _insert(dialect)(table)
    return statement.on_conflict_do_update(
        index_elements=conflict,
        set_={column.name: statement.excluded[column.name] for column in table.columns if column.name not in conflict},
    )


def _insert(dialect: str):
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def insert_rows_new(connection, table, conflict: list[str], rows: list[dict]) -> int:
    """Insert the rows whose unique key is not taken yet; return how many went in. Counted with
    RETURNING, since drivers differ in what rowcount says for a batch."""
    if not rows:
        return 0
    statement = insert_new(connection, table, conflict).returning(*table.primary_key.columns)
    return len(connection.execute(statement, rows).all())


class shifted(FunctionElement):
    """A timestamp column moved by a fixed duration of whole seconds (as campaign durations are)."""

    type = UTCDateTime()
    inherit_cache = True

    def __init__(self, instant, delta: timedelta):
        if delta.microseconds:
            raise ValueError(f"shifted moves by whole seconds, not {delta}")
        super().__init__(instant, literal(int(delta.total_seconds()), Integer))


@compiles(shifted)
def _postgresql(element, compiler, **kw):
    instant, seconds = element.clauses
    return f"({compiler.process(instant, **kw)} + make_interval(secs => {compiler.process(seconds, **kw)}))"


@compiles(shifted, "sqlite")
def _sqlite(element, compiler, **kw):
    instant, seconds = element.clauses
    moved = compiler.process(instant, **kw)
    # SQLAlchemy stores SQLite times as 'YYYY-MM-DD HH:MM:SS.ffffff' and SQLite's own arithmetic keeps
    # only milliseconds: move the first 19 characters by whole seconds and keep the fraction as it is.
    return (
        f"(strftime('%Y-%m-%d %H:%M:%S', substr({moved}, 1, 19), {compiler.process(seconds, **kw)} "
        f"|| ' seconds') || substr({moved}, 20))"
    )
