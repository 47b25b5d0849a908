"""The web service's group commit (engine/web/writes.py): concurrent writes share a transaction,
a failing write fails alone, and on SQLite a write lock held elsewhere is waited for without
blocking the event loop."""

from __future__ import annotations

import asyncio
import sqlite3

from sqlalchemy import event, text

from engine.store import schema
from engine.web.writes import GroupCommit


def note(connection, value: str) -> str:
    connection.execute(
        text("INSERT INTO suppression (email, reason, created_at) VALUES (:email, 'test', CURRENT_TIMESTAMP)"),
        {"email": value},
    )
    return value.upper()


def note_then_fail(connection, value: str) -> str:
    note(connection, value)
    raise ValueError(f"{value} is refused")


def stored(project) -> list[str]:
    return [row[0] for row in project.query("SELECT email FROM suppression ORDER BY email")]


def commits_of(writes: GroupCommit) -> list[int]:
    counted = [0]
    event.listen(writes.engine, "commit", lambda connection: counted.__setitem__(0, counted[0] + 1))
    return counted


def test_writes_that_arrive_together_share_one_commit(store_project):
    writes = GroupCommit(schema.open_store(store_project.url))
    commits = commits_of(writes)

    async def main():
        return await asyncio.gather(*(writes(note, f"w{n:02}@x.example") for n in range(20)))

    assert asyncio.run(main()) == [f"W{n:02}@X.EXAMPLE" for n in range(20)]
    assert stored(store_project) == [f"w{n:02}@x.example" for n in range(20)]
    assert commits[0] == 1


def test_a_failing_write_fails_alone_and_leaves_nothing_behind(store_project):
    writes = GroupCommit(schema.open_store(store_project.url))

    async def main():
        return await asyncio.gather(
            writes(note, "a@x.example"),
            writes(note_then_fail, "b@x.example"),
            writes(note, "c@x.example"),
            return_exceptions=True,
        )

    first, second, third = asyncio.run(main())
    assert (first, third) == ("A@X.EXAMPLE", "C@X.EXAMPLE")
    assert isinstance(second, ValueError) and str(second) == "b@x.example is refused"
    assert stored(store_project) == ["a@x.example", "c@x.example"]


def test_on_sqlite_a_held_write_lock_is_waited_for_without_blocking_the_loop(project):
    writes = GroupCommit(schema.open_store(project.url))
    holder = sqlite3.connect(project.root / "store.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's tick, say

    async def main():
        pending = asyncio.create_task(writes(note, "late@x.example"))
        await asyncio.sleep(0.05)  # the loop runs on while the write keeps trying
        assert not pending.done()
        holder.execute("COMMIT")
        return await asyncio.wait_for(pending, timeout=10)

    assert asyncio.run(main()) == "LATE@X.EXAMPLE"
    assert stored(project) == ["late@x.example"]
