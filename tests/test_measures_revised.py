"""The measures as the contract defines them, point in time (docs/campaigns.md "Stages and risk",
docs/command-line.md `lifecycle report` and `lifecycle customers`): retention counted by hand for
small stores, a customer who is lost and comes back, customers created at `--now` and at 00:00 on
a 1st, events exactly at a window's boundary, the same past month in reports run on different
days, a property test against a plain reading of the definitions, and `lifecycle customers`."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from conftest import customer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, select
from sqlmodel import col

from engine.campaigns.conditions import ConditionCompiler
from engine.campaigns.language import Condition
from engine.campaigns.measures import Measures
from engine.config.settings import load_config
from engine.insights.customers import count_customers, customer_rows
from engine.insights.report import customer_counts, month_starts, report_connection
from engine.store import schema
from engine.store.tables import Customer, Event

NOW = "2026-05-10T00:00:00Z"
LOST_30D = {"stages": {"lost": {"inactive_for": "30d"}}}


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def visits(who: str, *days: str) -> list[dict]:
    return [{"customer": who, "event": "visit", "at": f"{day}T00:00:00Z"} for day in days]


def report(project, now: str = NOW) -> dict:
    return json.loads(project.cli("report", "--now", now, "--format", "json").stdout)


def month(label: str, start: int, end: int, new: int, returning: int, crr: float | None) -> dict:
    return {"month": label, "start": start, "end": end, "new": new, "returning": returning, "crr": crr}


@pytest.fixture
def returning_store(store_project):
    """Lost after 30 days without activity; now is 2026-05-10 00:00 UTC.

    customer  created           activity                         counted at
    s         2026-01-01 00:00  visits every 20 days or less     Jan 1 (its own instant) and every 1st after
    r         2026-01-05        visits on 01-20, then 04-15      Feb 1; lost by Mar 1; back: May 1, now
    m         2026-03-01 00:00  none                             Mar 1 only (lost 30 days later)
    n         at now            none                             now: the current month's end
    """
    project = store_project
    project.config(**LOST_30D)
    project.customers(
        customer("s", created_at="2026-01-01T00:00:00Z"),
        customer("r", created_at="2026-01-05T00:00:00Z"),
        customer("m", created_at="2026-03-01T00:00:00Z"),
        customer("n", created_at=NOW),
    )
    project.events(
        *visits("s", "2026-01-15", "2026-02-01", "2026-02-20", "2026-03-10", "2026-03-30", "2026-04-20", "2026-05-05"),
        *visits("r", "2026-01-20", "2026-04-15"),
    )
    return project


def test_retention_by_hand_with_a_customer_lost_and_back(returning_store):
    """month    S        E             new            returning   CRR = (E - new - returning) / S
    2025-12  0        1 (s)         s (at Jan 1)   -           -
    2026-01  1 (s)    2 (r, s)      r              -           100
    2026-02  2 (r, s) 2 (s, m)      m (at Mar 1)   -           50: r was lost
    2026-03  2 (s, m) 1 (s)         -              -           50: m was lost
    2026-04  1 (s)    2 (r, s)      -              r           100: r came back, counted apart
    2026-05  2 (r, s) 3 (r, s, n)   n (at now)     -           100
    """
    result = report(returning_store)
    assert result["retention"][-6:] == [
        month("2025-12", 0, 1, 1, 0, None),
        month("2026-01", 1, 2, 1, 0, 100.0),
        month("2026-02", 2, 2, 1, 0, 50.0),
        month("2026-03", 2, 1, 0, 0, 50.0),
        month("2026-04", 1, 2, 0, 1, 100.0),
        month("2026-05", 2, 3, 1, 0, 100.0),
    ]
    assert all(row == month(row["month"], 0, 0, 0, 0, None) for row in result["retention"][:6])
    # n, created exactly at now, is in the stage counts and in the month's end count alike
    assert result["stages"] == {"prospect": 3, "current": 0, "loyal": 0, "lost": 1}
    assert result["retention"][-1]["end"] == 4 - result["stages"]["lost"]


def test_a_past_month_is_the_same_in_reports_run_on_different_days(returning_store):
    """Events after the first report (m comes back in June, r keeps visiting) change nothing of
    the months before it; reading last activity as of the report's now made them change."""
    project = returning_store
    first = report(project)
    project.events(*visits("m", "2026-06-01", "2026-06-25"), *visits("r", "2026-05-20", "2026-06-10", "2026-07-01"))
    later = report(project, "2026-12-20T09:00:00Z")
    months = {row["month"]: row for row in later["retention"]}
    for row in first["retention"][:-1]:  # the current month of the first report ended at its now
        if row["month"] in months:
            assert months[row["month"]] == row
    assert [months[m]["crr"] for m in ("2026-02", "2026-03", "2026-04")] == [50.0, 50.0, 100.0]
    # n, new at the first report's now, and m, back at 00:00 on 1 June
    assert months["2026-05"] == month("2026-05", 2, 4, 1, 1, 100.0)
    assert months["2026-06"] == month("2026-06", 4, 2, 0, 0, 50.0)  # s and n were lost, r and m stayed


def test_the_lost_boundary(store_project):
    """Inactive for exactly stages.lost.inactive_for is lost (now − last activity ≥ 30d), and not
    counted at that instant; a second less is neither. At a month's first instant likewise."""  # noqa: RUF002
    project = store_project
    project.config(**LOST_30D)
    project.customers(
        customer("exactly", created_at="2026-04-10T00:00:00Z"),
        customer("second_less", created_at="2026-04-10T00:00:01Z"),
        customer("at_first", created_at="2026-03-02T00:00:00Z"),  # 30 days before 1 April
    )
    result = report(project)
    assert result["stages"]["lost"] == 2
    assert result["retention"][-3]["end"] == 0  # at_first is lost at 1 April 00:00
    assert result["retention"][-2]["end"] == 2  # exactly and second_less at 1 May
    rows = {r["id"]: r["stage"] for r in json.loads(project.cli("customers", "--now", NOW, "--format", "json").stdout)}
    assert rows == {"exactly": "lost", "second_less": "prospect", "at_first": "lost"}


def test_windows_include_their_boundary(store_project):
    """Five purchases within 365d make a customer loyal when the first is exactly 365 days before
    now, in the report, the customer list and campaign conditions alike; a second earlier, not."""
    project = store_project
    start = instant(NOW) - timedelta(days=365)
    project.customers(customer("edge", created_at="2025-01-01T00:00:00Z"), customer("out", created_at="2025-01-01"))
    project.events(
        *(
            {"customer": who, "event": "purchase", "at": (first + timedelta(days=30 * i)).isoformat()}
            for who, first in (("edge", start), ("out", start - timedelta(seconds=1)))
            for i in range(5)
        ),
        *({"customer": who, "event": "visit", "at": "2026-05-09T00:00:00Z"} for who in ("edge", "out")),
    )
    assert report(project)["stages"] == {"prospect": 0, "current": 1, "loyal": 1, "lost": 0}
    loyal = json.loads(project.cli("customers", "--now", NOW, "--stage", "loyal", "--format", "json").stdout)
    assert [r["id"] for r in loyal] == ["edge"]
    config = load_config(project.root / "config.yaml")
    compiler = ConditionCompiler(config, instant(NOW))
    engine = schema.open_store(config.database_url)
    conditions = [
        {"stage": "loyal"},
        {"event": "purchase", "at_least": 5, "within": "365d"},
        {"attribute": "created_at", "within_last": f"{(instant(NOW) - instant('2025-01-01T00:00:00Z')).days}d"},
    ]
    with engine.connect() as connection:
        for condition in conditions:
            expression = compiler.condition(Condition.model_validate(condition))
            found = connection.execute(select(col(Customer.external_id)).where(expression)).scalars().all()
            assert sorted(found) == (["edge"] if "event" in condition or "stage" in condition else ["edge", "out"])
    engine.dispose()


# -- against a plain reading of the definitions ------------------------------------------------------

DAY = timedelta(days=1)
ORIGIN = datetime(2025, 1, 1, tzinfo=UTC)
PROPERTY_NOW = datetime(2026, 2, 14, 6, 0, tzinfo=UTC)


def expected_retention(customers: list[tuple[datetime, list[datetime]]], lost: timedelta) -> list[dict]:
    """The contract read literally, customer by customer and month by month."""
    bounds = [*month_starts(PROPERTY_NOW, "UTC")[:-1], PROPERTY_NOW]

    def counted(created: datetime, events: list[datetime], t: datetime) -> bool:
        seen = [e for e in events if e <= t]
        last = max(seen) if seen else created
        return created <= t and t - last < lost

    rows = []
    for start, end in pairwise(bounds):
        at_start = [counted(c, e, start) for c, e in customers]
        at_end = [counted(c, e, end) for c, e in customers]
        new = sum(1 for (c, _), s, e in zip(customers, at_start, at_end, strict=True) if e and not s and c > start)
        back = sum(1 for (c, _), s, e in zip(customers, at_start, at_end, strict=True) if e and not s and c <= start)
        s, e = sum(at_start), sum(at_end)
        crr = round(100 * (e - new - back) / s, 2) if s else None
        rows.append({"month": start.strftime("%Y-%m"), "start": s, "end": e, "new": new, "returning": back, "crr": crr})
    return rows


# offsets in days from ORIGIN, some landing on month boundaries (00:00 on a 1st) exactly
moments = st.integers(min_value=0, max_value=450).map(lambda d: ORIGIN + d * DAY) | st.sampled_from(
    [datetime(2025, m, 1, tzinfo=UTC) for m in range(1, 13)] + [PROPERTY_NOW, datetime(2026, 2, 1, tzinfo=UTC)]
)
stores = st.lists(st.tuples(moments, st.lists(moments, max_size=4)), min_size=1, max_size=8)


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(store=stores, lost_days=st.sampled_from([20, 30, 45, 90]))
def test_retention_follows_the_definition(store_project, store, lost_days):
    project = store_project
    project.config(stages={"lost": {"inactive_for": f"{lost_days}d"}})
    config = load_config(project.root / "config.yaml")
    engine = schema.open_store(config.database_url)
    with engine.begin() as connection:
        connection.execute(delete(Event))
        connection.execute(delete(Customer))
        people = [
            {"id": i + 1, "external_id": f"c{i}", "email": f"c{i}@example.com", "created_at": created, "attributes": {}}
            for i, (created, _) in enumerate(store)
        ]
        connection.execute(insert(Customer), people)
        events = [
            {"customer_id": i + 1, "name": "visit", "at": at, "properties": {}}
            for i, (_, times) in enumerate(store)
            for at in times
        ]
        if events:
            connection.execute(insert(Event), events)
    measures = Measures(config, PROPERTY_NOW)
    with report_connection(engine) as connection:
        counts = customer_counts(connection, measures, month_starts(PROPERTY_NOW, "UTC"))
    engine.dispose()
    assert counts["retention"] == expected_retention(store, timedelta(days=lost_days))
    for row in counts["retention"]:
        assert row["crr"] is None or 0 <= row["crr"] <= 100
        assert row["start"] - (row["end"] - row["new"] - row["returning"]) >= 0
    created = [c for c, _ in store if c <= PROPERTY_NOW]
    assert counts["retention"][-1]["end"] == len(created) - counts["stages"]["lost"]


# -- lifecycle customers -----------------------------------------------------------------------------

SHOP_NOW = "2026-03-01T12:00:00Z"


@pytest.fixture
def shop(store_project):
    """Value is the `amount` of `order` events. Red: inactive for 30 days, or a complaint.

    customer  orders (amount)                 risk     value
    ann       10, 20.5 (and a purchase)       red      30.5 (a complaint)
    bob       100 (on 2026-01-01)             red      100
    cat       "12" (text), true, none         red      0
    dan       5 on 2026-02-27                 green    5
    eve       -                               green    0    (plan pro, subscribed to offers: no)
    fay       50 on 2026-02-13                yellow   50
    gus       an order after now (999)        red      0    (created 2026-01-02)
    """
    project = store_project
    project.config(value={"event": "order", "property": "amount"})
    project.customers(
        customer("ann", plan="pro"),
        customer("bob"),
        customer("cat"),
        customer("dan", plan="pro", topics={"offers": False}),
        customer("eve", plan="pro", created_at="2026-02-25T00:00:00Z", topics={"offers": False}),
        customer("fay", plan="free"),
        customer("gus", created_at="2026-01-02T00:00:00Z"),
    )

    def order(who: str, at: str, **properties) -> dict:
        return {"customer": who, "event": "order", "at": at, "properties": properties}

    project.events(
        order("ann", "2026-02-28T00:00:00Z", amount=10),
        order("ann", "2026-02-28T01:00:00Z", amount=20.5),
        {"customer": "ann", "event": "complaint", "at": "2026-02-28T02:00:00Z"},
        order("bob", "2026-01-01T00:00:00Z", amount=100),
        order("cat", "2026-01-10T00:00:00Z", amount="12"),
        order("cat", "2026-01-11T00:00:00Z", amount=True),
        order("cat", "2026-01-12T00:00:00Z"),
        order("dan", "2026-02-27T00:00:00Z", amount=5),
        order("fay", "2026-02-13T00:00:00Z", amount=50),
        order("gus", "2026-03-05T00:00:00Z", amount=999),
        {"customer": "ann", "event": "purchase", "at": "2026-02-28T00:00:00Z", "properties": {"total": 1000}},
    )
    return project


ORDER = [
    ("bob", "red", 100.0),
    ("ann", "red", 30.5),
    ("cat", "red", 0.0),
    ("gus", "red", 0.0),
    ("fay", "yellow", 50.0),
    ("dan", "green", 5.0),
    ("eve", "green", 0.0),
]


def listed(project, *options: str) -> list[dict]:
    return json.loads(project.cli("customers", "--now", SHOP_NOW, "--format", "json", *options).stdout)


def test_customers_red_first_by_value_then_the_rest(shop):
    rows = listed(shop)
    assert [(r["id"], r["risk"], r["value"]) for r in rows] == ORDER
    assert rows[1] == {
        "id": "ann",
        "email": "ann@example.com",
        "stage": "current",  # a purchase, whose total is not her value here
        "risk": "red",
        "churn_probability": None,
        "value": 30.5,
        "last_activity": "2026-02-28T02:00:00+00:00",
    }
    assert [(r["id"], r["last_activity"]) for r in rows if r["id"] in ("gus", "eve")] == [
        ("gus", "2026-01-02T00:00:00+00:00"),  # the order after now is not seen
        ("eve", "2026-02-25T00:00:00+00:00"),
    ]


def test_customers_filters_and_limit(shop):
    assert [r["id"] for r in listed(shop, "--risk", "red", "--limit", "2")] == ["bob", "ann"]
    assert [r["id"] for r in listed(shop, "--risk", "green")] == ["dan", "eve"]
    assert [r["id"] for r in listed(shop, "--stage", "lost")] == []
    assert [r["id"] for r in listed(shop, "--where", "plan=pro")] == ["ann", "dan", "eve"]
    assert [r["id"] for r in listed(shop, "--where", "plan=pro", "--topic", "offers")] == ["ann"]
    assert [r["id"] for r in listed(shop, "--limit", "0")] == []
    # on 1 February: eve is not there yet, no order of ann's either; gus is exactly 30 days inactive
    earlier = json.loads(shop.cli("customers", "--now", "2026-02-01T00:00:00Z", "--format", "json").stdout)
    assert [(r["id"], r["risk"]) for r in earlier] == [
        ("bob", "red"),
        ("ann", "red"),
        ("dan", "red"),
        ("fay", "red"),
        ("gus", "red"),
        ("cat", "yellow"),
    ]


def test_customers_as_csv_and_table(shop, monkeypatch):
    text = shop.cli("customers", "--now", SHOP_NOW, "--format", "csv").stdout
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["id", "email", "stage", "risk", "churn_probability", "value", "last_activity"]
    assert rows[1] == ["bob", "bob@example.com", "prospect", "red", "", "100.0", "2026-01-01T00:00:00+00:00"]
    assert [(r[0], float(r[5])) for r in rows[1:]] == [(who, value) for who, _, value in ORDER]
    monkeypatch.setenv("COLUMNS", "200")
    lines = shop.cli("customers", "--now", SHOP_NOW, "--risk", "yellow").stdout.splitlines()
    assert [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines if "fay" in line] == [
        ["fay", "fay@example.com", "prospect", "yellow", "-", "50.0", "2026-02-13T00:00:00+00:00"]
    ]


def test_customer_rows_and_count_page_through_the_same_list(shop):
    config = load_config(shop.root / "config.yaml")
    engine = schema.open_store(config.database_url)
    now = instant(SHOP_NOW)
    pages = [customer_rows(engine, config, now, limit=3, offset=o) for o in (0, 3, 6)]
    assert [r.id for page in pages for r in page] == [who for who, _, _ in ORDER]
    assert count_customers(engine, config, now) == 7
    assert count_customers(engine, config, now, risk="red", attributes={"plan": "pro"}) == 1
    assert [r.id for r in customer_rows(engine, config, now, search="EXAMPLE.com", risk="green")] == ["dan", "eve"]
    assert [r.id for r in customer_rows(engine, config, now, search="an")] == ["ann", "dan"]
    assert customer_rows(engine, config, now, search="%") == []  # a wildcard is a character like any
    row = customer_rows(engine, config, now, risk="yellow")[0]
    assert row.as_json()["last_activity"] == "2026-02-13T00:00:00+00:00" and row.churn_probability is None
    engine.dispose()


def test_the_report_lists_red_customers_by_value_up_to_its_length(shop):
    shop.config(value={"event": "order", "property": "amount"}, report={"red_list": 3})
    red = report(shop, SHOP_NOW)["red_customers"]
    assert [(p["id"], p["value"], p["name"]) for p in red] == [
        ("bob", 100.0, "Bob"),
        ("ann", 30.5, "Ann"),
        ("cat", 0.0, "Cat"),
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--stage", "gone"), "--stage: 'gone' is not one of prospect, current, loyal, lost"),
        (("--risk", "orange"), "--risk: 'orange' is not one of green, yellow, red"),
        (("--topic", "nope"), "no topic named 'nope' (known: news, offers)"),
        (("--where", "plan"), "--where: 'plan' is not attr=value, like plan=pro"),
        (("--format", "xml"), "--format: 'xml' is not one of table, csv, json"),
        (("--now", "soon"), "--now: 'soon' is not an ISO-8601 date or time"),
    ],
)
def test_customers_bad_options(project, options, message):
    result = project.cli("customers", *options, expect=1)
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1
    assert result.stdout == ""


def test_a_declared_data_model_checks_value(project):
    project.config(events={"purchase": {"total": "number", "currency": "string"}}, value={"event": "order"})
    lines = (project.root / "config.yaml").read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if text.startswith("value:"))
    result = project.cli("validate", expect=1)
    assert f"config.yaml:{line}:" in result.stderr
    assert "value: event 'order' is not declared under events: (declared: purchase)" in result.stderr
    project.config(events={"purchase": {"total": "number", "currency": "string"}}, value={"property": "currency"})
    assert (
        "value: purchase.currency is declared string: a value is a sum of numbers"
        in project.cli("validate", expect=1).stderr
    )
    project.config(events={"purchase": {"total": "number"}}, value={"property": "amount"})
    assert (
        "value: property 'amount' of purchase is not declared (declared: total)"
        in project.cli("validate", expect=1).stderr
    )
    project.config(report={"red_list": -1})
    assert "report.red_list: '-1' must be at least 0" in project.cli("validate", expect=1).stderr
