"""The daemon under real failure: processes killed with SIGKILL mid-batch, several daemons on one
PostgreSQL store, the database restarted under them. A real SMTP server (aiosmtpd) counts what
arrives: every due send ends in exactly one terminal state and no message arrives twice."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from email import message_from_bytes

import pytest
from aiosmtpd.controller import Controller
from conftest import customer

from engine.senders.smtp import SmtpSender

NOW = "2026-03-01T12:00:00Z"
WORKERS = 2  # courier processes of each daemon, each with a group of the batch in flight
CAMPAIGN = """
    type: transactional
    trigger: {event: signed_up}
    steps: [{template: plain, subject: "Hello {{ customer.first_name }}"}]
    """


class Inbox:
    """An SMTP server's handler that counts each send id it accepts. With `hold_after` set, it
    stops answering after that many, so a kill is sure to land mid-batch."""

    def __init__(self) -> None:
        self.received: Counter = Counter()
        self.lock = threading.Lock()
        self.hold_after: int | None = None

    async def handle_DATA(self, server, session, envelope):
        while self.hold_after is not None and len(self.received) >= self.hold_after:
            await asyncio.sleep(0.02)
        send_id = message_from_bytes(envelope.content)["X-Lifecycle-Send-Id"]
        with self.lock:
            self.received[int(send_id)] += 1
        return "250 OK"


@pytest.fixture
def inbox():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handler = Inbox()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    handler.port = port
    yield handler
    controller.stop()


def prepared(project, inbox, customers: int, batch_size: int = 50):
    project.config(
        sender={"backend": "smtp", "smtp": {"host": "127.0.0.1", "port": inbox.port}},
        scheduler={"interval": "1s", "batch_size": batch_size, "lease": "15m", "workers": WORKERS},
    )
    project.campaign("hello", CAMPAIGN)
    names = [f"c{i:05d}" for i in range(customers)]
    project.customers(*(customer(n) for n in names))
    project.events(*({"customer": n, "event": "signed_up", "at": "2026-03-01T11:00:00Z"} for n in names))
    return names


def daemon(project, log_name: str = "daemon.log") -> subprocess.Popen:
    command = [sys.executable, "-m", "engine", "run", "--config", str(project.root / "config.yaml"), "--now", NOW]
    with open(project.root / log_name, "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, stdout=log, stderr=log, env=dict(os.environ))


def wait_for(condition, timeout: float = 120.0, what: str = "condition"):
    """Poll a real process's progress (not a stand-in for time-dependent logic)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def statuses(project) -> Counter:
    return Counter(dict(project.query("SELECT status, count(*) FROM send GROUP BY status")))


def settled(project, expected: int) -> bool:
    counts = statuses(project)
    return sum(counts.values()) == expected and not (set(counts) & {"scheduled", "deferred", "sending"})


def assert_exactly_once(project, inbox, expected: int) -> Counter:
    counts = statuses(project)
    assert sum(counts.values()) == expected
    assert set(counts) <= {"sent", "unknown"}, counts
    sent_ids = {r[0] for r in project.query("SELECT id FROM send WHERE status = 'sent'")}
    assert max(inbox.received.values()) == 1, "a message arrived twice"
    assert sent_ids <= set(inbox.received), "a send marked sent never arrived"
    # unknown sends were in flight at a kill: delivered or not, never sent again
    unknown = {r[0] for r in project.query("SELECT id FROM send WHERE status = 'unknown'")}
    assert set(inbox.received) <= sent_ids | unknown
    return counts


def stop(process: subprocess.Popen, timeout: float = 30) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=timeout)


def test_sigterm_finishes_the_batch_and_exits_cleanly(project, inbox):
    prepared(project, inbox, customers=400, batch_size=20)
    worker = daemon(project)
    wait_for(lambda: len(inbox.received) >= 40, what="the first batches")
    assert stop(worker) == 0
    counts = statuses(project)
    assert counts["sending"] == 0, "a clean stop leaves nothing in flight"
    assert counts["sent"] == len(inbox.received)
    assert project.query("SELECT count(*) FROM worker") == [(0,)]
    log = [json.loads(line) for line in (project.root / "daemon.log").read_text().splitlines()]
    assert any(entry["message"] == "tick" for entry in log) and log[-1]["message"] == "daemon stopped"


def test_kill_9_mid_batch_never_delivers_twice_and_reports_unknown(project, inbox):
    total = len(prepared(project, inbox, customers=3000, batch_size=500))
    inbox.hold_after = 730  # mid-way through the second batch of 500
    first = daemon(project)
    wait_for(lambda: len(inbox.received) >= 730, what="a batch and a half")
    first.kill()
    first.wait()
    inbox.hold_after = None
    # only the groups claimed for the couriers are in flight; the rest of the batch was never claimed
    in_flight = statuses(project)["sending"]
    assert 0 < in_flight <= WORKERS * SmtpSender.acknowledges
    assert set(statuses(project)) == {"sent", "sending", "scheduled"}  # nothing put back, nothing lost yet
    second = daemon(project)
    wait_for(lambda: settled(project, total), what="every send settled")
    assert stop(second) == 0
    counts = assert_exactly_once(project, inbox, total)
    assert counts["unknown"] == in_flight  # the rest of the killed daemon's batch was sent by the second
    report = json.loads(project.cli("report", "--format", "json", "--now", NOW).stdout)
    assert report["campaigns"]["hello"]["unknown"] == in_flight
    assert report["campaigns"]["hello"]["sent"] == counts["sent"]


@pytest.mark.postgres
def test_three_daemons_killed_at_random_on_postgresql(postgres_project, inbox):
    project = postgres_project
    total = len(prepared(project, inbox, customers=3000, batch_size=50))
    chance = random.Random(20261123)
    workers = [daemon(project, f"daemon{i}.log") for i in range(3)]
    for round_ in range(4):
        wait_for(
            lambda target=(round_ + 1) * 400: len(inbox.received) >= target or settled(project, total),
            what="progress between kills",
        )
        victim = chance.randrange(3)
        workers[victim].kill()
        workers[victim].wait()
        workers[victim] = daemon(project, f"daemon{victim}.log")
    wait_for(lambda: settled(project, total), timeout=180, what="every send settled")
    assert all(stop(w) == 0 for w in workers)
    counts = assert_exactly_once(project, inbox, total)
    assert counts["sent"] + counts["unknown"] == total


@pytest.mark.postgres
def test_database_restart_is_survived_without_a_crash_loop(postgres_project, inbox):
    project = postgres_project
    if shutil.which("pg_ctlcluster") is None:
        pytest.skip("pg_ctlcluster is not installed")
    total = len(prepared(project, inbox, customers=1500, batch_size=50))
    worker = daemon(project)
    wait_for(lambda: len(inbox.received) >= 200, what="the first batches")
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True)
    wait_for(lambda: _reachable(project) and settled(project, total), timeout=180, what="recovery")
    assert worker.poll() is None, "the daemon kept running through the restart"
    assert stop(worker) == 0
    assert_exactly_once(project, inbox, total)
    log = (project.root / "daemon.log").read_text()
    assert "database unavailable; retrying" in log


def _reachable(project) -> bool:
    try:
        project.query("SELECT 1")
        return True
    except Exception:  # the server is still restarting
        project.db.dispose()
        return False
