"""`lifecycle unknown`: the sends left `unknown` by a worker that stopped mid-send are listed with what
the provider has said of them since, and an operator settles them: as sent (the entry goes on to its
next step from the claim) or by sending again, which is recorded on the send and never silent."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from conftest import customer

from engine.delivery.events import EventType, ProviderEvent, record_events

T0 = datetime(2026, 3, 1, 10, 0)
TWO_STEPS = """\
topic: news
trigger: {event: signed_up}
steps:
  - {template: plain, subject: "First", delay: 1h}
  - {template: plain, subject: "Second", delay: 2d}
"""


def at(moment: datetime) -> str:
    return moment.isoformat() + "Z"


@pytest.fixture
def stranded(store_project):
    """ann, bob and cy each have a first send left `sending` by a worker that died an hour before
    T0 + 1h (the lease is 15 minutes), so the tick at T0 + 1h makes them `unknown`; ann's provider
    has since reported her message delivered."""
    project = store_project
    project.campaign("news", TWO_STEPS)
    project.customers(*(customer(n) for n in ("ann", "bob", "cy")))
    project.events(
        *({"customer": n, "event": "signed_up", "at": at(T0 - timedelta(hours=1))} for n in ("ann", "bob", "cy"))
    )
    project.tick(at(T0 - timedelta(minutes=59)))
    assert [status for *_, status, _ in project.sends()] == ["scheduled"] * 3  # due at T0
    project.query(
        "UPDATE send SET status = 'sending', attempts = 1, sent_at = :at, updated_at = :at,"
        " to_email = (SELECT email FROM customer WHERE customer.id = send.customer_id)",
        at=T0.isoformat(sep=" "),
    )
    project.tick(at(T0 + timedelta(hours=1)))
    assert [status for *_, status, _ in project.sends()] == ["unknown"] * 3
    ann = send_id(project, "ann")
    record_events(
        project.db,
        [
            ProviderEvent(
                EventType.DELIVERED, "delivered", ann, "evt-1", (T0 + timedelta(minutes=1)).replace(tzinfo=UTC)
            )
        ],
    )
    return project


def send_id(project, name: str, step: int = 1) -> int:
    return project.query(
        "SELECT s.id FROM send s JOIN customer c ON c.id = s.customer_id WHERE c.external_id = :n AND s.step = :s",
        n=name,
        s=step,
    )[0][0]


def listed(project, *extra: str) -> dict:
    return json.loads(project.cli("unknown", "--format", "json", *extra).stdout)


def test_unknown_sends_are_listed_with_the_providers_evidence_and_listing_changes_nothing(stranded):
    shown = listed(stranded)
    assert [(s["customer"], s["step"], s["email"]) for s in shown["unknown"]] == [
        ("ann", 1, "ann@example.com"),
        ("bob", 1, "bob@example.com"),
        ("cy", 1, "cy@example.com"),
    ]
    assert [s["outcomes"] for s in shown["unknown"]] == [["delivered"], [], []]
    assert shown["unknown"][0]["claimed_at"].startswith("2026-03-01T10:00")
    table = stranded.cli("unknown").stdout
    assert "1 of 3 have a delivery, open or click" in table
    assert [status for *_, status, _ in stranded.sends()] == ["unknown"] * 3


def test_settled_as_sent_the_entry_goes_on_to_its_next_step_from_the_claim(stranded):
    stranded.cli("unknown", "--resolve", "sent", "--now", at(T0 + timedelta(days=1)))
    assert listed(stranded)["unknown"] == []
    assert stranded.sent() == [("ann", 1), ("bob", 1), ("cy", 1)]
    due = stranded.query("SELECT due_at FROM send WHERE step = 2 ORDER BY id")
    assert len(due) == 3 and all(str(d).startswith("2026-03-03 10:00") for (d,) in due)  # claim + 2d
    stranded.tick(at(T0 + timedelta(days=2, hours=1)))
    assert sorted(str(m["Subject"]) for m in stranded.outbox()) == ["Second"] * 3  # step 1 never again


def test_a_resend_goes_out_at_the_next_tick_and_is_recorded_as_such(stranded):
    resolved = stranded.cli(
        "unknown", "--campaign", "news", "--resolve", "resend", "--now", at(T0 + timedelta(hours=2))
    )
    assert "3 will be sent again" in resolved.stdout
    stranded.tick(at(T0 + timedelta(hours=2)))
    assert sorted(m["To"].addresses[0].addr_spec for m in stranded.outbox()) == [
        f"{n}@example.com" for n in ("ann", "bob", "cy")
    ]
    rows = stranded.query("SELECT status, attempts, resent_at FROM send WHERE step = 1")
    assert {(status, attempts) for status, attempts, _ in rows} == {("sent", 2)}
    assert all(str(resent).startswith("2026-03-01 12:00") for *_, resent in rows)


def test_a_campaign_filter_settles_only_that_campaign(stranded):
    stranded.campaign("other", TWO_STEPS.replace("signed_up", "never_happens"))
    assert listed(stranded, "--campaign", "other")["unknown"] == []
    stranded.cli("unknown", "--campaign", "other", "--resolve", "resend")
    assert len(listed(stranded)["unknown"]) == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (("--resolve", "maybe"), "--resolve: 'maybe' is not one of sent, resend"),
        (("--campaign", "nwes"), "no campaign named 'nwes'"),
        (("--format", "xml"), "--format: 'xml' is not one of table, json"),
    ],
)
def test_bad_options_are_one_clear_line_and_change_nothing(stranded, args, message):
    result = stranded.cli("unknown", *args, expect=1)
    assert message in result.output
    assert [status for *_, status, _ in stranded.sends()] == ["unknown"] * 3
