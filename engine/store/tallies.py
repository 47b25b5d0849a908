"""Counts of sends and entries by the keys the report groups them by, kept by the database.

Triggers on `send` and `entry` (migration 0004) append a change for every row that is inserted,
deleted or moved to another key: +1 for the key it enters, -1 for the key it leaves, in the same
transaction as the write. So the counts are exact whichever code path writes, and the report reads
a few hundred rows instead of passing over every send (bench/report_10m.py). An append never
waits for another writer; what it costs a tick is in the README.

A tally is its folded counts plus the changes not folded yet; `fold` moves the changes into the
counts, and the tick calls it once it has sent, so the changes stay few.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text, union_all
from sqlalchemy.engine import Connection
from sqlmodel import col

from engine.store.dialect import one_writer, try_advisory_lock
from engine.store.tables import EntryTally, EntryTallyChange, SendTally, SendTallyChange

FOLD_LOCK = 0x7A11E5  # the advisory lock a fold holds, so that two folds never cross
SEND_KEY = ("status", "campaign", "step", "variant", "outcomes", "reason")
ENTRY_KEY = ("campaign", "held_out")


def send_counts(connection: Connection, campaign: str | None = None) -> list[tuple[Any, ...]]:
    """(status, campaign, step, variant, outcomes, reason, sends) for each key with sends; variant
    and reason None where there is none."""
    return [
        (status, name, step, variant or None, outcomes, reason or None, n)
        for status, name, step, variant, outcomes, reason, n in _counts(
            connection, SendTally, SendTallyChange, SEND_KEY, "sends", campaign
        )
    ]


def entry_counts(connection: Connection, campaign: str | None = None) -> dict[str, tuple[int, int]]:
    """(entered, held out) per campaign."""
    counts: dict[str, tuple[int, int]] = {}
    for name, held_out, n in _counts(connection, EntryTally, EntryTallyChange, ENTRY_KEY, "entries", campaign):
        entered, held = counts.get(name, (0, 0))
        counts[name] = (entered + n, held + (n if held_out else 0))
    return counts


def _counts(
    connection: Connection,
    tally: type[SendTally | EntryTally],
    changes: type[SendTallyChange | EntryTallyChange],
    key: tuple[str, ...],
    count: str,
    campaign: str | None,
) -> list[tuple[Any, ...]]:
    """The folded counts and the changes since, summed per key; keys that add up to 0 are left out."""
    parts = []
    for table, n in ((tally, count), (changes, "change")):
        part = select(*(getattr(table, c) for c in key), getattr(table, n).label("n"))
        parts.append(part if campaign is None else part.where(col(table.campaign) == campaign))
    both = union_all(*parts).subquery()
    columns = [both.c[c] for c in key]
    total = func.sum(both.c.n)
    return [
        (*row[:-1], int(row[-1]))
        for row in connection.execute(select(*columns, total).group_by(*columns).having(total != 0))
    ]


def fold(connection: Connection) -> None:
    """Move the changes appended so far into the counts, in the caller's transaction."""
    if not try_advisory_lock(connection, FOLD_LOCK):
        return  # another fold is under way
    for table, key, count in (("send_tally", SEND_KEY, "sends"), ("entry_tally", ENTRY_KEY, "entries")):
        columns = ", ".join(key)
        add = (
            f"INSERT INTO {table} ({columns}, {count}) SELECT {columns}, sum(change) FROM {{source}} "
            f"WHERE true GROUP BY {columns} "
            f"ON CONFLICT ({columns}) DO UPDATE SET {count} = {table}.{count} + excluded.{count}"
        )
        if one_writer(connection):  # nobody appends while this transaction runs
            connection.execute(text(add.format(source=f"{table}_change")))
            connection.execute(text(f"DELETE FROM {table}_change"))
        else:
            # what another transaction appends meanwhile is not deleted here: it waits for the next fold
            connection.execute(
                text(
                    f"WITH gone AS (DELETE FROM {table}_change RETURNING {columns}, change) "
                    + add.format(source="gone")
                )
            )
        connection.execute(text(f"DELETE FROM {table} WHERE {count} = 0"))
