"""`try_advisory_lock` (engine/store/dialect.py), which keeps evaluation and tally folds to one
machine at a time: on PostgreSQL a second transaction is refused until the first ends; on SQLite,
whose write transactions already run one at a time, it is always granted."""

from __future__ import annotations

from engine.store.dialect import make_engine, try_advisory_lock

KEY = 0x7E57


def test_postgresql_lock_excludes_a_second_transaction(postgres_project):
    engine = make_engine(postgres_project.url)
    try:
        with engine.connect() as first, engine.connect() as second:
            with first.begin():
                assert try_advisory_lock(first, KEY)
                with second.begin():
                    assert not try_advisory_lock(second, KEY)
                    assert try_advisory_lock(second, KEY + 1)  # another key is free
            with second.begin():  # the first transaction has ended, and its lock with it
                assert try_advisory_lock(second, KEY)
    finally:
        engine.dispose()


def test_sqlite_lock_is_always_granted(project):
    engine = make_engine(project.url)
    try:
        with engine.begin() as connection:
            assert try_advisory_lock(connection, KEY)
            assert try_advisory_lock(connection, KEY)
    finally:
        engine.dispose()
