"""The deliverability guard (engine/delivery/guard.py): complaint and hard-bounce rates over a campaign's
latest sends, from the provider events really recorded (signed SendGrid posts to the web app, or
`record_events`), pause the campaign at the next tick and email the operator once. On SQLite, and on
PostgreSQL too when LIFECYCLE_TEST_POSTGRES is set."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email import message_from_bytes, policy
from fractions import Fraction

import pytest
from conftest import customer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert
from test_web import PUBLIC_KEY, Web, signed_post

from engine.config.settings import Guard
from engine.delivery.events import EventType, ProviderEvent, record_events
from engine.delivery.guard import Window, measure, verdict
from engine.delivery.outcomes import bit
from engine.senders.base import ALERT_SEND_ID, SendResult
from engine.senders.file import FileSender
from engine.store.dialect import make_engine
from engine.store.schema import upgrade
from engine.store.tables import Customer, Entry, Send, Suppression

DRIP = """\
topic: news
trigger: {event: signed_up}
steps:
  - {template: plain, subject: "One"}
  - {template: plain, delay: 1d, subject: "Two"}
"""
GUARD = {
    "complaint_rate": "5%",
    "hard_bounce_rate": "10%",
    "min_sends": 20,
    "window": 40,
    "alert_to": "ops@shop.example",
}
T0 = "2026-03-01T10:00:00Z"
DAY2 = "2026-03-02T10:00:00Z"


@pytest.fixture
def guarded(store_project, monkeypatch):
    """A two-step campaign whose first step went to 20 customers, and the web app receiving SendGrid's events."""
    project = store_project
    monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", PUBLIC_KEY)
    project.config(guard=GUARD)
    project.campaign("drip", DRIP)
    names = [f"c{i:02d}" for i in range(20)]
    project.customers(*(customer(n) for n in names))
    project.events(*({"customer": n, "event": "signed_up", "at": T0} for n in names))
    assert project.tick(T0)["drip"]["sent"] == 20
    return Web(project)


def send_ids(project) -> dict[str, int]:
    """Each customer's first send."""
    rows = project.query(
        "SELECT c.external_id, s.id FROM send s JOIN customer c ON c.id = s.customer_id WHERE step = 1"
    )
    return dict(rows)


def post(web, *events: tuple[str, str, dict]) -> None:
    """SendGrid events (customer, event, extra fields) about each customer's first send."""
    ids = send_ids(web.project)
    body = [
        {
            "event": kind,
            "email": f"{who}@example.com",
            "sg_event_id": f"{who}-{kind}",
            "send_id": str(ids[who]),
            **extra,
        }
        for who, kind, extra in events
    ]
    assert signed_post(web, body).status_code == 200


def alerts(project) -> list:
    return [
        message_from_bytes(p.read_bytes(), policy=policy.default)
        for p in sorted((project.root / "outbox").glob("alert-*.eml"))
    ]


def paused(project, now: str = DAY2) -> dict | None:
    report = json.loads(project.cli("report", "--now", now, "--format", "json").stdout)
    return report["campaigns"]["drip"]["paused"]


def test_complaints_above_the_limit_pause_the_campaign_and_alert_the_operator_once(guarded):
    project = guarded.project
    post(guarded, ("c00", "spamreport", {}), ("c01", "spamreport", {}), ("c02", "open", {}))
    result = json.loads(project.cli("tick", "--now", DAY2, "--json").stdout)
    reason = "complaint rate 10% (2 of the latest 20 sends) is above 5%"
    assert result["paused"] == {"drip": {"reason": reason, "since": "2026-03-02T10:00:00+00:00", "by": "guard"}}
    assert "sent" not in result["campaigns"]["drip"]  # the second steps wait
    assert project.query("SELECT count(*) FROM send WHERE step = 2 AND status = 'scheduled'") == [(20,)]
    [alert] = alerts(project)
    assert alert["To"] == "ops@shop.example" and alert["Subject"] == "Campaign drip paused by the deliverability guard"
    text = alert.get_body(("plain",)).get_content()
    assert "Its complaint rate is 10% (2 of its latest 20 sends), above the limit of 5%." in text
    assert "http://localhost:8000/dashboard" in text and "lifecycle resume drip" in text
    assert paused(project) == {"reason": reason, "since": "2026-03-02T10:00:00+00:00", "by": "guard"}

    project.tick("2026-03-02T11:00:00Z")  # still paused: nothing sent, no second alert
    assert len(alerts(project)) == 1 and project.query("SELECT count(*) FROM send WHERE status = 'sent'") == [(20,)]
    assert 'lifecycle_campaign_paused{campaign="drip"} 1.0' in guarded.client.get("/metrics").text


def test_only_hard_bounces_count_and_the_limit_itself_does_not_pause(guarded):
    project = guarded.project
    soft, hard = {"type": "blocked"}, {"type": "bounce"}
    post(guarded, ("c00", "bounce", hard), ("c01", "bounce", hard), *((f"c1{i}", "bounce", soft) for i in range(5)))
    assert project.tick("2026-03-01T11:00:00Z")["drip"] == {}  # 2 hard of 20 is 10%: not above it
    assert paused(project) is None and alerts(project) == []
    post(guarded, ("c02", "bounce", hard))
    project.tick("2026-03-01T12:00:00Z")
    assert paused(project)["reason"] == "hard-bounce rate 15% (3 of the latest 20 sends) is above 10%"
    assert (
        "Its hard-bounce rate is 15% (3 of its latest 20 sends)"
        in alerts(project)[0].get_body(("plain",)).get_content()
    )
    assert project.tick(DAY2)["drip"] == {}  # the second steps wait


def test_the_guard_waits_for_min_sends_and_a_resume_starts_a_fresh_window(store_project):
    project = store_project
    project.config(guard={**GUARD, "min_sends": 5, "window": 5})
    project.campaign("drip", DRIP)
    names = [f"c{i}" for i in range(4)]
    project.customers(*(customer(n) for n in names))
    project.events(*({"customer": n, "event": "signed_up", "at": T0} for n in names))
    project.tick(T0)
    complaints = [
        ProviderEvent(EventType.COMPLAINED, "spamreport", send_id, f"x{send_id}")
        for (send_id,) in project.query("SELECT id FROM send WHERE status = 'sent'")
    ]
    record_events(project.db, complaints)  # every send complained about, but only 4 of them
    assert project.tick("2026-03-01T11:00:00Z")["drip"] == {}
    assert paused(project, "2026-03-01T11:00:00Z") is None
    project.customers(customer("c9"))
    project.events({"customer": "c9", "event": "signed_up", "at": "2026-03-01T11:00:00Z"})
    project.tick("2026-03-01T11:00:00Z")  # the fifth send goes out: the guard sees it at the next tick
    project.tick("2026-03-01T12:00:00Z")
    assert paused(project, "2026-03-01T12:00:00Z")["reason"] == (
        "complaint rate 80% (4 of the latest 5 sends) is above 5%"
    )
    project.cli("resume", "drip", "--now", "2026-03-01T13:00:00Z")
    project.tick("2026-03-01T13:00:00Z")  # no sends since the resume: no window yet
    assert paused(project, "2026-03-01T13:00:00Z") is None
    assert len(alerts(project)) == 1


def test_the_alert_is_in_the_teams_language(guarded):
    project = guarded.project
    project.config(guard=GUARD, team={"locale": "ar"}, public_url="http://ops.shop.example")
    post(guarded, *((f"c0{i}", "spamreport", {}) for i in range(3)))
    project.tick(DAY2)
    [alert] = alerts(project)
    assert alert["Subject"] == "أوقف حارس التسليم الحملة drip"
    html = alert.get_body(("html",)).get_content()
    assert 'dir="rtl"' in html and "http://ops.shop.example/dashboard" in html
    assert "بلغ معدل الشكاوى 15% (3 من آخر 20 رسالة)، وهو أعلى من الحد 5%." in html


class RefusesTheFirstAlert(FileSender):
    """The file sender, except that the first alert it is handed fails."""

    refused = 0

    def deliver(self, emails):
        if any(e.send_id == ALERT_SEND_ID for e in emails) and not RefusesTheFirstAlert.refused:
            RefusesTheFirstAlert.refused += 1
            return [SendResult(e.send_id, ok=False, error="mailbox full", transient=True) for e in emails]
        return super().deliver(emails)


class RaisesOnTheFirstAlert(RefusesTheFirstAlert):
    def deliver(self, emails):
        if any(e.send_id == ALERT_SEND_ID for e in emails) and not RefusesTheFirstAlert.refused:
            RefusesTheFirstAlert.refused += 1
            raise ConnectionResetError("the provider hung up")
        return super().deliver(emails)


@pytest.mark.parametrize("sender", ["RefusesTheFirstAlert", "RaisesOnTheFirstAlert"])
def test_an_alert_the_sender_refuses_is_tried_again_at_the_next_tick(guarded, monkeypatch, sender):
    project = guarded.project
    monkeypatch.setattr(RefusesTheFirstAlert, "refused", 0)
    project.config(guard=GUARD, sender={"backend": f"test_guard:{sender}"})
    post(guarded, *((f"c0{i}", "spamreport", {}) for i in range(2)))
    project.tick(DAY2)
    assert alerts(project) == [] and paused(project)["by"] == "guard"
    assert project.query("SELECT alerted_at FROM campaign_pause") == [(None,)]
    project.tick("2026-03-02T11:00:00Z")
    assert len(alerts(project)) == 1


def test_rates_must_be_written_as_percentages(project):
    project.config(guard={"complaint_rate": 0.3})
    result = project.cli("validate", expect=1)
    assert "'0.3' is not a percentage: write it with a % sign, like 0.3%" in result.output
    assert "config.yaml:" in result.output


# -- the rates, against a count in Python ------------------------------------------------------------

START = datetime(2026, 3, 1, tzinfo=UTC)
ADDRESSES = [f"a{i}@example.com" for i in range(6)]
STATUSES = ["sent", "sent", "sent", "sent", "failed", "scheduled", "unknown"]
SUPPRESSIONS = ["bounce", "invalid", "spamreport", "unsubscribe"]
sends = st.lists(
    st.tuples(
        st.sampled_from(["drip", "drip", "other"]),
        st.sampled_from(STATUSES),
        st.sampled_from([3, 2, 1, 0]),  # complained, bounced: two bits
        st.sampled_from(ADDRESSES),
    ),
    min_size=1,
    max_size=40,
)
suppressed = st.dictionaries(st.sampled_from(ADDRESSES), st.sampled_from(SUPPRESSIONS), min_size=1)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('guard')}/store.db")
    upgrade(engine)
    with engine.begin() as connection:
        connection.execute(
            insert(Customer), [{"id": 1, "external_id": "c", "email": "c@x.org", "created_at": START, "attributes": {}}]
        )
        connection.execute(
            insert(Entry), [{"id": 1, "campaign": "drip", "customer_id": 1, "entry_key": "k", "entered_at": START}]
        )
    return engine


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(
    rows=sends,
    addresses=suppressed,
    order=st.randoms(use_true_random=False),
    size=st.integers(1, 30),
    since=st.none() | st.integers(0, 40),
)
def test_the_window_counts_what_a_count_in_python_counts(store, rows, addresses, order, size, since):
    times = list(range(len(rows)))
    order.shuffle(times)  # sent in any order of ids
    with store.begin() as connection:
        connection.execute(delete(Send))
        connection.execute(delete(Suppression))
        if rows:
            connection.execute(
                insert(Send),
                [
                    {
                        "entry_id": 1,
                        "customer_id": 1,
                        "campaign": campaign,
                        "step": step,
                        "status": status,
                        "outcomes": (bit("complained") if flags & 1 else 0) | (bit("bounced") if flags & 2 else 0),
                        "to_email": email,
                        "due_at": START,
                        "next_attempt_at": START,
                        "sent_at": START + timedelta(minutes=times[step]),
                    }
                    for step, (campaign, status, flags, email) in enumerate(rows)
                ],
            )
        if addresses:
            connection.execute(
                insert(Suppression), [{"email": e, "reason": r, "created_at": START} for e, r in addresses.items()]
            )
        after = START + timedelta(minutes=since) if since is not None else None
        window = measure(connection, "drip", size, after)
    latest = sorted(
        (
            (times[step], flags, email)
            for step, (campaign, status, flags, email) in enumerate(rows)
            if campaign == "drip" and status == "sent" and (since is None or times[step] > since)
        ),
        reverse=True,
    )[:size]
    hard = {e for e, r in addresses.items() if r in ("bounce", "invalid")}
    assert window == Window(
        sends=len(latest),
        complaints=sum(1 for _, flags, _ in latest if flags & 1),
        hard_bounces=sum(1 for _, flags, email in latest if flags & 2 and email in hard),
    )


@settings(max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(
    sends=st.integers(1, 10_000),
    complaints=st.integers(0, 10_000),
    bounces=st.integers(0, 10_000),
    complaint=st.decimals(Decimal("0.001"), Decimal("100"), places=3),
    hard=st.decimals(Decimal("0.001"), Decimal("100"), places=3),
    minimum=st.integers(1, 10_000),
)
@example(sends=2000, complaints=6, bounces=100, complaint=Decimal("0.3"), hard=Decimal("5"), minimum=500)  # at both
@example(sends=2000, complaints=6, bounces=101, complaint=Decimal("0.3"), hard=Decimal("5"), minimum=500)
@example(sends=2000, complaints=7, bounces=101, complaint=Decimal("0.3"), hard=Decimal("5"), minimum=2000)
@example(sends=499, complaints=499, bounces=499, complaint=Decimal("0.3"), hard=Decimal("5"), minimum=500)
def test_a_window_trips_exactly_when_a_rate_is_above_its_limit(sends, complaints, bounces, complaint, hard, minimum):
    complaints, bounces = min(complaints, sends), min(bounces, sends)
    guard = Guard(
        complaint_rate=f"{complaint}%", hard_bounce_rate=f"{hard}%", min_sends=minimum, window=max(minimum, sends)
    )
    trip = verdict(Window(sends, complaints, bounces), guard)
    above = [
        measure
        for measure, count, limit in (("complaint", complaints, complaint), ("hard_bounce", bounces, hard))
        if sends >= minimum and Fraction(count, sends) > Fraction(limit) / 100
    ]
    assert (trip.measure if trip else None) == (above[0] if above else None)
