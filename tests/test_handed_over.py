"""What a worker that stops mid-batch leaves: only the sends it had handed to its sender are
`unknown`; those it claimed but never handed over wait again, their try given back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from test_delivery import NEWS, at, send_row, signups

from engine.delivery import workers
from engine.delivery.ledger import NOT_HANDED

T0 = datetime(2026, 3, 1, 10, 0)


def test_a_stopped_worker_leaves_unknown_only_what_it_had_handed_over(store_project):
    project = store_project
    project.campaign("news", NEWS)
    signups(project, "ann", "bob")
    project.tick(at(T0))
    ann, bob = send_row(project, "ann"), send_row(project, "bob")
    assert ann["status"] == bob["status"] == "sent" and ann["attempts"] == 1
    with project.db.begin() as connection:  # as a worker killed between handing ann over and bob
        claim = text("UPDATE send SET status = 'sending', claimed_by = 'gone', reason = :reason WHERE id = :id")
        connection.execute(claim, {"reason": None, "id": ann["id"]})
        connection.execute(claim, {"reason": NOT_HANDED, "id": bob["id"]})
        now = T0.replace(tzinfo=UTC)
        assert workers.recover_in_flight(connection, timedelta(minutes=15), now, "gone") == 1
    ann, bob = send_row(project, "ann"), send_row(project, "bob")
    assert ann["status"] == "unknown"
    assert (bob["status"], bob["reason"], bob["attempts"]) == ("scheduled", None, 0)
    assert project.query("SELECT claimed_by FROM send WHERE id = :id", id=bob["id"]) == [(None,)]
