"""Rules that change who gets what: exit, reentry, windows, caps, expiry, holdout, variants,
consent, and the ledger's promise that nothing is sent twice."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

from conftest import customer

WELCOME = """\
topic: news
trigger: {event: signed_up}
steps:
  - {template: plain, subject: "Welcome"}
  - {template: plain, subject: "Tips", delay: 2d}
"""


def signups(project, *names, at="2026-03-01T10:00:00Z"):
    project.customers(*(customer(n) for n in names))
    project.events(*({"customer": n, "event": "signed_up", "at": at} for n in names))


def test_exit_event_ends_the_sequence(store_project):
    project = store_project
    project.campaign("welcome", WELCOME + "exit: [{event: purchase}]\n")
    signups(project, "ann", "bob")
    project.tick("2026-03-01T10:00:00Z")
    project.events({"customer": "ann", "event": "purchase", "at": "2026-03-02T10:00:00Z"})
    project.tick("2026-03-03T10:00:00Z")
    assert project.sent() == [("ann", 1), ("bob", 1), ("bob", 2)]
    assert ("welcome", "ann", 2, "skipped", "exit") in project.sends()


def test_reentry_never_always_and_window(store_project):
    project = store_project
    for name, reentry in (("never", "never"), ("always", "always"), ("window", "10d")):
        project.campaign(
            name,
            f"""
            type: transactional
            trigger: {{event: purchase}}
            steps: [{{template: plain, subject: "x"}}]
            reentry: {reentry}
            """,
        )
    project.customers(customer("ann"))
    days = ["2026-03-01", "2026-03-05", "2026-03-12", "2026-03-13"]
    for day in days:
        project.events({"customer": "ann", "event": "purchase", "at": f"{day}T10:00:00Z"})
        project.tick(f"{day}T10:00:00Z")
    assert len(project.sent("never")) == 1
    assert len(project.sent("always")) == 4
    assert len(project.sent("window")) == 2  # 03-01 and 03-12; 03-05 and 03-13 fall within 10d


def test_reentry_applies_within_one_tick(store_project):
    project = store_project
    project.campaign(
        "window",
        """
        type: transactional
        trigger: {event: purchase}
        steps: [{template: plain, subject: "x"}]
        reentry: 10d
        expire_after: 30d
        """,
    )
    project.customers(customer("ann"))
    project.events(
        *(
            {"customer": "ann", "event": "purchase", "at": f"{d}T10:00:00Z"}
            for d in ("2026-03-01", "2026-03-05", "2026-03-12")
        )
    )
    assert project.tick("2026-03-13T00:00:00Z")["window"]["entered"] == 2


def test_send_window_defers_to_the_recipients_next_start(store_project):
    project = store_project
    project.campaign("welcome", WELCOME + 'send_window: {start: "09:00", end: "17:00"}\n')
    project.customers(customer("tokyo", timezone="Asia/Tokyo"), customer("london", timezone="Europe/London"))
    project.events(*({"customer": n, "event": "signed_up", "at": "2026-03-01T10:00:00Z"} for n in ("tokyo", "london")))
    # 10:00Z is 19:00 in Tokyo (outside) and 10:00 in London (inside)
    counts = project.tick("2026-03-01T10:00:00Z")["welcome"]
    assert counts["deferred:send_window"] == 1
    assert project.sent() == [("london", 1)]
    project.tick("2026-03-01T23:59:00Z")  # 08:59 in Tokyo
    assert project.sent() == [("london", 1)]
    project.tick("2026-03-02T00:00:00Z")  # 09:00 in Tokyo
    assert project.sent() == [("london", 1), ("tokyo", 1)]


def test_quiet_hours_hold_marketing_but_not_transactional(store_project):
    project = store_project
    project.config(quiet_hours={"start": "21:00", "end": "08:00"})
    project.campaign("welcome", WELCOME)
    project.campaign(
        "receipt",
        """
        type: transactional
        trigger: {event: signed_up}
        steps: [{template: plain, subject: "Receipt"}]
        """,
    )
    signups(project, "ann", at="2026-03-01T22:00:00Z")
    project.tick("2026-03-01T22:00:00Z")
    assert project.sent() == [("ann", 1)] and project.sent("receipt") == [("ann", 1)]
    project.tick("2026-03-02T08:00:00Z")
    assert project.sent("welcome") == [("ann", 1)]


def test_frequency_cap_lets_higher_priority_go_first_and_the_rest_wait(store_project):
    project = store_project
    project.config(limits={"marketing": {"max": 2, "per": "7d"}})
    for name, priority in (("low", 1), ("mid", 50), ("high", 90)):
        project.campaign(
            name,
            f"""
            topic: news
            priority: {priority}
            trigger: {{event: signed_up}}
            steps: [{{template: plain, subject: "{name}"}}]
            expire_after: 10d
            """,
        )
    signups(project, "ann")
    counts = project.tick("2026-03-01T10:00:00Z")
    assert sorted(r[0] for r in project.sends() if r[3] == "sent") == ["high", "mid"]
    assert counts["low"]["deferred:frequency_cap"] == 1
    project.tick("2026-03-05T10:00:00Z")
    assert project.sent("low") == []
    project.tick("2026-03-08T10:00:00Z")  # the first two sends leave the 7-day window
    assert project.sent("low") == [("ann", 1)]


def test_transactional_ignores_the_cap_and_topics(store_project):
    project = store_project
    project.config(limits={"marketing": {"max": 1, "per": "7d"}})
    project.campaign("news", WELCOME)
    project.campaign(
        "receipt",
        """
        type: transactional
        trigger: {event: signed_up}
        steps: [{template: plain, subject: "Receipt"}]
        """,
    )
    project.customers(customer("ann", topics={"news": True}), customer("bob", topics={"news": False}))
    project.events(*({"customer": n, "event": "signed_up", "at": "2026-03-01T10:00:00Z"} for n in ("ann", "bob")))
    project.tick("2026-03-01T10:00:00Z")
    assert sorted(project.sent("receipt")) == [("ann", 1), ("bob", 1)]
    assert project.sent("news") == [("ann", 1)]


def test_history_never_mails_and_overdue_steps_expire(store_project):
    project = store_project
    project.campaign(
        "thanks",
        """
        type: transactional
        trigger: {event: purchase}
        steps:
          - {template: plain, subject: "Thanks"}
          - {template: plain, subject: "Tips", delay: 1d}
        expire_after: 2d
        """,
    )
    project.customers(customer("ann"), customer("bob"))
    project.events(
        {"customer": "ann", "event": "purchase", "at": "2025-03-01T10:00:00Z"},
        {"customer": "bob", "event": "purchase", "at": "2026-02-28T11:00:00Z"},
    )
    # last year's purchase creates no entry at all; bob's is 23 hours old and still goes out
    assert project.tick("2026-03-01T10:00:00Z")["thanks"] == {"entered": 1, "sent": 1}
    # the engine is down until step 2 (due 2026-03-02T10:00) is more than 2 days late
    assert project.tick("2026-03-04T10:01:00Z")["thanks"] == {"expired": 1}
    assert project.sends() == [("thanks", "bob", 1, "sent", None), ("thanks", "bob", 2, "expired", "expired")]
    assert project.query("SELECT status FROM entry") == [("expired",)]


def test_holdout_is_deterministic_and_recorded(store_project):
    project = store_project
    project.campaign("offer", WELCOME + "holdout: 30%\ngoal: {event: purchase, within: 7d}\n")
    names = [f"c{i:03d}" for i in range(200)]
    signups(project, *names)
    project.tick("2026-03-01T10:00:00Z")
    held = {r[1] for r in project.sends() if r[3] == "held_out"}
    assert 40 <= len(held) <= 80  # about 30% of 200
    assert len(project.sent()) == 200 - len(held)
    # the same customers are held out in a fresh store: the pick depends on campaign and customer only
    project.query("DELETE FROM send"), project.query("DELETE FROM entry")
    project.tick("2026-03-01T10:00:00Z")
    assert {r[1] for r in project.sends() if r[3] == "held_out"} == held


def test_variants_split_by_weight_and_stick_per_customer(store_project):
    project = store_project
    project.template("a", "Variant A")
    project.template("b", "Variant B")
    project.campaign(
        "ab",
        """
        topic: news
        trigger: {event: signed_up}
        steps:
          - variants:
              - {template: a, subject: "A", weight: 3}
              - {template: b, subject: "B", weight: 1}
        """,
    )
    names = [f"c{i:03d}" for i in range(200)]
    signups(project, *names)
    project.tick("2026-03-01T10:00:00Z")
    picks = dict(project.query("SELECT c.external_id, s.variant FROM send s JOIN customer c ON c.id = s.customer_id"))
    share_a = Counter(picks.values())["a"] / len(picks)
    assert 0.65 <= share_a <= 0.85
    subjects = {m["To"].addresses[0].username: m["Subject"] for m in project.outbox()}
    assert all(subjects[name] == picks[name].upper() for name in names)


def test_audience_conditions_run_in_the_database(store_project):
    project = store_project
    project.config(risk={"red": {"inactive_for": "30d", "or_event": "complaint"}})
    project.campaign(
        "vip",
        """
        topic: offers
        trigger: {at: 2026-06-01T09:00:00Z}
        audience:
          - {attribute: plan, in: [pro, business]}
          - {event: purchase, at_least: 2, within: 365d, where: {total: {gte: 50}}}
          - not: {risk: red}
          - any: [{attribute: points, gte: 100}, {stage: loyal}]
        steps: [{template: plain, subject: "VIP"}]
        """,
    )
    project.customers(
        customer("ann", plan="pro", points=150),
        customer("bob", plan="free", points=500),
        customer("cat", plan="business", points=10),
        customer("dan", plan="pro", points=300),
        customer("eve", plan="pro", points=200),
    )
    big = [
        {"customer": n, "event": "purchase", "at": f"2026-05-{d}T10:00:00Z", "properties": {"total": 80}}
        for n in ("ann", "bob", "cat", "dan", "eve")
        for d in ("10", "20")
    ]
    project.events(
        *big,
        {"customer": "dan", "event": "complaint", "at": "2026-05-25T10:00:00Z"},
        {"customer": "eve", "event": "purchase", "at": "2026-05-21T10:00:00Z", "properties": {"total": 10}},
    )
    project.tick("2026-06-01T09:00:00Z")
    # bob: free plan; cat: neither 100 points nor loyal; dan: a complaint makes him red
    assert sorted(project.sent()) == [("ann", 1), ("eve", 1)]


def test_unsubscribed_suppressed_and_unconfirmed_get_nothing_with_a_reason(store_project):
    project = store_project
    project.config(double_opt_in=True)
    project.campaign("welcome", WELCOME)
    project.customers(
        customer("ok", confirmed_at="2026-01-01T00:00:00Z"),
        customer("unconfirmed"),
        customer("gone", confirmed_at="2026-01-01T00:00:00Z"),
        customer("later", confirmed_at="2026-01-01T00:00:00Z"),
    )
    project.cli("suppress", "gone@example.com", "--reason", "bounce")
    project.events(
        *(
            {"customer": n, "event": "signed_up", "at": "2026-03-01T10:00:00Z"}
            for n in ("ok", "unconfirmed", "gone", "later")
        )
    )
    project.tick("2026-03-01T10:00:00Z")
    # "later" unsubscribes from the topic after entering: step 2 records why it was not sent
    project.customers(customer("later", confirmed_at="2026-01-01T00:00:00Z", topics={"news": False}))
    project.tick("2026-03-03T10:00:00Z")
    reasons = {(r[1], r[2]): (r[3], r[4]) for r in project.sends()}
    assert reasons[("ok", 2)] == ("sent", None)
    assert reasons[("unconfirmed", 1)] == ("skipped", "not_confirmed")
    assert reasons[("gone", 1)] == ("skipped", "suppressed")
    assert reasons[("later", 1)] == ("sent", None)
    assert reasons[("later", 2)] == ("skipped", "unsubscribed")


def test_a_second_identical_tick_sends_nothing(store_project):
    project = store_project
    project.campaign("welcome", WELCOME)
    signups(project, "ann", "bob")
    first = project.tick("2026-03-01T10:00:00Z")
    second = project.tick("2026-03-01T10:00:00Z")
    assert first["welcome"] == {"entered": 2, "sent": 2}
    assert second["welcome"] == {}
    assert len(project.outbox()) == 2


def test_dry_run_changes_nothing(store_project):
    project = store_project
    project.campaign("welcome", WELCOME)
    signups(project, "ann")
    result = project.cli("tick", "--now", "2026-03-01T10:00:00Z", "--dry-run", "--json")
    plan = json.loads(result.stdout)["planned"]
    assert [(p["customer"], p["action"]) for p in plan] == [("ann", "send")]
    assert project.sends() == [] and project.outbox() == []


def test_two_ticks_at_once_send_each_message_once(store_project):
    project = store_project
    project.campaign("welcome", WELCOME)
    signups(project, *[f"c{i:03d}" for i in range(300)])
    config = str(project.root / "config.yaml")
    command = [sys.executable, "-m", "engine", "tick", "--config", config, "--now", "2026-03-01T10:00:00Z", "--json"]
    workers = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**__import__("os").environ})
        for _ in range(3)
    ]
    outputs = [w.communicate(timeout=120) for w in workers]
    assert all(w.returncode == 0 for w in workers), [o[1][-500:] for o in outputs]
    sent = [json.loads(o[0])["campaigns"]["welcome"].get("sent", 0) for o in outputs]
    assert sum(sent) == 300
    assert len(project.outbox()) == 300
    assert len({m["To"] for m in project.outbox()}) == 300


def test_reimporting_events_with_ids_stores_nothing_twice_and_says_so(store_project):
    project = store_project
    project.customers(customer("ann"))
    events = project.jsonl(
        "events.jsonl",
        [{"id": f"e{i}", "customer": "ann", "event": "login", "at": "2026-03-01T10:00:00Z"} for i in range(3)],
    )
    assert "3 stored" in project.cli("import", "events", str(events)).stdout
    assert "0 stored, 3 already stored" in project.cli("import", "events", str(events)).stdout
    assert project.query("SELECT count(*) FROM event") == [(3,)]
