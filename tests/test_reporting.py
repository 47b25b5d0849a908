"""`lifecycle report`: a store with known outcomes, and every figure of the JSON, the table and the
HTML page checked against it (docs/campaigns.md "Stages and risk")."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
from conftest import customer
from sqlalchemy import event, select

from engine.campaigns.language import Goal
from engine.delivery.events import EventType, ProviderEvent, record_deliveries
from engine.insights.html import report_page
from engine.insights.report import Scope, _conversions, month_starts
from engine.store.dialect import make_engine
from engine.store.tables import Customer, Send

OFFER = """\
topic: offers
trigger: {event: signed_up}
goal: {event: purchase, within: 7d}
holdout: 40%
steps:
  - variants:
      - {name: a, template: plain, subject: "A"}
      - {name: b, template: plain, subject: "B"}
  - {template: plain, subject: "Again", delay: 2d}
"""
WELCOME = """\
topic: news
trigger: {event: signed_up}
expire_after: 12h
steps:
  - {template: plain, subject: "Welcome"}
  - {template: plain, subject: "Tips", delay: 12h}
"""
NAMES = ("ann", "bob", "cat", "dan", "eve", "fay", "gus", "hal", "ivy", "jon")
# The holdout and variant picks are a stable hash of campaign and customer id, so with these names:
HELD_OUT = {"cat": "a", "hal": "b", "ivy": "a"}
VARIANT = {"ann": "a", "bob": "a", "fay": "a", "gus": "a", "dan": "b", "eve": "b", "jon": "b"}
NOW = "2026-03-21T10:00:00Z"
ZERO_OUTCOMES = {"delivered": 0, "opened": 0, "clicked": 0, "bounced": 0, "complained": 0, "unsubscribed": 0}


def deliver(project, name: str, step: int, *kinds: str) -> None:
    """Provider events (neutral kinds: opened, clicked, ...) for one customer's offer send, stamped
    with its send time, stored as the webhook stores them."""
    with project.db.begin() as connection:
        send_id, sent_at = connection.execute(
            select(Send.id, Send.sent_at)
            .join(Customer, Customer.id == Send.customer_id)
            .where(Send.campaign == "offer", Send.step == step, Customer.external_id == name)
        ).one()
        record_deliveries(
            connection,
            [
                ProviderEvent(EventType(kind), kind, send_id, f"{name}-{step}-{i}-{kind}", sent_at)
                for i, kind in enumerate(kinds)
            ],
        )


@pytest.fixture
def store(store_project):
    """Ten sign-ups on 1 March: an A/B offer with a 40% holdout and a 7-day purchase goal, and a
    welcome whose second step expires; purchases, a complaint, a suppression and provider events.
    On SQLite, and on PostgreSQL too when LIFECYCLE_TEST_POSTGRES is set."""
    project = store_project
    project.campaign("offer", OFFER)
    project.campaign("welcome", WELCOME)
    project.customers(*(customer(n) for n in NAMES))
    project.events(*({"customer": n, "event": "signed_up", "at": "2026-03-01T10:00:00Z"} for n in NAMES))
    project.tick("2026-03-01T10:00:00Z")
    assert {r[1] for r in project.sends("offer") if r[3] == "held_out"} == set(HELD_OUT)
    project.cli("suppress", "jon@example.com")
    project.events(
        {"customer": "ann", "event": "purchase", "at": "2026-03-02T12:00:00Z", "properties": {"total": 50}},
        {"customer": "cat", "event": "purchase", "at": "2026-03-04T12:00:00Z", "properties": {"total": 10}},
        {"customer": "dan", "event": "purchase", "at": "2026-03-05T12:00:00Z", "properties": {"total": 80.5}},
        {"customer": "eve", "event": "purchase", "at": "2026-03-20T12:00:00Z", "properties": {"total": 20}},
        {"customer": "gus", "event": "complaint", "at": "2026-03-15T12:00:00Z"},
    )
    project.tick("2026-03-03T10:00:00Z")
    for name in VARIANT:
        deliver(project, name, 1, "delivered")
    deliver(project, "ann", 1, "opened", "opened", "clicked")
    deliver(project, "bob", 1, "opened")
    deliver(project, "dan", 1, "opened")
    deliver(project, "eve", 1, "bounced")
    deliver(project, "jon", 1, "rejected")
    deliver(project, "fay", 1, "complained")
    deliver(project, "gus", 1, "unsubscribed")
    deliver(project, "ann", 2, "delivered")
    deliver(project, "dan", 2, "delivered", "opened")
    return project


def report_json(project, *options: str) -> dict:
    return json.loads(project.cli("report", "--now", NOW, "--format", "json", *options).stdout)


def step_row(step: int, variant: str | None, **figures) -> dict:
    base = {
        "step": step,
        "variant": variant,
        "sent": 0,
        **ZERO_OUTCOMES,
        "failed": 0,
        "unknown": 0,
        "expired": 0,
        "held_out": 0,
        "waiting": 0,
        "skipped": {},
        "converted": 0,
    }
    return {**base, **figures}


# ann converts after step 1, dan after both steps, eve too late; cat converts while held out.
EXPECTED_OFFER = {
    "goal": "purchase within 1w",
    "entered": 10,
    "sent": 13,
    "delivered": 9,
    "opened": 4,
    "clicked": 1,
    "bounced": 2,
    "complained": 1,
    "unsubscribed": 1,
    "failed": 0,
    "unknown": 0,
    "expired": 0,
    "held_out": 3,
    "waiting": 0,
    "converted": 3,
    "skipped": {"suppressed": 1},
    "steps": [
        step_row(
            1, "a", sent=4, delivered=4, opened=2, clicked=1, complained=1, unsubscribed=1, held_out=2, converted=1
        ),
        step_row(1, "b", sent=3, delivered=3, opened=1, bounced=2, held_out=1, converted=1),
        step_row(2, None, sent=6, delivered=2, opened=1, skipped={"suppressed": 1}, converted=1),
    ],
    # each variant's entries and conversions add up, with cat's while held out, to the campaign's 3
    "variants": [
        {"variant": "a", "entries": 4, "converted": 1, "rate": 25.0},
        {"variant": "b", "entries": 3, "converted": 1, "rate": 33.33},
    ],
    "lift": {
        "treated": {"entries": 7, "converted": 2, "rate": 28.57},
        "held_out": {"entries": 3, "converted": 1, "rate": 33.33},
        "difference": -4.76,
        "ci_low": -54.97,
        "ci_high": 39.98,
        "relative": -14.29,
        "p_value": 0.8047,
        "confidence": 0.95,
    },
    "paused": None,
}
EXPECTED_WELCOME = {
    "goal": None,
    "entered": 10,
    "sent": 10,
    **ZERO_OUTCOMES,
    "failed": 0,
    "unknown": 0,
    "expired": 10,
    "held_out": 0,
    "waiting": 0,
    "converted": 0,
    "skipped": {},
    "steps": [step_row(1, None, sent=10), step_row(2, None, expired=10)],
    "variants": [],
    "lift": None,
    "paused": None,
}


def test_every_campaign_figure(store):
    report = report_json(store)
    assert report["campaigns"] == {"offer": EXPECTED_OFFER, "welcome": EXPECTED_WELCOME}


def test_activity_stages_risk_and_red_list(store):
    report = report_json(store)
    months = [row["month"] for row in report["activity"]]
    assert months == [f"2025-{m:02d}" for m in range(4, 13)] + ["2026-01", "2026-02", "2026-03"]
    assert report["activity"][-1] == {
        "month": "2026-03",
        "sent": 23,
        "delivered": 9,
        "opened": 4,
        "clicked": 1,
        "bounced": 2,
        "complained": 1,
        "unsubscribed": 1,
    }
    assert all(row["sent"] == 0 for row in report["activity"][:-1])
    # nobody is 90 days inactive; four bought; gus complained; eve was active yesterday
    assert report["stages"] == {"prospect": 6, "current": 4, "loyal": 0, "lost": 0}
    assert report["risk"] == {"green": 1, "yellow": 8, "red": 1}
    assert report["red_customers"] == [
        {
            "id": "gus",
            "email": "gus@example.com",
            "name": "Gus",
            "value": 0.0,
            "last_activity": "2026-03-15T12:00:00+00:00",
        }
    ]
    # everyone was created at 00:00 on 1 January, so counted at that instant: in S of January and
    # new in December; nobody is lost
    assert report["retention"][-4:] == [
        {"month": "2025-12", "start": 0, "end": 10, "new": 10, "returning": 0, "crr": None},
        {"month": "2026-01", "start": 10, "end": 10, "new": 0, "returning": 0, "crr": 100.0},
        {"month": "2026-02", "start": 10, "end": 10, "new": 0, "returning": 0, "crr": 100.0},
        {"month": "2026-03", "start": 10, "end": 10, "new": 0, "returning": 0, "crr": 100.0},
    ]


def test_the_table_shows_the_same_numbers(store, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    lines = store.cli("report", "--now", NOW).stdout.splitlines()

    def cells(first: str, after: str | None = None) -> list[str]:
        start = lines.index(next(line for line in lines if line.startswith(after))) if after else 0
        return next(line.split() for line in lines[start:] if line.split()[:1] == [first])[1:]

    assert cells("offer") == ["10", "13", "9", "4", "1", "2", "1", "1", "3"]
    assert cells("welcome") == ["10", "10", "0", "0", "0", "0", "0", "0", "0"]
    assert cells("offer", after="not sent") == ["0", "0", "0", "3", "0", "suppressed", "1"]
    assert cells("offer", after="holdout lift") == [
        "28.57",
        "(2/7)",
        "33.33",
        "(1/3)",
        "-4.76",
        "-54.97",
        "to",
        "39.98",
        "0.8047",
    ]
    assert cells("2026-02") == ["10", "10", "0", "0", "100.0"]
    assert cells("gus") == ["gus@example.com", "Gus", "0.00", "2026-03-15"]
    step_rows = [line.split() for line in lines if line.strip().startswith("step")]
    assert step_rows[:3] == [
        ["step", "1", "a", "4", "4", "2", "1", "0", "1", "1", "1"],
        ["step", "1", "b", "3", "3", "1", "0", "2", "0", "0", "1"],
        ["step", "2", "6", "2", "1", "0", "0", "0", "0", "1"],
    ]


def test_the_html_page_shows_the_same_numbers(store):
    page = store.cli("report", "--now", NOW, "--format", "html").stdout
    assert page.startswith("<!doctype html>") and "<script src" not in page  # plotly.js is inlined
    offer = re.search(r'<tr class="campaign" data-campaign="offer">(.*?)</tr>', page, re.S).group(1)
    figures = dict(re.findall(r'data-figure="(\w+)">([^<]*)<', offer))
    assert figures == {
        k: str(EXPECTED_OFFER[k])
        for k in (
            "entered",
            "sent",
            "delivered",
            "opened",
            "clicked",
            "bounced",
            "complained",
            "unsubscribed",
            "converted",
        )
    }
    assert "<td>28.57</td>" in page and "<td>-54.97 to 39.98</td>" in page
    assert '<td data-group="yellow">8</td>' in page
    assert page == report_page(report_json(store))  # the page is a function of the report alone


def test_campaign_filter(store):
    assert list(report_json(store, "--campaign", "offer")["campaigns"]) == ["offer"]


def test_the_tallies_and_a_count_of_the_rows_agree(store):
    """Without --since the campaign figures come from the tallies; with a --since before every
    entry, from the rows themselves: the same figures either way, on both databases."""
    store.query(
        "UPDATE send SET status = 'failed', reason = 'mailbox full' WHERE id = (SELECT min(id) FROM send "
        "WHERE status = 'sent')"
    )  # a failure, and its reason, which only the rows carry
    tallied = report_json(store)["campaigns"]
    counted = report_json(store, "--since", "2000-01-01T00:00:00Z")["campaigns"]
    assert tallied == counted
    assert sum(c["failed"] for c in tallied.values()) == 1
    assert any(c["skipped"] for c in tallied.values())


def test_since_keeps_later_entries_with_their_sends(project):
    project.campaign("welcome", WELCOME)
    project.customers(customer("ann"), customer("bob"))
    project.events({"customer": "ann", "event": "signed_up", "at": "2026-03-01T10:00:00Z"})
    project.tick("2026-03-01T10:00:00Z")
    project.events({"customer": "bob", "event": "signed_up", "at": "2026-03-10T10:00:00Z"})
    project.tick("2026-03-10T10:00:00Z")  # ann's second step is too late by now: expired
    figures = ("entered", "sent", "expired", "waiting")
    everything = report_json(project)
    assert [everything["campaigns"]["welcome"][f] for f in figures] == [2, 2, 1, 1]
    later = report_json(project, "--since", "2026-03-05T00:00:00Z")
    assert [later["campaigns"]["welcome"][f] for f in figures] == [1, 1, 0, 1]
    assert later["activity"][-1]["sent"] == 1 and everything["activity"][-1]["sent"] == 2
    assert later["since"] == "2026-03-05T00:00:00+00:00"


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--since", "yesterday", "--since: 'yesterday' is not an ISO-8601 date or time"),
        ("--now", "2026-13-01", "--now: '2026-13-01' is not an ISO-8601 date or time"),
        ("--format", "xml", "--format: 'xml' is not one of table, json, html"),
        ("--campaign", "nope", "no campaign named 'nope'"),
    ],
)
def test_bad_options_are_one_line_and_exit_1(project, option, value, message):
    project.campaign("welcome", WELCOME)
    result = project.cli("report", option, value, expect=1)
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


def test_retention_by_hand(project):
    """Lost after 30 days of inactivity. A customer is counted at an instant when created by then and
    last active (as of then: later events unseen) less than 30 days before it.

    customer  created           activity                          counted at the 1st of
    c         2025-12-01        purchase of 120 on 03-10; a July  Dec, Apr (lost, then back)
                                visit after now
    a         2026-01-10        -                                 Feb
    b         2026-02-01 00:00  purchase on 05-20                 Feb, Mar, Jun, now
    d         2026-04-15        purchase of 30 on 04-15 12:00     May
    g         2026-05-01 00:00  five purchases in June: loyal     May, Jun, now
    f         2026-06-01 00:00  a complaint: red though active    Jun, now
    e         2026-06-20        created after now: never counted

    month    S            E               new    returning   CRR = (E - new - returning) / S
    2025-11  0            1 (c)           c      -           -
    2025-12  1 (c)        0               -      -           0
    2026-01  0            2 (a, b)        a, b   -           -
    2026-02  2 (a, b)     1 (b)           -      -           50
    2026-03  1 (b)        1 (c)           -      c           0
    2026-04  1 (c)        2 (d, g)        d, g   -           0
    2026-05  2 (d, g)     3 (b, g, f)     f      b           50
    2026-06  3 (b, g, f)  3 at now        -      -           100
    """
    project.config(stages={"lost": {"inactive_for": "30d"}})
    project.campaign("welcome", WELCOME)
    project.customers(
        customer("c", created_at="2025-12-01T00:00:00Z"),
        customer("a", created_at="2026-01-10T00:00:00Z"),
        customer("b", created_at="2026-02-01T00:00:00Z"),
        customer("d", created_at="2026-04-15T00:00:00Z"),
        customer("g", created_at="2026-05-01T00:00:00Z"),
        customer("f", created_at="2026-06-01T00:00:00Z"),
        customer("e", created_at="2026-06-20T00:00:00Z"),
    )
    purchases = [
        ("c", "2026-03-10", 120),
        ("d", "2026-04-15T12:00", 30),
        ("b", "2026-05-20", 40),
        *(("g", f"2026-06-{day:02d}", 10) for day in (1, 5, 8, 11, 14)),
    ]
    project.events(
        *(
            {
                "customer": who,
                "event": "purchase",
                "at": f"{day}Z" if "T" in day else f"{day}T00:00:00Z",
                "properties": {"total": total},
            }
            for who, day, total in purchases
        ),
        {"customer": "f", "event": "complaint", "at": "2026-06-10T00:00:00Z"},
        {"customer": "c", "event": "visit", "at": "2026-07-01T00:00:00Z"},
    )
    report = json.loads(project.cli("report", "--now", "2026-06-15T12:00:00Z", "--format", "json").stdout)

    def month(label: str, start: int, end: int, new: int, returning: int, crr: float | None) -> dict:
        return {"month": label, "start": start, "end": end, "new": new, "returning": returning, "crr": crr}

    assert report["retention"] == [
        *(month(f"2025-{m:02d}", 0, 0, 0, 0, None) for m in range(7, 11)),
        month("2025-11", 0, 1, 1, 0, None),
        month("2025-12", 1, 0, 0, 0, 0.0),
        month("2026-01", 0, 2, 2, 0, None),
        month("2026-02", 2, 1, 0, 0, 50.0),
        month("2026-03", 1, 1, 0, 1, 0.0),
        month("2026-04", 1, 2, 2, 0, 0.0),
        month("2026-05", 2, 3, 1, 1, 50.0),
        month("2026-06", 3, 3, 0, 0, 100.0),
    ]
    assert report["stages"] == {"prospect": 1, "current": 1, "loyal": 1, "lost": 3}
    assert report["risk"] == {"green": 1, "yellow": 1, "red": 4}
    assert [(p["id"], p["value"]) for p in report["red_customers"]] == [
        ("c", 120.0),
        ("d", 30.0),
        ("a", 0.0),
        ("f", 0.0),
    ]


def test_months_follow_the_config_timezone():
    """1 March 03:00 in Tokyo is still February in UTC; the month starts are Tokyo midnights."""
    starts = month_starts(datetime(2026, 2, 28, 18, 0, tzinfo=UTC), "Asia/Tokyo")
    assert len(starts) == 13
    assert starts[-2] == datetime(2026, 2, 28, 15, 0, tzinfo=UTC)  # 1 March 00:00 +09:00
    assert starts[0] == datetime(2025, 3, 31, 15, 0, tzinfo=UTC)


def test_on_sqlite_each_goal_event_probes_its_customers_rows_whatever_the_statistics(project):
    """The conversions read the goal events first and probe each customer's sends and entries by
    index, with or without ANALYZE statistics: left to its estimates without them, SQLite scanned
    every send instead (30 s against 1 s at 10,000,000 sends)."""
    project.campaign("offer", OFFER)
    project.customers(customer("ann"))
    project.events({"customer": "ann", "event": "signed_up", "at": "2026-03-01T10:00:00Z"})
    project.tick("2026-03-01T10:00:00Z")
    engine = make_engine(project.url)
    plans: list[list[str]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def explain(connection, cursor, statement, parameters, context, executemany):
        if "goals" in statement and not statement.startswith("EXPLAIN"):
            plans.append([row[3] for row in cursor.connection.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)])

    goals = {"offer": Goal.model_validate({"event": "purchase", "within": "7d"})}
    with engine.connect() as connection:
        _conversions(connection, Scope(datetime(2026, 3, 21, 10, tzinfo=UTC)), goals)
    engine.dispose()
    assert len(plans) == 2
    for plan, table, index in zip(
        plans, ("send", "entry"), ("ix_send_customer_sent", "ix_entry_customer_entered"), strict=True
    ):
        assert any(step.startswith("SCAN event USING COVERING INDEX ix_event_customer_name_at") for step in plan)
        probe = next(i for i, step in enumerate(plan) if step.startswith(f"SEARCH {table} USING INDEX {index}"))
        assert plan.index("SCAN goals") < probe
        assert not any(step.startswith(f"SCAN {table}") for step in plan)
