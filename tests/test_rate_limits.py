"""The sender's rate limits (`sender.rate`) and backing off when the provider says to slow down.

Windows (per_hour, per_day) run on the business clock, so they are shown with `--now`; the pace
(per_second) runs on the wall clock, so it is shown with an injected clock, and across real
processes only as an upper bound on what reached the outbox in any one second. How close the pace
comes to its target is measured by bench/rate_limited.py, not here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from aiosmtpd.controller import Controller
from conftest import customer
from sqlalchemy import text
from standin import serving
from test_delivery import NEWS, at, free_port, send_row, signups, when

from engine.config.settings import load_config
from engine.delivery.ratelimit import RateLimiter
from engine.senders import Sender, SendResult
from engine.store.dialect import make_engine
from engine.store.schema import ensure_schema

T0 = datetime(2026, 3, 1, 10, 0)


def names(count: int) -> list[str]:
    return [f"c{i:03d}" for i in range(count)]


def statuses(project) -> dict[str, int]:
    rows = project.query("SELECT status, count(*) FROM send GROUP BY status")
    return dict(rows)


def ticks_at_once(project, now: str, count: int = 3) -> list[dict]:
    """`count` real `lifecycle tick` processes started together on the project's store."""
    config = str(project.root / "config.yaml")
    command = [sys.executable, "-m", "engine", "tick", "--config", config, "--now", now, "--json"]
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
        for _ in range(count)
    ]
    outputs = [p.communicate(timeout=180) for p in processes]
    assert all(p.returncode == 0 for p in processes), [o[1][-800:] for o in outputs]
    return [json.loads(o[0]) for o in outputs]


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rate, message",
    [
        ({"per_second": 0}, "sender.rate.per_second: '0' must be more than 0"),
        ({"per_second": -2.5}, "sender.rate.per_second: '-2.5' must be more than 0"),
        ({"per_second": "fast"}, "sender.rate.per_second: 'fast' is not a number"),
        ({"per_hour": 0}, "sender.rate.per_hour: '0' must be more than 0"),
        ({"per_day": -1}, "sender.rate.per_day: '-1' must be more than 0"),
        ({"per_day": 1.5}, "sender.rate.per_day: '1.5' is not a whole number"),
        ({"per_hour": "many"}, "sender.rate.per_hour: 'many' is not a whole number"),
        ({"per_minute": 5}, "unknown key 'per_minute' under sender.rate"),
    ],
)
def test_a_bad_rate_is_refused_with_its_key_path(project, rate, message):
    project.config(sender={"backend": "file", "rate": rate})
    result = project.cli("validate", expect=1)
    assert "config.yaml:" in result.output and message in result.output


def test_a_rate_as_the_contract_writes_it_is_accepted(project):
    project.config(sender={"backend": "null", "rate": {"per_second": 14, "per_hour": None, "per_day": 50000}})
    project.cli("validate")


# -- windows: per_hour and per_day -----------------------------------------------------------------


def test_a_full_hour_defers_the_rest_with_a_reason_and_sends_it_when_the_window_moves_on(store_project):
    project = store_project
    project.config(sender={"backend": "file", "rate": {"per_hour": 5}})
    project.campaign("news", NEWS)
    signups(project, *names(12))

    counts = project.tick(at(T0))["news"]
    assert counts["sent"] == 5 and counts["deferred:rate_limit"] == 7
    waiting = project.query("SELECT DISTINCT reason, next_attempt_at FROM send WHERE status = 'deferred'")
    assert [(reason, when(until)) for reason, until in waiting] == [
        ("rate_limit: sender.rate.per_hour 5 reached", T0 + timedelta(hours=1))
    ]
    assert len(project.outbox()) == 5

    assert project.tick(at(T0 + timedelta(minutes=59))).get("news", {}) == {}  # still within the hour
    counts = project.tick(at(T0 + timedelta(hours=1)))["news"]  # the first five have left the window
    assert counts["sent"] == 5 and counts["deferred:rate_limit"] == 2
    counts = project.tick(at(T0 + timedelta(hours=2)))["news"]
    assert counts == {"sent": 2}
    assert statuses(project) == {"sent": 12} and len(project.outbox()) == 12


def test_the_day_window_counts_what_went_earlier_and_frees_as_each_send_leaves_it(project):
    """Sends spread over a day leave the window one by one: each deferral waits for the next."""
    project.config(sender={"backend": "file", "rate": {"per_day": 3}})
    project.campaign("news", NEWS)
    for hour, name in enumerate(["ann", "bob", "cat"]):
        project.customers(customer(name))
        project.events({"customer": name, "event": "signed_up", "at": at(T0 + timedelta(hours=hour))})
        assert project.tick(at(T0 + timedelta(hours=hour)))["news"]["sent"] == 1
    signups(project, "dan", "eve")
    counts = project.tick(at(T0 + timedelta(hours=5)))["news"]
    assert counts == {"entered": 2, "deferred:rate_limit": 2}
    assert {when(send_row(project, n)["next_attempt_at"]) for n in ("dan", "eve")} == {T0 + timedelta(days=1)}
    assert project.tick(at(T0 + timedelta(days=1)))["news"] == {"sent": 1, "deferred:rate_limit": 1}
    assert when(send_row(project, "eve")["next_attempt_at"]) == T0 + timedelta(days=1, hours=1)
    assert project.tick(at(T0 + timedelta(days=1, hours=1)))["news"] == {"sent": 1}


def test_a_dry_run_shows_what_the_window_would_hold_back_and_changes_nothing(project):
    project.config(sender={"backend": "file", "rate": {"per_day": 1}})
    project.campaign("news", NEWS)
    signups(project, "ann", "bob")
    result = project.cli("tick", "--now", at(T0), "--dry-run", "--json")
    plan = {p["customer"]: (p["action"], p["reason"]) for p in json.loads(result.stdout)["planned"]}
    assert plan == {"ann": ("send", None), "bob": ("defer", "rate_limit: sender.rate.per_day 1 reached")}
    assert project.sends() == []


def test_three_ticks_at_once_share_one_window(store_project):
    """Three processes claim from one store at the same time: together they send no more than
    the window allows, and the rest wait with the reason."""
    project = store_project
    project.config(sender={"backend": "file", "rate": {"per_hour": 20}})
    project.campaign("news", NEWS)
    signups(project, *names(60))

    reports = ticks_at_once(project, at(T0))
    assert sum(r["campaigns"]["news"].get("sent", 0) for r in reports) == 20
    assert statuses(project) == {"sent": 20, "deferred": 40}
    assert len(project.outbox()) == 20
    (reason,) = project.query("SELECT DISTINCT reason FROM send WHERE status = 'deferred'")
    assert reason == ("rate_limit: sender.rate.per_hour 20 reached",)


class AnotherDaemonSpends(Sender):
    """Groups of five; while the first is sent, "another daemon" sends ten other messages in the
    hour (sends of an `other` campaign, written straight to the store)."""

    acknowledges = 5
    store = ""
    calls = 0

    def deliver(self, emails):
        AnotherDaemonSpends.calls += 1
        if AnotherDaemonSpends.calls == 1:
            other = make_engine(self.store)
            with other.begin() as connection:
                for i in range(10):
                    connection.execute(
                        text(
                            "INSERT INTO entry (campaign, customer_id, entry_key, entered_at, held_out, scheduled, "
                            "status) VALUES ('other', 1, :key, :at, false, true, 'completed')"
                        ),
                        {"key": f"k{i}", "at": T0},
                    )
                    connection.execute(
                        text(
                            "INSERT INTO send (entry_id, campaign, customer_id, step, marketing, priority, due_at, "
                            "next_attempt_at, status, attempts, sent_at, outcomes) SELECT id, 'other', 1, 1, true, 0, "
                            ":at, :at, 'sent', 1, :at, 0 FROM entry WHERE entry_key = :key"
                        ),
                        {"key": f"k{i}", "at": T0.replace(tzinfo=UTC)},
                    )
            other.dispose()
        return [SendResult(email.send_id, ok=True, message_id=email.message_id) for email in emails]


def test_a_window_spent_by_another_daemon_meanwhile_is_counted_again_at_each_claim(store_project):
    """The batch was counted with room for 20; by the second group another daemon has sent 10:
    only 5 more go, and the hour holds 20."""
    project = store_project
    AnotherDaemonSpends.calls, AnotherDaemonSpends.store = 0, project.url
    project.config(
        sender={"backend": "test_rate_limits:AnotherDaemonSpends", "rate": {"per_hour": 20}},
        scheduler={"workers": 1},
    )
    project.campaign("news", NEWS)
    signups(project, *names(30))
    report = project.tick(at(T0))
    assert report["news"]["sent"] == 10 and report["news"]["deferred:rate_limit"] == 20
    assert project.query("SELECT count(*) FROM send WHERE status = 'sent'") == [(20,)]


# -- the pace: per_second --------------------------------------------------------------------------


class FakeClock:
    """A wall clock that only moves when someone sleeps."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def limiters(store_project):
    """Two limiters on separate engines (as two daemons) sharing one store and one fake clock."""
    project = store_project
    project.config(sender={"backend": "null", "rate": {"per_second": 10}})
    config = load_config(project.root / "config.yaml")
    clock = FakeClock()
    engines = [make_engine(config.database_url) for _ in range(2)]
    ensure_schema(engines[0])
    yield clock, [RateLimiter(config, engine, clock=clock, sleep=clock.sleep) for engine in engines]
    for engine in engines:
        engine.dispose()


def test_two_daemons_reserve_slots_one_after_the_other_never_together(limiters):
    clock, (first, second) = limiters
    a = first.pace(10)
    b = second.pace(5)
    c = first.pace(3)
    slots = a + b + c
    assert slots == sorted(slots) and slots[0] == clock.now - 0.1  # the one slot an idle pace keeps
    gaps = {round(later - earlier, 9) for earlier, later in pairwise(slots)}
    assert gaps == {0.1}  # one a tenth of a second after the other, across both daemons


def test_an_idle_pace_saves_up_one_slot_and_no_burst(limiters):
    clock, (first, _) = limiters
    first.pace(10)
    clock.now += 60  # a quiet minute
    slots = first.pace(10)
    assert round(clock.now - slots[0], 9) == 0.1 and round(slots[-1] - slots[0], 9) == 0.9


def test_each_message_is_handed_over_at_its_slot(limiters):
    clock, (first, _) = limiters
    first.pace(1)  # the pace is running: no slot saved up
    start = clock.now
    handed = [(clock.now - start, group) for group in first.in_turn(list("abcde"))]
    assert [(round(t, 9), g) for t, g in handed] == [
        (0.0, ["a"]),
        (0.1, ["b"]),
        (0.2, ["c"]),
        (0.3, ["d"]),
        (0.4, ["e"]),
    ]


def test_a_sender_slower_than_the_pace_is_not_held_back_further(limiters):
    clock, (first, _) = limiters
    first.pace(1)
    groups = []
    for group in first.in_turn(list("abcdef")):
        groups.append(group)
        clock.now += 0.25  # each call to the provider takes longer than a slot
    assert groups == [["a"], ["b", "c"], ["d", "e", "f"]]
    assert clock.slept == []


def test_a_process_held_up_takes_fresh_slots_instead_of_a_burst(limiters):
    clock, (first, second) = limiters
    first.pace(1)
    handed = []
    for group in first.in_turn(list("abcd")):
        handed.append((clock.now, group))
        if group == ["a"]:
            clock.now += 5  # stopped for five seconds; meanwhile the other daemon reserved a second
            later = second.pace(10)
    assert [g for _, g in handed] == [["a"], ["b"], ["c"], ["d"]]  # one at a time, not b, c, d at once
    times = [t for t, _ in handed[1:]]
    assert times[0] == later[-1] + 0.1 and [round(b - a, 9) for a, b in pairwise(times)] == [0.1, 0.1]


def test_three_paced_processes_together_stay_within_the_pace(store_project):
    """An upper bound only: no second of the outbox holds more than the pace (the files' times)."""
    project = store_project
    project.config(sender={"backend": "file", "rate": {"per_second": 20}})
    project.campaign("news", NEWS)
    signups(project, *names(60))

    reports = ticks_at_once(project, at(T0))
    assert sum(r["campaigns"]["news"].get("sent", 0) for r in reports) == 60
    written = sorted(path.stat().st_mtime for path in (project.root / "outbox").glob("*.eml"))
    assert len(written) == 60
    busiest = max(sum(1 for t in written[i:] if t < start + 1.0) for i, start in enumerate(written))
    assert busiest <= 30  # 20 a second, and a few handed over late beside those on time (unlimited: all 60)
    assert written[-1] - written[0] >= 0.9 * 59 / 20  # all at once would take a fraction of a second


# -- the provider says to slow down ---------------------------------------------------------------


class ThrottlingSendGrid:
    """SendGrid's v3 Mail Send API, answering 429 (with Retry-After) while `throttling`."""

    def __init__(self) -> None:
        self.throttling = True
        self.requests = 0

    def handle(self, method, path, headers, body):
        assert (method, path) == ("POST", "/v3/mail/send") and headers["Authorization"] == "Bearer SG.key"
        json.loads(body)
        self.requests += 1
        if self.throttling:
            return 429, {"Retry-After": "120"}, b'{"errors":[{"message":"too many requests"}]}'
        return 202, {"X-Message-Id": "sg"}, b""


def test_a_429_pauses_every_daemon_and_the_sends_wait_without_using_their_tries(project, monkeypatch):
    monkeypatch.setenv("SENDGRID_TEST_KEY", "SG.key")
    project.campaign("news", NEWS)
    signups(project, "ann", "bob")
    with serving(ThrottlingSendGrid()) as api:
        project.config(
            sender={"backend": "sendgrid", "sendgrid": {"api_key_env": "SENDGRID_TEST_KEY", "base_url": api.base_url}},
            scheduler={"max_attempts": 2, "batch_size": 1},
        )
        moment = T0
        for _ in range(4):  # twice max_attempts: a throttled send is never failed
            result = project.cli("tick", "--now", at(moment), "--json")
            report = json.loads(result.stdout)
            assert report["campaigns"]["news"] == {"deferred:throttled": 1, **({"entered": 2} if moment == T0 else {})}
            paused = when(report["paused_until"])
            assert paused >= moment + timedelta(seconds=120)
            row = send_row(project, "ann")
            assert row["status"] == "deferred" and row["reason"].startswith("throttled: sendgrid 429")
            assert row["attempts"] == 0 and when(row["next_attempt_at"]) == paused
            assert send_row(project, "bob")["status"] == "scheduled"  # its batch never began: paused

            requests = api.requests
            assert project.tick(at(moment + timedelta(seconds=60))) == {"news": {}}  # everyone holds off
            assert api.requests == requests
            moment = paused

        text = project.cli("tick", "--now", at(moment - timedelta(seconds=1))).stdout
        assert "sending paused until" in text and "the provider asked to slow down" in text
        api.throttling = False
        assert project.tick(at(moment))["news"] == {"sent": 2}
    assert statuses(project) == {"sent": 2}


class SlowDownSmtp:
    """An SMTP server that answers MAIL with 421 (closing) or 451 4.7.1 while told to."""

    def __init__(self) -> None:
        self.reply: str | None = "421 4.7.0 Too many messages, slow down"
        self.delivered = 0
        self.refused = 0

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.reply:
            self.refused += 1
            return self.reply
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.delivered += 1
        return "250 Message accepted"


@pytest.mark.parametrize(
    "reply", ["421 4.7.0 Too many messages, slow down", "451 4.7.1 Rate limit exceeded, try again later"]
)
def test_an_smtp_slow_down_leads_to_a_retry_later_never_a_failure(project, reply):
    handler = SlowDownSmtp()
    handler.reply = reply
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        project.config(
            sender={"backend": "smtp", "smtp": {"host": "127.0.0.1", "port": controller.port, "timeout": 5}},
            scheduler={"max_attempts": 1},
        )
        project.campaign("news", NEWS)
        signups(project, "ann", "bob", "cat")
        report = json.loads(project.cli("tick", "--now", at(T0), "--json").stdout)
        assert report["campaigns"]["news"] == {"entered": 3, "deferred:throttled": 3}
        reasons = {send_row(project, n)["reason"] for n in ("ann", "bob", "cat")}
        assert reasons == {f"throttled: smtp {reply}"}  # the rest of the batch was not tried
        assert {send_row(project, n)["attempts"] for n in ("ann", "bob", "cat")} == {0}
        assert handler.delivered == 0 and handler.refused == (2 if reply.startswith("421") else 1)

        handler.reply = None
        assert project.tick(at(when(report["paused_until"])))["news"] == {"sent": 3}
        assert handler.delivered == 3
    finally:
        controller.stop()


def test_a_busy_mailbox_is_an_ordinary_retry_not_a_pause(project):
    """451 for one mailbox (no policy code, no words of rate) counts its try and pauses nobody."""
    handler = SlowDownSmtp()
    handler.reply = "451 4.2.1 mailbox busy, try again later"
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        project.config(sender={"backend": "smtp", "smtp": {"host": "127.0.0.1", "port": controller.port}})
        project.campaign("news", NEWS)
        signups(project, "ann")
        report = json.loads(project.cli("tick", "--now", at(T0), "--json").stdout)
        assert report["campaigns"]["news"] == {"entered": 1, "deferred:retry": 1} and "paused_until" not in report
        assert send_row(project, "ann")["attempts"] == 1
    finally:
        controller.stop()


class RaisesOnItsSecondCall(Sender):
    """A backend with a bug that shows on its second call."""

    calls = 0

    def deliver(self, emails):
        RaisesOnItsSecondCall.calls += 1
        if RaisesOnItsSecondCall.calls == 2:
            raise RuntimeError("backend bug")
        return [SendResult(email.send_id, ok=True, message_id=email.message_id) for email in emails]


def test_under_a_pace_a_sender_that_raises_leaves_the_messages_it_never_had_to_retry(project):
    """Slots half a second apart: the first call gets the saved-up slot and the first, the second
    call (which raises) the third message, and the fourth was never handed over."""
    RaisesOnItsSecondCall.calls = 0
    project.config(sender={"backend": "test_rate_limits:RaisesOnItsSecondCall", "rate": {"per_second": 2}})
    project.campaign("news", NEWS)
    signups(project, "ann", "bob", "cat", "dan")
    project.tick(at(T0))
    rows = {name: send_row(project, name) for name in ("ann", "bob", "cat", "dan")}
    assert [rows[n]["status"] for n in ("ann", "bob", "cat")] == ["sent", "sent", "unknown"]
    assert rows["dan"]["status"] == "deferred"
    assert rows["dan"]["reason"] == "retry: not tried: the sender raised on an earlier message"
    assert rows["dan"]["attempts"] == 0  # never claimed: no try counted
