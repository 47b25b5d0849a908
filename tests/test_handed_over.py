"""What a worker that stops mid-batch leaves: the groups it had claimed (each claimed as it went to
its sender) are `unknown`; the rest of its batch was never claimed, and goes out with the next tick."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from unittest.mock import ANY

from sqlalchemy import insert, text
from test_delivery import at, send_row, signups

from engine.delivery import workers
from engine.store.dialect import make_engine
from engine.store.schema import upgrade
from engine.store.tables import Customer, Entry, Send

T0 = datetime(2026, 3, 1, 10, 0)
LATER_NEWS = """\
topic: news
trigger: {event: signed_up}
steps: [{template: plain, delay: 1h, subject: "Hello {{ customer.first_name }}"}]
"""


def test_a_stopped_worker_leaves_unknown_only_what_it_had_claimed(store_project):
    project = store_project
    project.campaign("news", LATER_NEWS)
    signups(project, "ann", "bob")
    assert project.tick(at(T0))["news"] == {"entered": 2}  # both due in an hour
    with project.db.begin() as connection:  # as a worker killed after claiming ann's group, before bob's
        claim = "UPDATE send SET status = 'sending', claimed_by = 'gone', attempts = 1 WHERE id = :id"
        connection.execute(text(claim), {"id": send_row(project, "ann")["id"]})
        now = T0.replace(tzinfo=UTC) + timedelta(hours=1)
        assert workers.recover_in_flight(connection, timedelta(minutes=15), now, "gone") == 1
    assert send_row(project, "ann")["status"] == "unknown"
    assert (send_row(project, "bob")["status"], send_row(project, "bob")["attempts"]) == ("scheduled", 0)
    assert project.tick(at(T0 + timedelta(hours=1)))["news"] == {"sent": 1}  # bob's; ann's waits for an operator
    assert (send_row(project, "ann")["status"], send_row(project, "bob")["status"]) == ("unknown", "sent")


def test_the_upgrade_puts_back_what_an_earlier_version_claimed_but_never_handed_over(store_project):
    """Before migration 0011 a batch was claimed at once and each group handed over later: a send
    still `claimed, not yet handed to the sender` never went out, so it waits again."""
    engine = make_engine(store_project.url)
    upgrade(engine, "0010")
    now = T0.replace(tzinfo=UTC)
    with engine.begin() as connection:
        connection.execute(
            insert(Customer),
            {"id": 1, "external_id": "ann", "email": "ann@example.com", "created_at": now, "attributes": {}},
        )
        connection.execute(
            insert(Entry), {"id": 1, "campaign": "news", "customer_id": 1, "entry_key": "k", "entered_at": now}
        )
        claimed = {"entry_id": 1, "customer_id": 1, "campaign": "news", "status": "sending", "attempts": 1}
        claimed |= {"due_at": now, "next_attempt_at": now, "sent_at": now, "claimed_by": "gone", "updated_at": now}
        connection.execute(
            insert(Send),
            [
                {**claimed, "id": 1, "step": 1, "reason": "claimed, not yet handed to the sender"},
                {**claimed, "id": 2, "step": 2, "reason": None},  # handed over: it may have gone
            ],
        )
    upgrade(engine)
    with engine.begin() as connection:
        rows = connection.execute(
            text("SELECT id, status, reason, attempts, sent_at, claimed_by FROM send ORDER BY id")
        )
        assert [tuple(row) for row in rows] == [
            (1, "scheduled", None, 0, None, None),
            (2, "sending", None, 1, ANY, "gone"),
        ]
    engine.dispose()
