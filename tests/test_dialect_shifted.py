"""`shifted` (engine/store/dialect.py), the date arithmetic behind trigger windows and the report's goal
windows, is exact to the microsecond on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import literal, select
from sqlmodel.sql.sqltypes import UTCDateTime

from engine.store.dialect import shifted

CASES = [
    (datetime(2026, 1, 31, 23, 59, 59, 999600, tzinfo=UTC), timedelta(days=7)),  # would round up at ms
    (datetime(2026, 3, 1, 0, 0, 0, 123456, tzinfo=UTC), timedelta(days=-1)),  # across February
    (datetime(2026, 3, 29, 0, 30, tzinfo=UTC), timedelta(hours=2)),
    (datetime(2024, 2, 29, 12, 0, 0, 1, tzinfo=UTC), timedelta(weeks=-52)),
]


@pytest.mark.parametrize("instant, delta", CASES)
def test_shifted_is_exact(store_project, instant, delta):
    with store_project.db.connect() as connection:
        moved = connection.execute(select(shifted(literal(instant, UTCDateTime()), delta))).scalar_one()
    assert moved == instant + delta


def test_only_whole_seconds():
    with pytest.raises(ValueError, match="whole seconds"):
        shifted(literal(datetime(2026, 1, 1, tzinfo=UTC), UTCDateTime()), timedelta(seconds=1.5))
