"""Provider events summarised on the send row (engine/delivery/outcomes.py): recording an event marks its
outcome once, with the earliest time seen, and a replay changes nothing; migration 0003 fills the
same summary from the deliveries a store held before it. On SQLite, and on PostgreSQL too when
LIFECYCLE_TEST_POSTGRES is set."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from conftest import customer
from sqlalchemy import Boolean, Integer, String, column, select, table
from sqlmodel.sql.sqltypes import UTCDateTime

from engine.delivery.outcomes import OUTCOMES, bit, first_at, record_deliveries
from engine.store.dialect import make_engine
from engine.store.schema import upgrade
from engine.store.tables import Customer, Delivery, Entry, Send

NEWS = """\
topic: news
trigger: {event: signed_up}
steps: [{template: plain, subject: "News"}]
"""
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def summary(project, send_id: int) -> tuple[int, dict[str, datetime | None]]:
    """The send's outcome bits and first times."""
    with project.db.connect() as connection:
        row = connection.execute(
            select(Send.outcomes, *(first_at(o) for o in OUTCOMES)).where(Send.id == send_id)
        ).one()
    return row[0], dict(zip(OUTCOMES, row[1:], strict=True))


def record(project, send_id: int, *events: tuple[str, str, datetime]) -> int:
    """Store provider events (id, kind, time) for one send as the webhook does; returns how many were new."""
    with project.db.begin() as connection:
        return record_deliveries(
            connection,
            [{"send_id": send_id, "kind": kind, "at": at, "provider_event_id": uid} for uid, kind, at in events],
        )


def test_each_outcome_is_marked_once_with_its_earliest_time(store_project):
    project = store_project
    project.campaign("news", NEWS)
    project.customers(customer("ann"))
    project.events({"customer": "ann", "event": "signed_up", "at": "2026-03-01T10:00:00Z"})
    project.tick("2026-03-01T10:00:00Z")
    [(send_id,)] = project.query("SELECT id FROM send WHERE status = 'sent'")
    later = T0 + timedelta(hours=2)
    batch = [
        ("e1", "delivered", T0),
        ("e2", "open", later),
        ("e3", "open", later + timedelta(hours=1)),
        ("e4", "bounce", T0),
        ("e5", "dropped", T0 + timedelta(minutes=1)),
        ("e6", "processed", T0),
    ]
    assert record(project, send_id, *batch) == 6
    marked = summary(project, send_id)
    assert record(project, send_id, *batch) == 0  # a replay
    assert summary(project, send_id) == marked
    assert record(project, send_id, ("e7", "open", T0 + timedelta(hours=1))) == 1  # arrives late, happened earlier
    mask, times = summary(project, send_id)
    assert mask == bit("delivered") | bit("opened") | bit("bounced")
    assert times == {
        "delivered": T0,
        "opened": T0 + timedelta(hours=1),
        "clicked": None,
        "bounced": T0,
        "complained": None,
        "unsubscribed": None,
    }
    report = json.loads(project.cli("report", "--now", "2026-03-02T00:00:00Z", "--format", "json").stdout)
    news = report["campaigns"]["news"]
    assert (news["sent"], news["delivered"], news["opened"], news["bounced"], news["clicked"]) == (1, 1, 1, 1, 0)
    assert report["activity"][-1]["opened"] == 1


# The send table as revision 0002 has it, without the outcome columns.
SEND_0002 = table(
    "send",
    *(column(name, Integer()) for name in ("id", "entry_id", "customer_id", "step", "priority", "attempts")),
    column("campaign", String()),
    column("status", String()),
    column("marketing", Boolean()),
    column("due_at", UTCDateTime()),
    column("next_attempt_at", UTCDateTime()),
    column("sent_at", UTCDateTime()),
)


def test_the_migration_fills_outcomes_from_deliveries_stored_before_it(store_project):
    engine = make_engine(store_project.url)
    upgrade(engine, "0002")
    with engine.begin() as connection:
        connection.execute(
            Customer.__table__.insert(),
            {"id": 1, "external_id": "ann", "email": "ann@example.com", "created_at": T0, "attributes": {}},
        )
        connection.execute(
            Entry.__table__.insert(),
            {"id": 1, "campaign": "news", "customer_id": 1, "entry_key": "k", "entered_at": T0},
        )
        connection.execute(
            SEND_0002.insert(),
            [
                {
                    "id": step,
                    "entry_id": 1,
                    "customer_id": 1,
                    "step": step,
                    "priority": 0,
                    "attempts": 1,
                    "marketing": True,
                    "campaign": "news",
                    "status": "sent",
                    "due_at": T0,
                    "next_attempt_at": T0,
                    "sent_at": T0,
                }
                for step in (1, 2, 3)
            ],
        )
        connection.execute(
            Delivery.__table__.insert(),
            [
                {"send_id": 1, "kind": "delivered", "at": T0 + timedelta(minutes=2)},
                {"send_id": 1, "kind": "open", "at": T0 + timedelta(hours=3)},
                {"send_id": 1, "kind": "open", "at": T0 + timedelta(hours=1)},
                {"send_id": 1, "kind": "click", "at": T0 + timedelta(hours=4)},
                {"send_id": 2, "kind": "dropped", "at": T0},
                {"send_id": 2, "kind": "processed", "at": T0},
            ],
        )
    upgrade(engine)
    engine.dispose()
    assert summary(store_project, 1) == (
        bit("delivered") | bit("opened") | bit("clicked"),
        {
            "delivered": T0 + timedelta(minutes=2),
            "opened": T0 + timedelta(hours=1),
            "clicked": T0 + timedelta(hours=4),
            "bounced": None,
            "complained": None,
            "unsubscribed": None,
        },
    )
    assert summary(store_project, 2) == (bit("bounced"), {**dict.fromkeys(OUTCOMES), "bounced": T0})
    assert summary(store_project, 3) == (0, dict.fromkeys(OUTCOMES))
