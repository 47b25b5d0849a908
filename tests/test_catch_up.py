"""Evaluation that catches up: each campaign looks back to where its last evaluation reached, so the
triggers of an outage each get their entry once, and a first step that can no longer go out is
recorded `expired`; history older than a campaign's first evaluation still creates nothing. On
PostgreSQL each campaign has its own evaluation lock, so daemons evaluate different campaigns at once."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from conftest import customer

from engine.delivery import ledger

T0 = datetime(2026, 3, 1, 10, 0)
WELCOME = """\
topic: news
trigger: {event: signed_up}
expire_after: 1d
steps: [{template: plain, subject: "Welcome"}]
"""
NUDGE = """\
topic: news
trigger: {inactivity: {event: visit, for: 7d}}
expire_after: 1d
steps: [{template: plain, subject: "We miss you"}]
"""


def at(moment: datetime) -> str:
    return moment.isoformat() + "Z"


def signup(project, name: str, moment: datetime) -> None:
    project.customers(customer(name, created_at=at(moment)))
    project.events({"customer": name, "event": "signed_up", "at": at(moment)})


def statuses(project) -> dict[str, str]:
    return {name: status for _, name, _, status, _ in project.sends()}


def test_the_signups_of_an_outage_each_get_an_entry_and_the_late_ones_expire(store_project):
    project = store_project
    project.campaign("welcome", WELCOME)
    project.tick(at(T0))  # the first evaluation: the watermark is T0
    signup(project, "early", T0 + timedelta(hours=1))  # the daemons are down from here
    signup(project, "middle", T0 + timedelta(days=2))
    signup(project, "late", T0 + timedelta(days=4, hours=-2))
    counts = project.tick(at(T0 + timedelta(days=4)))["welcome"]  # back up
    assert (counts["entered"], counts["expired"], counts["sent"]) == (3, 2, 1)
    assert statuses(project) == {"early": "expired", "middle": "expired", "late": "sent"}
    project.tick(at(T0 + timedelta(days=4, minutes=1)))
    assert len(project.sends()) == 3  # each once
    report = json.loads(project.cli("report", "--format", "json", "--now", at(T0 + timedelta(days=5))).stdout)
    assert (report["campaigns"]["welcome"]["entered"], report["campaigns"]["welcome"]["expired"]) == (3, 2)


def test_history_older_than_the_first_evaluation_creates_nothing(store_project):
    project = store_project
    project.campaign("welcome", WELCOME)
    signup(project, "old", T0 - timedelta(days=30))
    signup(project, "recent", T0 - timedelta(hours=3))  # within expire_after: still welcomed
    project.tick(at(T0))
    assert statuses(project) == {"recent": "sent"}


def test_an_inactivity_crossed_during_an_outage_gets_its_entry(store_project):
    project = store_project
    project.campaign("nudge", NUDGE)
    project.customers(customer("ann", created_at=at(T0 - timedelta(days=30))))
    project.events({"customer": "ann", "event": "visit", "at": at(T0 - timedelta(days=1))})
    project.tick(at(T0))  # ann is active: nothing
    # down from T0; ann crosses 7 days without a visit at T0 + 6d, and the daemons are back at T0 + 10d
    counts = project.tick(at(T0 + timedelta(days=10)))["nudge"]
    assert (counts["entered"], counts["expired"]) == (1, 1)
    assert statuses(project) == {"ann": "expired"}


def test_replaying_an_earlier_now_never_moves_the_watermark_back(store_project):
    project = store_project
    project.campaign("welcome", WELCOME)
    project.tick(at(T0 + timedelta(days=1)))
    project.tick(at(T0))
    (mark,) = project.query("SELECT evaluated_until FROM watermark WHERE campaign = 'welcome'")[0]
    assert str(mark).startswith("2026-03-02 10:00")
    signup(project, "ann", T0 - timedelta(hours=1))
    project.tick(at(T0), "--dry-run")  # a replay sees what a tick at T0 saw
    assert project.sends() == []


def test_each_campaign_has_its_own_evaluation_lock(postgres_project):
    project = postgres_project
    project.campaign("welcome", WELCOME)
    project.campaign("hello", WELCOME.replace("Welcome", "Hello"))
    signup(project, "ann", T0 - timedelta(hours=1))
    with project.db.connect() as other, other.begin():  # another daemon, evaluating `welcome` now
        assert ledger.lock_evaluation(other, "welcome")
        project.tick(at(T0))
        assert {c for c, *_ in project.sends()} == {"hello"}
    project.tick(at(T0 + timedelta(minutes=1)))  # the lock is free: `welcome` catches up
    assert sorted(c for c, *_ in project.sends()) == ["hello", "welcome"]
