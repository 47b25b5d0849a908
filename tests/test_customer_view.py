"""`lifecycle customer ID`: one customer's profile, attributes, stage, risk, topics and one timeline of
their events, entries and sends, newest first; and finding a customer from a search box."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from conftest import customer

from engine.clock import parse_instant
from engine.config.settings import load_config
from engine.customers import search
from engine.delivery.events import EventType, ProviderEvent, record_deliveries
from engine.insights.timeline import customer_view, find_customers
from engine.store.schema import open_store

WELCOME = """\
topic: news
trigger: {event: signed_up}
exit: [{event: purchase}]
goal: {event: purchase, within: 7d}
steps:
  - {template: plain, subject: "Welcome"}
  - {template: plain, subject: "Tips", delay: 2d}
"""
NOW = "2026-03-03T12:00:00Z"


def _ann(project) -> None:
    project.campaign("welcome", WELCOME)
    project.customers(
        customer("ann", last_name="Lee", points=120, plan="pro", topics={"offers": False}),
        customer("bob", first_name="Robert", last_name="Leeds"),
    )
    project.events(
        {"customer": "ann", "event": "signed_up", "at": "2026-03-01T10:00:00Z", "properties": {"source": "shop"}}
    )
    project.tick("2026-03-01T10:00:00Z")
    [(send_id,)] = project.query("SELECT id FROM send WHERE status = 'sent'")
    with project.db.begin() as connection:  # what a provider's webhook records
        record_deliveries(
            connection,
            [
                ProviderEvent(EventType.DELIVERED, "delivered", send_id, "d1", datetime(2026, 3, 1, 10, 1, tzinfo=UTC)),
                ProviderEvent(EventType.OPENED, "open", send_id, "o1", datetime(2026, 3, 1, 11, 0, tzinfo=UTC)),
            ],
        )
    project.events({"customer": "ann", "event": "purchase", "at": "2026-03-02T09:00:00Z", "properties": {"total": 30}})
    project.tick("2026-03-03T12:00:00Z")  # step 2 is skipped: she bought (an exit)


def test_timeline_holds_events_entries_and_sends_newest_first(store_project):
    project = store_project
    _ann(project)
    view = json.loads(project.cli("customer", "ann", "--now", NOW, "--format", "json").stdout)
    assert view["profile"]["id"] == "ann" and view["profile"]["email"] == "ann@example.com"
    assert view["attributes"] == {"points": 120, "plan": "pro"}
    assert (view["stage"], view["risk"]) == ("current", "green")
    assert view["topics"] == {"news": True, "offers": False}
    assert view["suppressed"] is None and view["left_out"] == 0
    titles = [(item["kind"], item["title"]) for item in view["timeline"]]
    assert titles == [
        ("send", "welcome step 2: skipped (exit)"),
        ("event", "purchase"),
        ("send", "welcome step 1: sent"),
        ("entry", "entered welcome"),
        ("event", "signed_up"),
    ]
    skipped, purchase, sent, entry, signup = view["timeline"]
    assert sent["detail"]["outcomes"] == {
        "delivered": "2026-03-01T10:01:00+00:00",
        "opened": "2026-03-01T11:00:00+00:00",
        "converted": "2026-03-02T09:00:00+00:00",  # the goal, a purchase within 7d of the send
    }
    assert sent["at"] == "2026-03-01T10:00:00+00:00" and sent["detail"]["template"] == "plain"
    assert skipped["detail"]["reason"] == "exit" and skipped["at"] == "2026-03-03T12:00:00+00:00"
    assert entry["detail"] == {"campaign": "welcome", "status": "exited", "held_out": False, "trigger": "signed_up"}
    assert signup["detail"] == {"name": "signed_up", "properties": {"source": "shop"}}
    assert purchase["detail"]["properties"] == {"total": 30}


def test_the_view_is_as_of_now_and_limited(store_project):
    project = store_project
    _ann(project)
    config = load_config(project.root / "config.yaml")
    engine = open_store(config.database_url)
    before = customer_view(engine, config, "ann", parse_instant("2026-03-01T12:00:00Z"))
    assert before is not None
    assert "purchase" not in [i.title for i in before.timeline]  # not done yet then
    assert before.stage == "prospect"
    short = customer_view(engine, config, "ann", parse_instant(NOW), limit=2)
    assert short is not None
    assert [i.title for i in short.timeline] == ["welcome step 2: skipped (exit)", "purchase"]
    assert short.left_out == 3
    assert customer_view(engine, config, "nobody", parse_instant(NOW)) is None
    engine.dispose()


def test_the_table_and_errors(store_project):
    project = store_project
    _ann(project)
    project.cli("suppress", "ann@example.com", "--reason", "complaint")
    text = project.cli("customer", "ann", "--now", NOW).stdout
    for shown in ("ann@example.com", "current", "complaint", "welcome step 1:", "opened", "2026-03-01 11:00"):
        assert shown in text
    assert (
        "no customer with id 'ann@example.com': did you mean 'ann'"
        in project.cli("customer", "ann@example.com", expect=1).output
    )
    assert (
        "--format: 'xml' is not one of table, json"
        in project.cli("customer", "ann", "--format", "xml", expect=1).output
    )
    assert "--now:" in project.cli("customer", "ann", "--now", "soon", expect=1).output


def test_a_name_is_found_by_its_start_among_every_customer(store_project, monkeypatch):
    """Text inside a name is looked for among the newest customers only; the start of a first or last
    name among all of them, through the indexes on the names (migration 0009)."""
    monkeypatch.setattr(search, "SCANNED", 3)
    project = store_project
    project.customers(customer("old", first_name="Zelda", last_name="Quist"))
    project.customers(*(customer(f"new{n}", first_name="Amy", last_name="Quince") for n in range(5)))
    engine = open_store(load_config(project.root / "config.yaml").database_url)
    ids = lambda query: [m.id for m in find_customers(engine, query)]  # noqa: E731
    assert ids("zel") == ["old"] and ids("ZELDA") == ["old"]
    assert ids("zelda qu") == ["old"]
    assert ids("amy qu") == ["new4", "new3", "new2", "new0", "new1"]  # the newest, then by the start of the name
    assert ids("quis") == ["old"]
    assert ids("elda") == []  # inside her name, and she is not among the newest 3
    assert ids("uin") == ["new4", "new3", "new2"]  # inside the names of the newest 3, newest first
    engine.dispose()


def test_find_customers_by_id_email_or_name(store_project):
    project = store_project
    _ann(project)
    project.customers(*(customer(f"c{n:03d}", first_name="Zed") for n in range(30)))
    config = load_config(project.root / "config.yaml")
    engine = open_store(config.database_url)
    ids = lambda query, limit=20: [m.id for m in find_customers(engine, query, limit)]  # noqa: E731
    assert ids("ann") == ["ann"]
    assert ids("ANN@EXAMPLE") == ["ann"]  # an email's start, any case
    assert ids("lee") == ["bob", "ann"]  # inside names, newest first
    assert ids("robert leeds") == ["bob"]
    assert ids("c01") == [f"c{n:03d}" for n in range(10, 20)]
    assert len(ids("zed", 5)) == 5
    assert ids("") == [] and ids("%") == []
    [match] = find_customers(engine, "bob")
    assert match.as_json() == {"id": "bob", "email": "bob@example.com", "name": "Robert Leeds"}
    engine.dispose()
