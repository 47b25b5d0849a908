"""Due sends are read from the start of a range of the partial index of the sends still waiting,
never by sorting every waiting send of a step: a broadcast to a million customers would sort a
million rows for each batch."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from conftest import customer
from sqlalchemy import event, text

from engine.campaigns.language import load_campaigns
from engine.config.settings import load_config
from engine.delivery import tick
from engine.delivery.ledger import claim, due_query
from engine.delivery.statuses import CLAIMABLE
from engine.store.dialect import make_engine
from engine.store.tables import WAITING_SENDS

NEWS = """\
topic: news
trigger: {event: signed_up}
exit: [{event: purchase}]
steps: [{template: plain, subject: "Hello", delay: 1d}]
"""


def test_the_index_holds_exactly_the_sends_a_tick_may_claim():
    claimable = ", ".join(f"'{status.value}'" for status in CLAIMABLE)
    assert WAITING_SENDS.removeprefix("status IN (").removesuffix(")") == claimable


def test_a_batch_of_due_sends_is_read_from_the_index_without_sorting(project):
    project.campaign("news", NEWS)
    names = [f"c{i}" for i in range(30)]
    project.customers(*(customer(n) for n in names))
    project.events(*({"customer": n, "event": "signed_up", "at": "2026-03-01T10:00:00Z"} for n in names))
    project.tick("2026-03-01T10:00:00Z")  # the sends wait a day
    config = load_config(project.root / "config.yaml")
    (campaign,) = load_campaigns(config)
    query = due_query(config, campaign, 1, datetime(2026, 3, 3, tzinfo=UTC), 10)
    with project.db.connect() as connection:
        sql = str(query.compile(connection, compile_kwargs={"literal_binds": True}))
        plan = [row[-1] for row in connection.execute(text(f"EXPLAIN QUERY PLAN {sql}"))]
        due = connection.execute(query).all()
    assert any(step.startswith("SEARCH send USING INDEX ix_send_due") for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan
    assert [row.id for row in due] == sorted(row.id for row in due) and len(due) == 10


def test_a_claim_finds_its_sends_by_id_never_through_a_status_index(project):
    """With the status in its WHERE, SQLite would read every waiting send through a status index to
    claim a group: each claim of a million-customer broadcast read a million index entries."""
    project.campaign("news", NEWS)
    project.customers(*(customer(f"c{i}") for i in range(30)))
    project.events(*({"customer": f"c{i}", "event": "signed_up", "at": "2026-03-01T10:00:00Z"} for i in range(30)))
    project.tick("2026-03-01T10:00:00Z")
    ids = [row[0] for row in project.query("SELECT id FROM send ORDER BY id LIMIT 5")]
    plans = []

    def explain(connection, cursor, statement, parameters, context, executemany):
        if statement.startswith("UPDATE send"):
            plans.extend(
                row[-1]
                for row in connection.connection.driver_connection.execute(
                    f"EXPLAIN QUERY PLAN {statement}", parameters
                )
            )

    store = make_engine(project.url)  # as the tick opens it
    event.listen(store, "before_cursor_execute", explain)
    with store.begin() as connection:
        claimed = claim(connection, ids, datetime(2026, 3, 3, tzinfo=UTC), None, "me")
    store.dispose()
    assert claimed == set(ids)
    assert plans and all("INTEGER PRIMARY KEY" in step for step in plans if step.startswith("SEARCH send")), plans


@pytest.mark.postgres
def test_a_large_evaluation_reads_the_statistics_again(postgres_project, monkeypatch):
    """PostgreSQL planned the frequency cap's query by default guesses on a send table it had
    last seen empty, and read every send for each batch; a tick that creates many entries has the
    statistics read again before it sends."""
    project = postgres_project
    project.campaign("news", NEWS)
    project.customers(*(customer(f"c{i}") for i in range(30)))
    project.events(*({"customer": f"c{i}", "event": "signed_up", "at": "2026-03-01T10:00:00Z"} for i in range(30)))
    analyzed = "SELECT coalesce(analyze_count, 0) FROM pg_stat_user_tables WHERE relname = 'send'"
    before = project.query(analyzed)[0][0]
    monkeypatch.setattr(tick, "RESTATE", 30)
    assert project.tick("2026-03-01T10:00:00Z")["news"] == {"entered": 30}
    for _ in range(50):  # the statistics collector reports a moment later
        if project.query(analyzed)[0][0] > before:
            break
        project.query("SELECT pg_stat_clear_snapshot()")
    assert project.query(analyzed)[0][0] == before + 1
