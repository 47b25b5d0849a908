"""The ledger's writes are set-wise: sends that take the same values change in one statement,
the rest one by one. Whatever the mix, the store ends as if each change had been applied alone."""

from __future__ import annotations

from datetime import UTC, datetime

from conftest import customer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from engine.delivery import ledger

NEWS = """\
topic: news
trigger: {event: signed_up}
steps: [{template: plain, subject: "Hello", delay: 2d}]
"""
FIELDS = {
    "status": st.sampled_from(["scheduled", "deferred", "skipped"]),
    "reason": st.sampled_from([None, "quiet_hours", "cap"]),
    "message_id": st.sampled_from([None, "<a@x>", "<b@x>"]),
    "attempts": st.integers(0, 3),
    "updated_at": st.sampled_from([datetime(2026, 3, 1, 10, tzinfo=UTC), datetime(2026, 3, 2, 10, tzinfo=UTC)]),
}


def changes(ids: list[int]) -> st.SearchStrategy[list[dict]]:
    """A change for some of the sends, each setting some fields (at least one)."""
    one = st.fixed_dictionaries({}, optional=FIELDS).filter(bool)
    return st.lists(st.tuples(st.sampled_from(ids), one), unique_by=lambda pair: pair[0]).map(
        lambda pairs: [{"id": send_id, **fields} for send_id, fields in pairs]
    )


def test_changes_applied_together_equal_each_applied_alone(store_project):
    project = store_project
    project.campaign("news", NEWS)
    names = [f"c{i}" for i in range(12)]
    project.customers(*(customer(n) for n in names))
    project.events(*({"customer": n, "event": "signed_up", "at": "2026-03-01T10:00:00Z"} for n in names))
    project.tick("2026-03-01T10:00:00Z")  # the entries and their sends, due in two days
    ids = [row[0] for row in project.query("SELECT id FROM send ORDER BY id")]
    assert len(ids) == 12
    columns = ", ".join(FIELDS)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(changes(ids))
    def check(first: list[dict]) -> None:
        with project.db.begin() as connection:
            ledger._change(connection, first)
            together = [tuple(r) for r in connection.execute(text(f"SELECT id, {columns} FROM send ORDER BY id"))]
            connection.rollback()
        with project.db.begin() as connection:
            for change in first:
                ledger._change(connection, [change])
            alone = [tuple(r) for r in connection.execute(text(f"SELECT id, {columns} FROM send ORDER BY id"))]
            connection.rollback()
        assert together == alone

    check()
