"""`lifecycle why`: whether a customer enters a campaign now and what each step would do, rule by rule,
and that it says what `lifecycle tick --dry-run` then does."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict

import pytest
import yaml
from conftest import REPO, customer

from engine.campaigns.language import load_campaigns
from engine.clock import parse_instant
from engine.config.settings import load_config
from engine.delivery.why import explain
from engine.store.schema import open_store

DECIDED = ("send", "skip", "defer", "fail")


def _why(project, campaign: str, cid: str, now: str) -> dict:
    return json.loads(project.cli("why", campaign, "--customer", cid, "--now", now, "--format", "json").stdout)


def _rules(outcome: dict) -> dict[str, tuple[bool, str]]:
    return {r["rule"]: (r["passed"], r["detail"]) for r in outcome["rules"]}


def _demo(project) -> None:
    """The shipped example project (config, campaigns, templates) on the fixture's store."""
    for folder in ("campaigns", "templates"):
        shutil.rmtree(project.root / folder)
        shutil.copytree(REPO / folder, project.root / folder)
    config = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
    config["database"] = project.database
    (project.root / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))


def test_why_agrees_with_a_dry_run_for_the_demo_store(store_project, monkeypatch):
    """For customers of the demo store across every campaign: `why` says a step would be sent,
    skipped (with the reason) or deferred (with the reason) exactly when the dry run plans it."""
    project = store_project
    monkeypatch.setenv("LIFECYCLE_INSECURE_PUBLIC_URL", "1")
    _demo(project)
    project.cli("demo", "--now", "2026-11-02T10:00:00Z")
    project.tick("2026-11-02T10:00:00Z")
    now = "2026-11-03T10:30:00Z"  # a Tuesday: the weekly offer fires
    planned: dict[tuple[str, str], set] = defaultdict(set)
    dry = json.loads(project.cli("tick", "--now", now, "--dry-run", "--json").stdout)
    for plan in dry["planned"]:
        planned[(plan["customer"], plan["campaign"])].add((plan["step"], plan["action"], plan["reason"]))
    assert {a for plans in planned.values() for _, a, _ in plans} >= {"send", "skip", "defer"}
    with_plans = sorted({cid for cid, _ in planned})[:25]
    others = [cid for (cid,) in project.query("SELECT external_id FROM customer ORDER BY id")][:15]
    config = load_config(project.root / "config.yaml")
    campaigns = load_campaigns(config)
    engine = open_store(config.database_url)
    moment = parse_instant(now)
    seen: set[str] = set()
    for cid in sorted(set(with_plans + others)):
        for campaign in campaigns:
            said = explain(engine, config, campaigns, campaign.name, cid, moment)
            decided = {(s.step, s.action, s.reason) for s in said.steps if s.action in DECIDED}
            assert decided == planned.get((cid, campaign.name), set()), (cid, campaign.name, said.as_json())
            seen |= {action for _, action, _ in decided}
    engine.dispose()
    assert seen >= {"send", "skip", "defer"}


OFFER = """\
topic: offers
trigger: {event: signed_up}
audience:
  - {attribute: points, gte: 100}
steps: [{template: plain, subject: "Offer"}]
"""
NEWS = """\
topic: news
priority: 10
trigger: {event: joined_news}
steps: [{template: plain, subject: "News"}]
"""
HELD = """\
topic: offers
trigger: {event: signed_up}
holdout: 99%
steps: [{template: plain, subject: "Held"}]
"""
NOW = "2026-03-02T12:00:00Z"


@pytest.fixture
def shop(store_project):
    """Customers who each meet a different rule, on a store with quiet hours and a cap of one a week."""
    project = store_project
    project.config(quiet_hours={"start": "21:00", "end": "08:00"}, limits={"marketing": {"max": 1, "per": "7d"}})
    project.campaign("offer", OFFER)
    project.campaign("news", NEWS)
    project.campaign("held", HELD)
    project.customers(
        customer("ann", points=120),
        customer("bob", points=50),
        customer("cat", points=150, topics={"offers": False}),
        customer("dan", points=150),
        customer("eve", points=150, timezone="Asia/Tokyo"),  # 21:00 there at NOW
        customer("fay", points=150),
        customer("gil", points=150),  # gets the news in the same tick: it goes first, by priority
    )
    project.events({"customer": "fay", "event": "joined_news", "at": "2026-03-01T12:00:00Z"})
    project.tick("2026-03-01T12:00:00Z")  # fay gets the news: her one marketing email of the week
    project.cli("suppress", "dan@example.com", "--reason", "bounced")
    project.events({"customer": "gil", "event": "joined_news", "at": "2026-03-02T11:00:00Z"})
    project.events(
        *(
            {"customer": c, "event": "signed_up", "at": "2026-03-02T11:00:00Z"}
            for c in ("ann", "bob", "cat", "dan", "eve", "fay", "gil")
        )
    )
    return project


def test_a_customer_who_enters_gets_step_one_now(shop):
    said = _why(shop, "offer", "ann", NOW)
    assert said["enters"] is True and said["already_entered"] is None
    rules = _rules(said)
    assert rules["trigger"] == (True, "signed_up event at 2026-03-02 11:00 UTC")
    assert rules["audience"] == (True, "points is 120 (wanted ≥ 100)")
    assert rules["topic"][0] is True
    [step] = said["steps"]
    assert (step["action"], step["verdict"]) == ("send", "would get it now")
    assert all(r["passed"] for r in step["rules"])


def test_the_audience_shows_the_actual_value_that_keeps_a_customer_out(shop):
    said = _why(shop, "offer", "bob", NOW)
    assert said["enters"] is False
    assert _rules(said)["audience"] == (False, "points is 50 (wanted ≥ 100)")
    assert [s["action"] for s in said["steps"]] == ["none"]


def test_unsubscribed_from_the_topic(shop):
    said = _why(shop, "offer", "cat", NOW)
    assert said["enters"] is False
    assert _rules(said)["topic"] == (False, "not subscribed to offers")


def test_suppressed_address_enters_but_its_step_is_skipped(shop):
    said = _why(shop, "offer", "dan", NOW)
    assert said["enters"] is True
    [step] = said["steps"]
    assert (step["action"], step["reason"]) == ("skip", "suppressed")
    assert _rules(step)["suppression"] == (False, "the address is on the suppression list (bounced)")


def test_quiet_hours_in_the_customers_timezone(shop):
    [step] = _why(shop, "offer", "eve", NOW)["steps"]
    assert (step["action"], step["reason"]) == ("defer", "quiet_hours")
    passed, detail = _rules(step)["quiet hours"]
    assert not passed and "it is 21:00 for them (Asia/Tokyo)" in detail
    assert "waits until 2026-03-02 23:00 UTC" in detail  # 08:00 in Tokyo


def test_frequency_cap(shop):
    [step] = _why(shop, "offer", "fay", NOW)["steps"]
    assert (step["action"], step["reason"]) == ("defer", "frequency_cap")
    assert _rules(step)["frequency cap"] == (False, "at most 1 per 1w: 1 sent: waits until 2026-03-08 12:00 UTC")


def test_the_cap_counts_what_a_campaign_of_higher_priority_sends_in_the_same_tick(shop):
    [step] = _why(shop, "offer", "gil", NOW)["steps"]
    assert (step["action"], step["reason"]) == ("defer", "frequency_cap")
    assert _rules(step)["frequency cap"] == (False, "at most 1 per 1w: 1 sent: waits until 2026-03-09 12:00 UTC")


def test_holdout(shop):
    [step] = _why(shop, "held", "ann", NOW)["steps"]
    assert step["action"] == "held_out"
    assert _rules(step)["holdout"] == (False, "in the 99% holdout")


def test_each_case_agrees_with_the_dry_run_and_then_the_tick(shop):
    """What `why` says before the tick is what the dry run plans and what the tick then records."""
    said = {
        (c, name): [(s["action"], s["reason"]) for s in _why(shop, name, c, NOW)["steps"]]
        for c in ("ann", "bob", "cat", "dan", "eve", "fay", "gil")
        for name in ("offer", "held")
    }
    dry = json.loads(shop.cli("tick", "--now", NOW, "--dry-run", "--json").stdout)["planned"]
    planned = {(p["customer"], p["campaign"]): [(p["action"], p["reason"])] for p in dry if p["campaign"] != "news"}
    assert {k: v for k, v in said.items() if v[0][0] in DECIDED} == planned
    shop.tick(NOW)
    stored = {(c, name): (status, reason) for name, c, _, status, reason in shop.sends() if name in ("offer", "held")}
    assert stored == {
        ("ann", "offer"): ("sent", None),
        ("dan", "offer"): ("skipped", "suppressed"),
        ("eve", "offer"): ("deferred", "quiet_hours"),
        ("fay", "offer"): ("deferred", "frequency_cap"),
        ("gil", "offer"): ("deferred", "frequency_cap"),  # the news went first in the same tick
        **{(c, "held"): ("held_out", "holdout") for c in ("ann", "dan", "eve", "fay", "bob", "gil")},
    }
    after = _why(shop, "offer", "ann", NOW)
    assert after["enters"] is False and after["already_entered"] == "on 2026-03-02 11:00 UTC (completed)"
    assert after["steps"][0]["action"] == "done"


def test_unknown_names_and_bad_times_are_user_errors(shop):
    result = shop.cli("why", "ofer", "--customer", "ann", expect=1)
    assert "no campaign named 'ofer': did you mean 'offer'?" in result.output
    result = shop.cli("why", "offer", "--customer", "an", expect=1)
    assert "no customer with id 'an'" in result.output
    result = shop.cli("why", "offer", "--customer", "ann@example.com", expect=1)
    assert "did you mean 'ann' (ann@example.com)?" in result.output
    result = shop.cli("why", "offer", "--customer", "ann", "--now", "tomorrow", expect=1)
    assert "--now: 'tomorrow' is not an ISO-8601 date" in result.output


def test_why_prints_each_rule_with_its_outcome(shop):
    text = shop.cli("why", "offer", "--customer", "bob", "--now", NOW).stdout
    assert "offer for customer bob at 2026-03-02T12:00:00+00:00: does not enter now" in text
    assert "✗ audience: points is 50 (wanted ≥ 100)" in text
    assert "✓ trigger: signed_up event at 2026-03-02 11:00 UTC" in text
