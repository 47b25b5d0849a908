"""One bad record or template never stops the rest: a send that cannot be composed fails alone with
its reason, a campaign whose templates broke after loading is reported and skipped, a sender that
raises leaves no send `sending`, a value the store cannot read back is never written, and a row an
older version wrote fails only its own customer's sends. The daemon tells a store that is down
(back off) from a bug or bad data (count it, carry on)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest
from conftest import customer
from sqlalchemy import insert
from sqlalchemy.exc import DBAPIError, OperationalError, StatementError

from engine import metrics
from engine.campaigns.language import load_campaigns
from engine.config.settings import load_config
from engine.delivery import couriers as couriers_module
from engine.delivery import daemon as daemon_module
from engine.delivery.daemon import Daemon
from engine.delivery.tick import tick
from engine.senders import Sender, SendResult, load_sender
from engine.store import schema
from engine.store.dialect import unavailable
from engine.store.tables import Customer, table_of

NOW = "2026-03-01T10:05:00Z"
RECEIPT = """\
type: transactional
priority: 90
trigger: {event: purchase}
steps:
  - template: receipt
    subject: "Thanks {{ customer.first_name }}"
"""
WELCOME = """\
type: transactional
priority: 10
trigger: {event: signup}
steps:
  - template: plain
    subject: Welcome
"""


def _shop(project, *totals) -> None:
    """A receipt (priority 90) showing the order total, a welcome (priority 10), and a buyer per total."""
    project.template("receipt", "Your order: {{ event.properties.total|money }}")
    project.campaign("receipt", RECEIPT)
    project.campaign("welcome", WELCOME)
    names = [f"c{n}" for n in range(len(totals))]
    project.customers(*(customer(name) for name in names))
    project.events(
        *(
            {"customer": name, "event": event, "at": "2026-03-01T10:00:00Z", "properties": props}
            for name, total in zip(names, totals, strict=True)
            for event, props in (("purchase", {"total": total}), ("signup", {}))
        )
    )


def _run(project, sender: Sender | None = None, dry_run: bool = False):
    config = load_config(project.root / "config.yaml")
    campaigns = load_campaigns(config)
    with sender or load_sender(config) as chosen:
        return tick(config, campaigns, schema.open_store(project.url), chosen, _now(), dry_run=dry_run)


def _now() -> datetime:
    return datetime(2026, 3, 1, 10, 5, tzinfo=UTC)


def _statuses(project, campaign: str) -> dict[str, tuple[str, str | None]]:
    return {r[1]: (r[3], r[4]) for r in project.sends(campaign)}


def test_a_filter_failing_on_one_customers_data_fails_that_send_alone(project):
    _shop(project, 42, "abc", 10)
    counts = project.tick(NOW)
    receipt = _statuses(project, "receipt")
    assert receipt["c0"][0] == receipt["c2"][0] == "sent"
    status, reason = receipt["c1"]
    assert status == "failed" and reason  # the filter's own words (engine/mail/rendering.py)
    assert counts["receipt"] == {"entered": 3, "sent": 2, "failed": 1}
    assert sorted(project.sent("welcome")) == [("c0", 1), ("c1", 1), ("c2", 1)]  # the lower priority went on


@pytest.mark.parametrize("error", [ValueError("bad value"), TypeError("bad type"), RecursionError("too deep")])
def test_any_exception_while_composing_fails_that_send_with_its_text(project, monkeypatch, error):
    _shop(project, 1, 2)
    real = couriers_module.compose

    def compose(config, renderer, links, campaign, step, variant, customer, *args, **kwargs):
        if campaign.name == "receipt" and customer["external_id"] == "c1":
            raise error
        return real(config, renderer, links, campaign, step, variant, customer, *args, **kwargs)

    monkeypatch.setattr(couriers_module, "compose", compose)
    _run(project)
    receipt = _statuses(project, "receipt")
    assert receipt["c0"] == ("sent", None)
    assert receipt["c1"] == ("failed", f"{type(error).__name__}: {error}")
    assert len(project.sent("welcome")) == 2


def test_a_dry_run_plans_the_failure_with_its_reason(project):
    _shop(project, "abc")
    report = _run(project, dry_run=True)
    plans = {(p["campaign"], p["action"]) for p in report.planned}
    assert ("receipt", "fail") in plans and ("welcome", "send") in plans
    assert next(p["reason"] for p in report.planned if p["action"] == "fail")
    assert project.sends() == []  # nothing changed


def test_a_campaign_whose_template_broke_after_loading_is_reported_and_skipped(project):
    _shop(project, 5)
    config = load_config(project.root / "config.yaml")
    campaigns = load_campaigns(config)  # loaded (and checked) before the file is broken, as a daemon does
    (project.root / "templates" / "emails" / "receipt.mjml").write_text("{% if %}<mjml>")
    with load_sender(config) as sender:
        report = tick(config, campaigns, schema.open_store(project.url), sender, _now())
    assert report.counts["receipt"]["templates_broken"] == 1
    assert "receipt.mjml" in report.problems["receipt"]
    assert report.as_dict()["problems"]["receipt"] == report.problems["receipt"]
    assert [r[3] for r in project.sends("receipt")] == ["scheduled"]  # waits for the fix, not failed
    assert project.sent("welcome") == [("c0", 1)]


class Raising(Sender):
    """A backend with a bug: it raises instead of returning results."""

    def deliver(self, emails):
        raise RuntimeError("backend bug")


class Forgetful(Sender):
    """A backend that returns a result for the first message only (and one for a send it never had)."""

    def deliver(self, emails):
        return [SendResult(emails[0].send_id, ok=True, message_id="m"), SendResult(999_999, ok=True)]


def test_a_sender_that_raises_leaves_no_send_sending(project):
    _shop(project, 1, 2)
    config = load_config(project.root / "config.yaml")
    _run(project, Raising(config))
    statuses = {(r[0], r[3]) for r in project.sends()}
    assert statuses == {("receipt", "unknown"), ("welcome", "unknown")}  # they may have gone out
    assert all("sender" in r[4] for r in project.sends())


def test_a_send_the_sender_gave_no_result_for_is_unknown(project):
    _shop(project, 1, 2)
    config = load_config(project.root / "config.yaml")
    _run(project, Forgetful(config))
    assert sorted(r[3] for r in project.sends("receipt")) == ["sent", "unknown"]
    assert not [r for r in project.sends() if r[3] == "sending"]


def test_the_store_refuses_to_write_json_it_cannot_read_back(store_project):
    engine = schema.open_store(store_project.url)
    row = {"external_id": "x", "email": "x@example.com", "created_at": _now(), "attributes": {"score": math.nan}}
    refused = pytest.raises((StatementError, ValueError), match="Out of range float values are not JSON compliant")
    with refused, engine.begin() as connection:
        connection.execute(insert(table_of(Customer)), [row])
    assert store_project.query("SELECT count(*) FROM customer") == [(0,)]


VIP = """\
type: transactional
trigger: {event: purchase}
audience:
  - attribute: score
    gte: 1
steps:
  - template: plain
    subject: Hello
"""


def test_a_row_an_older_version_wrote_with_nan_fails_only_its_customers_sends(project):
    project.campaign("vip", VIP)
    project.campaign("welcome", WELCOME)
    project.customers(customer("ann", score=5), customer("bob", score=7))
    project.events(
        *(
            {"customer": c, "event": e, "at": "2026-03-01T10:00:00Z"}
            for c in ("ann", "bob")
            for e in ("purchase", "signup")
        )
    )
    project.tick("2026-03-01T10:01:00Z", "--dry-run")  # the store is fine so far
    # what Python's json module wrote before the store refused NaN; SQLite's JSON functions call it malformed
    project.query("UPDATE customer SET attributes = '{\"score\": NaN}' WHERE external_id = 'bob'")
    project.query(
        "INSERT INTO event (customer_id, name, at, properties) SELECT id, 'purchase', at, '{\"x\": NaN}' "
        "FROM customer JOIN (SELECT '2026-03-01 10:02:00.000000' AS at) WHERE external_id = 'ann'"
    )
    counts = project.tick(NOW)
    assert [(r[1], r[3]) for r in project.sends("vip")] == [("ann", "sent"), ("ann", "sent")]  # both purchases
    assert counts["vip"] == {"entered": 2, "sent": 2}  # bob's unreadable score matches no audience
    welcome = _statuses(project, "welcome")
    assert welcome["ann"] == ("sent", None)
    assert welcome["bob"][0] == "failed" and "cannot read" in welcome["bob"][1]


def test_the_daemon_carries_on_after_a_bug_and_backs_off_only_when_the_store_is_down(project, monkeypatch):
    config = load_config(project.root / "config.yaml")
    engine = schema.open_store(project.url)
    daemon = Daemon(config, [], engine, load_sender(config), clock=_now)

    def bug(*args, **kwargs):
        raise ValueError("Expecting value: line 1 column 12")

    monkeypatch.setattr(daemon_module, "tick", bug)
    errors = metrics.TICKS.labels("error")._value.get()
    assert daemon.tick_once() is None
    assert daemon.failures == 0  # no backoff: the next tick runs on time
    assert metrics.TICKS.labels("error")._value.get() == errors + 1

    backed_off = []
    monkeypatch.setattr(daemon, "_database_down", backed_off.append)

    def down(*args, **kwargs):
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(daemon_module, "tick", down)
    daemon.tick_once()
    assert len(backed_off) == 1


@pytest.mark.parametrize(
    "error, down",
    [
        (OperationalError("s", {}, Exception("could not connect to server")), True),
        (OperationalError("s", {}, Exception("database is locked")), True),
        (OperationalError("s", {}, Exception("malformed JSON")), False),
        (DBAPIError("s", {}, Exception("invalid input syntax"), connection_invalidated=True), True),
        (DBAPIError("s", {}, Exception("division by zero")), False),
        (ValueError("x"), False),
        (json.JSONDecodeError("Expecting value", "", 0), False),
    ],
)
def test_unavailable_means_the_store_cannot_be_used_now(error, down):
    assert unavailable(error) is down
