"""Counts of sends and entries by the keys the report groups them by, kept by the database.

Triggers on `send` and `entry` (migration 0004) add one to the count of a row's key when it is
inserted or moves to that key, and take one away from the key it leaves or is deleted from, in the
same transaction as the change. So the counts are exact whichever code path writes, and the
report reads a few hundred rows instead of passing over every send (bench/report_10m.py).

On PostgreSQL each backend counts in rows of its own (`writer`, its pid): transactions that send
at once never wait for one another's counter rows. `fold` moves the rows of backends that have
gone into the shared rows (`writer` 0), so that their number stays small; the tick calls it.
"""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection

from .store import EntryTally, SendTally

FOLDED = 0  # the writer of the shared rows
FOLD_LOCK = 0x7A11E5  # the advisory lock a fold holds


def send_counts(connection: Connection, campaign: str | None = None) -> list[tuple]:
    """(status, campaign, step, variant, outcomes, reason, sends) for each key with sends; variant
    and reason None where there is none."""
    keys = (SendTally.status, SendTally.campaign, SendTally.step, SendTally.variant, SendTally.outcomes,
            SendTally.reason)
    query = select(*keys, func.sum(SendTally.sends)).group_by(*keys).having(func.sum(SendTally.sends) != 0)
    if campaign is not None:
        query = query.where(SendTally.campaign == campaign)
    return [(status, name, step, variant or None, outcomes, reason or None, int(n))
            for status, name, step, variant, outcomes, reason, n in connection.execute(query)]


def entry_counts(connection: Connection, campaign: str | None = None) -> dict[str, tuple[int, int]]:
    """(entered, held out) per campaign."""
    query = (select(EntryTally.campaign, EntryTally.held_out, func.sum(EntryTally.entries))
             .group_by(EntryTally.campaign, EntryTally.held_out).having(func.sum(EntryTally.entries) != 0))
    if campaign is not None:
        query = query.where(EntryTally.campaign == campaign)
    counts: dict[str, tuple[int, int]] = {}
    for name, held_out, n in connection.execute(query):
        entered, held = counts.get(name, (0, 0))
        counts[name] = (entered + int(n), held + (int(n) if held_out else 0))
    return counts


def fold(connection: Connection) -> None:
    """PostgreSQL: move the counts of backends no longer running into the shared rows. A backend
    only ever touches its own rows, so this waits for nobody; while one fold runs, others skip."""
    if connection.dialect.name != "postgresql" or not connection.execute(
            text("SELECT pg_try_advisory_xact_lock(:lock)"), {"lock": FOLD_LOCK}).scalar_one():
        return
    for table, count, key in (("send_tally", "sends", "campaign, step, variant, status, outcomes, reason"),
                              ("entry_tally", "entries", "campaign, held_out")):
        connection.execute(text(
            f"WITH gone AS (DELETE FROM {table} WHERE writer <> {FOLDED} "
            f"AND writer NOT IN (SELECT pid FROM pg_stat_activity) RETURNING {key}, {count}) "
            f"INSERT INTO {table} ({key}, writer, {count}) SELECT {key}, {FOLDED}, sum({count}) FROM gone "
            f"GROUP BY {key} ON CONFLICT ({key}, writer) DO UPDATE SET {count} = {table}.{count} + excluded.{count}"))
