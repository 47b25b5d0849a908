"""`lifecycle pause` / `lifecycle resume`: the kill switch that holds a campaign's sending on every tick and
daemon from their next batch (engine/delivery/pauses.py). Held sends stay scheduled and go out after the
resume; evaluation goes on meanwhile. On SQLite, and on PostgreSQL too when LIFECYCLE_TEST_POSTGRES is set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import customer
from starlette.testclient import TestClient
from test_daemon import daemon, inbox, prepared, settled, statuses, stop, wait_for  # noqa: F401 (a fixture)
from test_report_browser import ARTIFACTS, CHROMIUM

from engine.campaigns.language import load_campaigns
from engine.config.settings import load_config
from engine.delivery import pauses
from engine.delivery.tick import Tick
from engine.senders import load_sender
from engine.store.schema import open_store
from engine.web import create_app

NEWS = """\
topic: news
trigger: {event: signed_up}
steps: [{template: plain, subject: "News"}]
"""
DRIP = """\
topic: news
trigger: {event: signed_up}
expire_after: 1d
steps:
  - {template: plain, subject: "One"}
  - {template: plain, delay: 2d, subject: "Two"}
"""
T0 = "2026-03-01T10:00:00Z"


def signups(project, *names: str, at: str = T0) -> None:
    project.customers(*(customer(n) for n in names))
    project.events(*({"customer": n, "event": "signed_up", "at": at} for n in names))


def tick_json(project, now: str) -> dict:
    return json.loads(project.cli("tick", "--now", now, "--json").stdout)


def report(project, now: str) -> dict:
    return json.loads(project.cli("report", "--now", now, "--format", "json").stdout)


def test_a_pause_holds_sends_evaluation_goes_on_and_a_resume_lets_them_go(store_project):
    project = store_project
    project.campaign("news", NEWS)
    project.campaign("drip", DRIP)
    signups(project, "ann", "bob")
    said = project.cli("pause", "news", "--reason", "wrong price in the copy", "--now", "2026-03-01T09:00:00Z").stdout
    assert "news paused" in said

    held = tick_json(project, T0)
    assert held["campaigns"]["news"] == {"entered": 2}  # entries recorded, nothing sent
    assert held["campaigns"]["drip"]["sent"] == 2  # the other campaign goes on
    assert held["paused"] == {
        "news": {"reason": "wrong price in the copy", "since": "2026-03-01T09:00:00+00:00", "by": "operator"}
    }
    assert [s[3] for s in project.sends("news")] == ["scheduled", "scheduled"]
    assert "paused: news (by operator since 2026-03-01T09:00:00+00:00): wrong price in the copy" in (
        project.cli("tick", "--now", "2026-03-01T10:05:00Z").stdout
    )
    signups(project, "cat", at="2026-03-01T10:10:00Z")  # a signup while paused still enters
    assert tick_json(project, "2026-03-01T10:10:00Z")["campaigns"]["news"] == {"entered": 1}

    figures = report(project, "2026-03-01T11:00:00Z")["campaigns"]
    assert figures["news"]["paused"]["by"] == "operator" and figures["news"]["waiting"] == 3
    assert figures["drip"]["paused"] is None

    assert "news resumed" in project.cli("resume", "news", "--now", "2026-03-01T11:00:00Z").stdout
    after = tick_json(project, "2026-03-01T11:00:00Z")
    assert after["campaigns"]["news"] == {"sent": 3} and "paused" not in after
    assert sorted(c for c, _ in project.sent("news")) == ["ann", "bob", "cat"]
    assert report(project, "2026-03-01T12:00:00Z")["campaigns"]["news"]["paused"] is None


def test_pause_and_resume_say_what_they_did_and_refuse_an_unknown_campaign(project):
    project.campaign("news", NEWS)
    assert "news paused" in project.cli("pause", "news", "--now", T0).stdout
    again = project.cli("pause", "news", "--reason", "other", "--now", "2026-03-02T00:00:00Z").stdout
    assert "news was already paused (by operator since 2026-03-01T10:00:00+00:00): no reason given" in again
    unknown = project.cli("pause", "nwes", expect=1)
    assert "no campaign named 'nwes': did you mean 'news'? (campaigns: news)" in unknown.output
    assert "did you mean 'news'" in project.cli("resume", "newz", expect=1).output
    assert "news resumed" in project.cli("resume", "news").stdout
    assert "news was not paused" in project.cli("resume", "news").stdout
    assert project.query("SELECT campaign, paused_by, reason FROM campaign_pause") == [
        ("news", "operator", "no reason given")
    ]


def test_a_pause_takes_effect_at_the_next_batch_of_a_tick_already_running(store_project):
    """Another process pauses the campaign while a tick sends it, one send a batch: the batch in hand
    goes out, the next is held."""
    project = store_project
    project.config(scheduler={"batch_size": 1})
    project.campaign("news", NEWS)
    signups(project, "ann", "bob", "cat")
    config = load_config(project.root / "config.yaml")
    engine = open_store(config.database_url)
    batches = []

    def pause_after_the_first_batch(n: int) -> None:
        batches.append(n)
        if len(batches) == 1:
            project.cli("pause", "news", "--reason", "stop now")

    from engine.clock import parse_instant

    with load_sender(config) as sender:
        tick = Tick(
            config, load_campaigns(config), engine, sender, parse_instant(T0), progress=pause_after_the_first_batch
        )
        result = tick.run()
    assert result.counts["news"]["sent"] == 1 and batches == [1]
    assert result.paused["news"]["reason"] == "stop now"
    assert sorted(s[3] for s in project.sends("news")) == ["scheduled", "scheduled", "sent"]
    engine.dispose()


def test_ticks_in_other_processes_at_once_honour_the_same_pause(store_project):
    project = store_project
    project.campaign("news", NEWS)
    signups(project, *[f"c{i:02d}" for i in range(20)])
    project.cli("pause", "news", "--reason", "held for all")
    command = [sys.executable, "-m", "engine", "tick", "--config", str(project.root / "config.yaml")]
    command += ["--now", T0, "--json"]
    ticks = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))]
    ticks.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ)))
    outputs = [t.communicate(timeout=120) for t in ticks]
    assert all(t.returncode == 0 for t in ticks), [o[1][-500:] for o in outputs]
    for stdout, _ in outputs:
        assert json.loads(stdout)["paused"]["news"]["reason"] == "held for all"
    assert project.sent("news") == [] and project.outbox() == []
    assert project.query("SELECT count(*) FROM send WHERE status = 'scheduled'") == [(20,)]

    project.cli("resume", "news")
    ticks = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))]
    ticks.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ)))
    outputs = [t.communicate(timeout=120) for t in ticks]
    sent = [json.loads(o[0])["campaigns"]["news"].get("sent", 0) for o in outputs]
    assert sum(sent) == 20 and len(project.outbox()) == 20


def test_a_held_send_still_expires_at_due_plus_expire_after(project):
    """A pause does not stop time: a step that cannot go out by due + expire_after expires, as it
    would while the engine was stopped."""
    project.campaign("drip", DRIP)
    signups(project, "ann")
    project.cli("pause", "drip")
    project.tick(T0)
    assert project.tick("2026-03-02T10:00:01Z")["drip"] == {"expired": 1}
    project.cli("resume", "drip")
    assert project.tick("2026-03-02T10:00:02Z")["drip"] == {}
    assert project.sends("drip") == [("drip", "ann", 1, "expired", "expired")]


def test_the_pause_shows_in_the_report_table_the_page_the_dashboard_and_metrics(project, monkeypatch):
    monkeypatch.setenv("LIFECYCLE_API_KEYS", "key")
    project.campaign("news", NEWS)
    project.campaign("drip", DRIP)
    project.cli("pause", "news", "--reason", "a <b>bold</b> reason", "--now", T0)
    table = project.cli("report", "--now", T0).stdout
    assert "paused" in table and "operator" in table and "a <b>bold</b> reason" in table
    page = project.cli("report", "--now", T0, "--format", "html").stdout
    assert 'id="paused"' in page and "a &lt;b&gt;bold&lt;/b&gt; reason" in page
    assert '<span class="paused-mark">paused</span>' in page

    client = TestClient(create_app(load_config(project.root / "config.yaml")))
    dashboard = client.get("/dashboard", headers={"Authorization": "Bearer key"}).text
    assert '<li data-campaign="news"><strong>news</strong>: paused by operator' in dashboard
    assert 'lifecycle_campaign_paused{campaign="news"} 1.0' in client.get("/metrics").text
    project.cli("resume", "news")
    assert 'lifecycle_campaign_paused{campaign="news"} 0.0' in client.get("/metrics").text
    assert 'id="paused"' not in project.cli("report", "--now", T0, "--format", "html").stdout


def test_the_tick_sets_the_gauge_for_every_campaign_it_runs(project):
    project.campaign("news", NEWS)
    project.campaign("drip", DRIP)
    project.cli("pause", "drip")
    project.tick(T0)
    from prometheus_client import REGISTRY

    assert REGISTRY.get_sample_value("lifecycle_campaign_paused", {"campaign": "drip"}) == 1
    assert REGISTRY.get_sample_value("lifecycle_campaign_paused", {"campaign": "news"}) == 0
    with open_store(load_config(project.root / "config.yaml").database_url).connect() as connection:
        assert set(pauses.active(connection)) == {"drip"}


def test_running_daemons_hold_a_paused_campaign_and_send_it_once_resumed(store_project, inbox):  # noqa: F811
    """Two `lifecycle run` daemons on one store, a real SMTP server counting what arrives."""
    project = store_project
    total = len(prepared(project, inbox, customers=60, batch_size=10))
    project.cli("pause", "hello", "--reason", "hold it")
    daemons = [daemon(project, "a.log"), daemon(project, "b.log")]
    try:
        for name in ("a.log", "b.log"):
            wait_for(lambda name=name: held_in_log(project, name), what=f"a tick of {name} holding the campaign")
        assert inbox.received == Counter() and statuses(project) == Counter({"scheduled": total})
        project.cli("resume", "hello")
        wait_for(lambda: settled(project, total), what="every send after the resume")
    finally:
        assert [stop(d) for d in daemons] == [0, 0]
    assert statuses(project) == Counter({"sent": total})
    assert len(inbox.received) == total and max(inbox.received.values()) == 1


def held_in_log(project, name: str) -> bool:
    path = project.root / name
    lines = path.read_text().splitlines() if path.exists() else []
    return any(json.loads(line).get("paused") == ["hello"] for line in lines if line.startswith("{"))


def test_a_dry_run_plans_nothing_for_a_paused_campaign_and_says_why(project):
    project.campaign("news", NEWS)
    signups(project, "ann")
    project.cli("pause", "news", "--reason", "checking")
    dry = json.loads(project.cli("tick", "--now", T0, "--dry-run", "--json").stdout)
    assert dry["planned"] == [] and dry["paused"]["news"]["reason"] == "checking"
    project.cli("resume", "news")
    planned = json.loads(project.cli("tick", "--now", T0, "--dry-run", "--json").stdout)["planned"]
    assert [(p["customer"], p["action"]) for p in planned] == [("ann", "send")]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Chromium (apt-get install chromium)")
def test_a_person_sees_the_pause_at_the_top_of_the_report_page(project):
    from playwright.sync_api import sync_playwright

    project.campaign("news", NEWS)
    signups(project, "ann")
    project.cli("pause", "news", "--reason", "wrong price", "--now", T0)
    ARTIFACTS.mkdir(exist_ok=True)
    page_file = ARTIFACTS / "paused.html"
    page_file.write_text(project.cli("report", "--now", T0, "--format", "html").stdout, encoding="utf-8")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(page_file.as_uri())
            box = page.locator("#paused").bounding_box()
            charts = page.locator(".charts").bounding_box()
            said = page.locator("#paused li").inner_text()
            mark = page.locator('tr.campaign[data-campaign="news"] .paused-mark').is_visible()
            page.screenshot(path=str(ARTIFACTS / "paused.png"))
        finally:
            browser.close()
    assert box and charts and box["y"] + box["height"] <= charts["y"] and box["y"] < 900  # first thing, on screen
    assert said.startswith("news: paused by operator since 2026-03-01T10:00:00+00:00: wrong price")
    assert mark
