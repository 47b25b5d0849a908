"""The send and entry tallies (engine/store/tallies.py), kept by the database's triggers, against counts
of the rows themselves: after ticks that send, skip, hold out and expire, after provider events,
after changes and deletions made outside the engine, before and after a fold, and after migration
0004 fills them from a store that had rows before it. On PostgreSQL, writers that change sends of
the same key at once do not wait for each other."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from conftest import customer
from sqlalchemy import text

from engine.delivery.events import EventType, ProviderEvent, record_deliveries
from engine.store import tallies
from engine.store.dialect import make_engine
from engine.store.schema import upgrade

CAMPAIGN = """\
topic: news
trigger: {event: signed_up}
holdout: 20%
goal: {event: purchase, within: 7d}
steps:
  - variants:
      - {template: a, subject: "A", weight: 1}
      - {template: b, subject: "B", weight: 1}
  - {template: plain, subject: "Tips", delay: 2d}
expire_after: 1d
"""
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def counted(project) -> tuple[list[tuple], dict[str, tuple[int, int]]]:
    """The tallies, as the report reads them."""
    with project.db.connect() as connection:
        return sorted(tallies.send_counts(connection), key=repr), tallies.entry_counts(connection)


def recounted(project) -> tuple[list[tuple], dict[str, tuple[int, int]]]:
    """The same counts from the rows."""
    sends = project.query("""
        SELECT status, campaign, step, variant, outcomes, CASE WHEN status = 'skipped' THEN reason END, count(*)
        FROM send GROUP BY status, campaign, step, variant, outcomes, CASE WHEN status = 'skipped' THEN reason END""")
    entries = project.query("""SELECT campaign, count(*), count(CASE WHEN held_out THEN 1 END) FROM entry
                               GROUP BY campaign""")
    return sorted(sends, key=repr), {name: (entered, held) for name, entered, held in entries}


def busy_store(project) -> None:
    """Sends in many states: sent with outcomes, held out, skipped for two reasons, expired."""
    project.template("a", "Variant A")
    project.template("b", "Variant B")
    project.campaign("drip", CAMPAIGN)
    names = [f"c{i:02d}" for i in range(40)]
    project.customers(*(customer(n) for n in names))
    project.query("UPDATE customer SET unsubscribed_at = :at WHERE external_id IN ('c01', 'c02')", at=T0)
    project.cli("suppress", "c03@example.com")
    project.events(*({"customer": n, "event": "signed_up", "at": "2026-03-01T10:00:00Z"} for n in names))
    project.tick("2026-03-01T10:00:00Z")
    sent = [row[0] for row in project.query("SELECT id FROM send WHERE status = 'sent' ORDER BY id")]
    with project.db.begin() as connection:
        record_deliveries(
            connection,
            [
                ProviderEvent(kind, kind, send_id, f"{kind}{send_id}", T0)
                for send_id in sent[:10]
                for kind in (EventType.DELIVERED, EventType.OPENED)
            ]
            + [ProviderEvent(EventType.BOUNCED, "bounce", sent[10], "b", T0)],
        )
    project.tick("2026-03-05T10:00:00Z")  # step 2 was due on the 3rd: expired


def test_the_tallies_follow_every_change_of_the_rows(store_project):
    project = store_project
    busy_store(project)
    sends, entries = counted(project)
    statuses = {row[0] for row in sends}
    assert {"sent", "held_out", "skipped", "expired"} <= statuses
    assert {row[5] for row in sends if row[0] == "skipped"} >= {"unsubscribed", "suppressed"}
    assert any(row[4] for row in sends)  # outcomes
    assert {row[3] for row in sends if row[2] == 1 and row[0] == "sent"} == {"a", "b"}
    assert (sends, entries) == recounted(project)
    # changes and deletions made outside the engine are counted too
    project.query(
        "UPDATE send SET status = 'failed', reason = 'provider said no' WHERE id IN "
        "(SELECT id FROM send WHERE status = 'sent' ORDER BY id LIMIT 3)"
    )
    project.query("UPDATE send SET reason = 'audience' WHERE status = 'skipped'")
    project.query("UPDATE send SET updated_at = :at", at=T0)  # no key changes
    project.query("DELETE FROM send WHERE status = 'expired'")
    project.query("UPDATE entry SET held_out = NOT held_out WHERE id IN (SELECT id FROM entry ORDER BY id LIMIT 5)")
    assert unfolded(project) > 0
    assert counted(project) == recounted(project)
    assert not [row for row in counted(project)[0] if row[0] == "expired"]
    with project.db.begin() as connection:
        tallies.fold(connection)
    assert unfolded(project) == 0
    assert counted(project) == recounted(project)


def unfolded(project) -> int:
    return project.query("SELECT (SELECT count(*) FROM send_tally_change) + (SELECT count(*) FROM entry_tally_change)")[
        0
    ][0]


def test_the_migration_counts_the_rows_stored_before_it(store_project):
    project = store_project
    busy_store(project)
    before = recounted(project)
    engine = make_engine(project.url)
    upgrade(engine, "0003")
    project.query("DELETE FROM send WHERE status = 'held_out'")  # no triggers at 0003
    upgrade(engine)
    engine.dispose()
    assert counted(project) == recounted(project) != before


@pytest.mark.postgres
def test_writers_of_the_same_key_never_wait_for_each_other(postgres_project):
    project = postgres_project
    busy_store(project)
    first, second = project.query("SELECT id FROM send WHERE status = 'sent' AND outcomes = 0 ORDER BY id LIMIT 2")
    engine = make_engine(project.url)
    with engine.connect() as one, engine.connect() as other:
        one.execute(text("UPDATE send SET status = 'unknown' WHERE id = :id"), {"id": first[0]})
        other.execute(text("SET LOCAL lock_timeout = '2s'"))
        # the same key leaves 'sent' and enters 'unknown' while the first transaction is still open
        other.execute(text("UPDATE send SET status = 'unknown' WHERE id = :id"), {"id": second[0]})
        other.commit()
        with project.db.begin() as connection:
            tallies.fold(connection)  # folds what has committed; the open transaction's changes wait
        one.commit()
    engine.dispose()
    assert unfolded(project) == 2
    assert counted(project) == recounted(project)


@pytest.mark.postgres
def test_one_statement_appends_one_change_per_key_it_moved(postgres_project):
    """PostgreSQL sums a statement's rows (migration 0012): one change per key, not one per row."""
    project = postgres_project
    busy_store(project)
    with project.db.begin() as connection:
        tallies.fold(connection)
    sent = project.query("SELECT count(*) FROM send WHERE status = 'sent' AND outcomes = 0 AND step = 1")[0][0]
    assert sent > 5
    project.query("UPDATE send SET status = 'unknown' WHERE status = 'sent' AND outcomes = 0 AND step = 1")
    changes = project.query("SELECT variant, status, change FROM send_tally_change ORDER BY variant, status")
    assert sum(change for _, status, change in changes if status == "unknown") == sent
    assert len(changes) == 4  # each variant: leaves 'sent', enters 'unknown'
    project.query("UPDATE send SET updated_at = :at", at=T0)  # no key moved: nothing appended
    assert unfolded(project) == 4
    assert counted(project) == recounted(project)
