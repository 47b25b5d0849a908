"""`instant + N seconds` in SQL, the one piece of date arithmetic that differs by database."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Float, literal
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement
from sqlmodel.sql.sqltypes import UTCDateTime


class shifted(FunctionElement):
    """A timestamp column moved by a fixed duration."""

    type = UTCDateTime()
    inherit_cache = True

    def __init__(self, instant, delta: timedelta):
        super().__init__(instant, literal(delta.total_seconds(), Float))


@compiles(shifted)
def _postgresql(element, compiler, **kw):
    instant, seconds = element.clauses
    return f"({compiler.process(instant, **kw)} + make_interval(secs => {compiler.process(seconds, **kw)}))"


@compiles(shifted, "sqlite")
def _sqlite(element, compiler, **kw):
    instant, seconds = element.clauses
    # SQLAlchemy stores SQLite times as 'YYYY-MM-DD HH:MM:SS.ffffff'; %f gives SS.SSS, so pad to six digits.
    return (f"(strftime('%Y-%m-%d %H:%M:%f', {compiler.process(instant, **kw)}, "
            f"{compiler.process(seconds, **kw)} || ' seconds') || '000')")
