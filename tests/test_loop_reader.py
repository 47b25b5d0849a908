"""The SQLite read connection the web service keeps open (engine/web/services.py `LoopReader`):
each read sees what was committed before it, and a failed read costs only that read."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from engine.store.dialect import make_engine
from engine.web.services import LoopReader


def count(connection) -> int:
    return connection.exec_driver_sql("SELECT count(*) FROM note").scalar_one()


def test_each_read_sees_the_latest_commit_and_a_failure_is_forgotten(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE note (id INTEGER PRIMARY KEY)")
        connection.exec_driver_sql("INSERT INTO note DEFAULT VALUES")
    reader = LoopReader(engine)
    assert reader(count) == 1
    kept = reader.connection
    with engine.begin() as connection:  # another connection commits after the first read
        connection.exec_driver_sql("INSERT INTO note DEFAULT VALUES")
    assert reader(count) == 2
    assert reader.connection is kept
    with pytest.raises(OperationalError):
        reader(lambda connection: connection.exec_driver_sql("SELECT missing FROM note"))
    assert reader.connection is None
    assert reader(count) == 2
    engine.dispose()
