"""`instant + N seconds` in SQL, the one piece of date arithmetic that differs by database."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Integer, literal
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement
from sqlmodel.sql.sqltypes import UTCDateTime


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
    return (f"(strftime('%Y-%m-%d %H:%M:%S', substr({moved}, 1, 19), {compiler.process(seconds, **kw)} "
            f"|| ' seconds') || substr({moved}, 20))")
