"""The feedback figures of `lifecycle report` (issue 18): ratings from `feedback_submitted` events, the
team's answers from `alert_acknowledged` events, counted by hand for a small store, in the JSON, the
table and the HTML page, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from conftest import customer
from sqlalchemy import create_engine

from engine.config.settings import Feedback
from engine.insights.html import report_page
from engine.insights.report import RatingScale, Scope, feedback, month_starts, rating_scale

ASK = """\
topic: news
trigger: {event: signed_up}
steps:
  - {template: plain, subject: "How did we do?"}
"""
NOW = "2026-03-21T10:00:00Z"
COMMENT = "[/oops] <script>alert(1)</script>"


def send_of(project, name: str) -> int:
    return project.query(
        "SELECT s.id FROM send s JOIN customer c ON c.id = s.customer_id WHERE c.external_id = :name", name=name
    )[0][0]


def rate(name: str, send_id: int, score: int, at: str, scale: int = 5, **extra) -> dict:
    properties = {"score": score, "scale": scale, "campaign": "ask", "step": 1, "send_id": send_id, **extra}
    return {"customer": name, "event": "feedback_submitted", "at": at, "properties": properties}


def acknowledge(project, name: str, score: int, at: str) -> dict:
    """The acknowledgement of the customer's rating with this score, as the alert's page records it."""
    rating, send_id = project.query(
        """SELECT e.id, s.id FROM event e JOIN customer c ON c.id = e.customer_id
           JOIN send s ON s.customer_id = c.id WHERE c.external_id = :name AND e.name = 'feedback_submitted'
           ORDER BY e.at DESC""",
        name=name,
    )[0]
    properties = {"alert_send_id": 999, "feedback_event_id": rating, "feedback_send_id": send_id, "by": "team@x"}
    assert score  # the rating acknowledged is the latest, whose score the caller states for the reader
    return {"customer": name, "event": "alert_acknowledged", "at": at, "properties": properties}


@pytest.fixture
def rated(store_project):
    """Seven customers sent the `ask` email (gus in March, the others in February), six of whom rate it."""
    project = store_project
    project.campaign("ask", ASK)
    names = ("ann", "bob", "cat", "dan", "eve", "fay")
    project.customers(*(customer(n) for n in (*names, "gus")))
    project.events(*({"customer": n, "event": "signed_up", "at": "2026-02-01T10:00:00Z"} for n in names))
    project.tick("2026-02-01T10:00:00Z")
    project.events({"customer": "gus", "event": "signed_up", "at": "2026-03-01T10:00:00Z"})
    project.tick("2026-03-01T10:00:00Z")
    send = {n: send_of(project, n) for n in (*names, "gus")}
    project.events(
        rate("ann", send["ann"], 1, "2026-02-10T10:00:00Z"),
        rate("ann", send["ann"], 4, "2026-03-02T10:00:00Z"),  # re-rated: this one counts
        rate("ann", send["ann"], 9, "2026-03-03T10:00:00Z", scale=10),  # another scale: not a rating here
        rate("bob", send["bob"], 2, "2026-03-05T08:00:00Z", comment=COMMENT),
        rate("cat", send["cat"], 1, "2026-03-06T08:00:00Z", comment="too slow"),
        rate("dan", send["dan"], 5, "2026-02-20T10:00:00Z"),
        rate("eve", send["eve"], 2, "2026-03-10T10:00:00Z"),
        rate("gus", send["gus"], 3, "2026-03-02T10:00:00Z"),
        rate("fay", send["fay"], 1, "2026-03-22T10:00:00Z"),  # after --now
    )
    project.events(
        acknowledge(project, "bob", 2, "2026-03-05T11:59:00Z"),  # 3h59m
        acknowledge(project, "cat", 1, "2026-03-06T12:01:00Z"),  # 4h01m
        acknowledge(project, "cat", 1, "2026-03-06T12:30:00Z"),  # a second click: the first counts
    )
    return project


def report_json(project, *options: str) -> dict:
    return json.loads(project.cli("report", "--now", NOW, "--format", "json", *options).stdout)["feedback"]


def figures(responses, low, acknowledged, within, share, median, csat, scores) -> dict:
    return {
        "responses": responses,
        "low": low,
        "acknowledged": acknowledged,
        "acknowledged_within_4h": within,
        "acknowledged_within_4h_share": share,
        "median_minutes_to_ack": median,
        "csat": csat,
        "nps": None,
        "scores": dict(zip(("1", "2", "3", "4", "5"), scores, strict=True)),
    }


def test_every_feedback_figure(rated):
    report = report_json(rated)
    # ann 4 (re-rated), bob 2, cat 1, dan 5, eve 2, gus 3: low are bob, cat, eve; bob answered in time
    everything = figures(6, 3, 2, 1, 33.33, 240.0, 33.33, (1, 2, 1, 1, 1))
    assert {k: v for k, v in report.items() if k not in ("months", "campaigns", "low_comments")} == everything
    assert report["campaigns"] == {"ask": {**everything, "response_rate": 85.71}}  # 6 of 7 sends
    months = {row["month"]: row for row in report["months"]}
    assert [row["month"] for row in report["months"]][-3:] == ["2026-01", "2026-02", "2026-03"]
    assert months["2026-02"] == {"month": "2026-02", **figures(1, 0, 0, 0, None, None, 100.0, (0, 0, 0, 0, 1))}
    assert months["2026-03"] == {"month": "2026-03", **figures(5, 3, 2, 1, 33.33, 240.0, 20.0, (1, 2, 1, 1, 0))}
    assert months["2026-01"]["responses"] == 0 and months["2026-01"]["csat"] is None
    assert report["low_comments"] == [
        {
            "customer": "eve",
            "score": 2,
            "comment": None,
            "at": "2026-03-10T10:00:00+00:00",
            "campaign": "ask",
            "acknowledged_at": None,
        },
        {
            "customer": "cat",
            "score": 1,
            "comment": "too slow",
            "at": "2026-03-06T08:00:00+00:00",
            "campaign": "ask",
            "acknowledged_at": "2026-03-06T12:01:00+00:00",
        },
        {
            "customer": "bob",
            "score": 2,
            "comment": COMMENT,
            "at": "2026-03-05T08:00:00+00:00",
            "campaign": "ask",
            "acknowledged_at": "2026-03-05T11:59:00+00:00",
        },
    ]


def test_later_ratings_count_from_their_time(rated):
    """Seen a day later, fay's rating of 1 (a low one, unanswered) counts and is the newest low one."""
    report = json.loads(rated.cli("report", "--now", "2026-03-23T00:00:00Z", "--format", "json").stdout)["feedback"]
    assert (report["responses"], report["low"], report["acknowledged_within_4h_share"]) == (7, 4, 25.0)
    assert report["low_comments"][0]["customer"] == "fay"


def test_since_and_campaign_keep_the_ratings_of_sends_in_scope(rated):
    report = report_json(rated, "--since", "2026-03-01T00:00:00Z")  # only gus entered since
    assert (report["responses"], report["scores"]["3"], report["low"], report["low_comments"]) == (1, 1, 0, [])
    assert report["campaigns"]["ask"]["response_rate"] == 100.0
    assert report_json(rated, "--campaign", "ask")["responses"] == 6


def test_the_table_shows_the_same_figures_and_comments_as_text(rated, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    lines = rated.cli("report", "--now", NOW).stdout.splitlines()
    feedback = lines.index(next(line for line in lines if line.startswith("feedback")))
    rows = {line.split()[0]: line.split()[1:] for line in lines[feedback + 3 :] if line.strip()}
    # rated, csat, low, acked, in 4h %, median minutes, response rate %, scores
    assert rows["all"] == ["6", "33.33", "3", "2", "33.33", "240.0", "1:1", "2:2", "3:1", "4:1", "5:1"]
    assert rows["ask"] == ["6", "33.33", "3", "2", "33.33", "240.0", "85.71", "1:1", "2:2", "3:1", "4:1", "5:1"]
    assert rows["2026-02"] == ["1", "100.0", "0", "0", "–", "–", "5:1"]  # noqa: RUF001 (a dash for "none")
    assert "2026-01" not in rows  # months without ratings are left out
    assert any(line.endswith(COMMENT) and "bob" in line for line in lines)
    assert any(line.endswith("–") and "eve" in line for line in lines)  # noqa: RUF001 (no comment)


def test_the_page_escapes_comments(rated):
    page = rated.cli("report", "--now", NOW, "--format", "html").stdout
    assert "<script>alert(1)" not in page
    assert "[/oops] &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'id="chart-feedback"' in page
    ask = re.search(r'<tr class="campaign" data-campaign="ask">(.*?)</tr>', page.split('id="feedback"')[1], re.S)
    assert ask and re.findall(r'data-figure="(\w+)">([^<]*)<', ask.group(1)) == [
        ("responses", "6"),
        ("csat", "33.33"),
        ("low", "3"),
        ("acknowledged", "2"),
        ("acknowledged_within_4h_share", "33.33"),
        ("median_minutes_to_ack", "240.0"),
        ("response_rate", "85.71"),
    ]
    low = page.split('id="low-ratings"')[1].split("</table>")[0]
    assert "<td>eve</td><td>ask</td><td>2</td><td>–</td><td>–</td>" in low  # noqa: RUF001 (none)
    assert "<td>bob</td><td>ask</td><td>2</td><td>2026-03-05T11:59</td>" in low


def test_nps_on_a_scale_of_10(store_project):
    """Promoters (9-10) less detractors (0-6), in points of the responses; low is 6 or less."""
    project = store_project
    project.campaign("ask", ASK)
    names = ("ann", "bob", "cat", "dan")
    project.customers(*(customer(n) for n in names))
    project.events(*({"customer": n, "event": "signed_up", "at": "2026-03-01T10:00:00Z"} for n in names))
    project.tick("2026-03-01T10:00:00Z")
    project.events(
        *(
            rate(n, send_of(project, n), score, "2026-03-02T10:00:00Z", scale=10)
            for n, score in zip(names, (10, 9, 7, 0), strict=True)
        ),
        rate("dan", send_of(project, "dan"), 4, "2026-03-03T10:00:00Z", scale=5),  # another scale
    )
    now = datetime(2026, 3, 21, 10, tzinfo=UTC)
    engine = create_engine(project.url)
    with engine.connect() as connection:
        report = feedback(connection, Scope(now), month_starts(now, "UTC"), "UTC", RatingScale(10, 6))
    engine.dispose()
    assert (report["responses"], report["low"], report["nps"], report["csat"]) == (4, 1, 25.0, None)
    assert report["scores"] == {**{str(s): 0 for s in range(11)}, "0": 1, "7": 1, "9": 1, "10": 1}


def test_the_scale_and_threshold_come_from_the_config():
    assert rating_scale(SimpleNamespace(feedback=Feedback())) == RatingScale(5, 2)
    assert rating_scale(SimpleNamespace(feedback=Feedback(scale=10))) == RatingScale(10, 6)
    assert rating_scale(SimpleNamespace(feedback=Feedback(scale=5, low=3))) == RatingScale(5, 3)


def test_the_page_shows_a_report_without_ratings(project):
    report = json.loads(project.cli("report", "--now", NOW, "--format", "json").stdout)
    assert report["feedback"]["responses"] == 0 and report["feedback"]["campaigns"] == {}
    assert "No ratings yet" in report_page(report)
