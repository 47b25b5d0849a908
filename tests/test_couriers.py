"""Couriers: with `scheduler.workers` above one, forked processes compose and send while the tick
keeps the ledger; every send still ends in one state, and a courier that dies takes only its
own group with it."""

from __future__ import annotations

import os
from collections import Counter
from datetime import datetime
from pathlib import Path

from test_delivery import NEWS, at, signups

from engine.mail.message import OutgoingEmail
from engine.senders import Sender, SendResult

T0 = datetime(2026, 3, 1, 10, 0)
TRAIL = "COURIER_TRAIL"  # the folder where the senders below leave a file per message


class Trail(Sender):
    """Leaves `<send id>.<pid of the process that sent it>` for each message, in small groups."""

    name = "trail"
    acknowledges = 10

    def deliver(self, emails: list[OutgoingEmail]) -> list[SendResult]:
        for email in emails:
            (Path(os.environ[TRAIL]) / f"{email.send_id}.{os.getpid()}").write_bytes(email.raw)
        return [SendResult(email.send_id, ok=True, message_id=email.message_id) for email in emails]


class DiesOnSend25(Trail):
    """A courier process that dies (as if killed) when handed send 25; the tick's process, the
    only one whose pid is in `TICK_PID`, never dies."""

    def deliver(self, emails: list[OutgoingEmail]) -> list[SendResult]:
        if any(e.send_id == 25 for e in emails) and os.getpid() != int(os.environ["TICK_PID"]):
            os._exit(9)
        return super().deliver(emails)


def trail(folder: Path) -> list[tuple[int, int]]:
    return [(int(p.stem), int(p.suffix[1:])) for p in folder.iterdir()]


def shop(project, monkeypatch, tmp_path, sender: str, people: int, **scheduler) -> Path:
    folder = tmp_path / "trail"
    folder.mkdir()
    monkeypatch.setenv(TRAIL, str(folder))
    monkeypatch.setenv("TICK_PID", str(os.getpid()))
    project.config(sender={"backend": f"test_couriers:{sender}"}, scheduler={"batch_size": 40, **scheduler})
    project.campaign("news", NEWS)
    signups(project, *(f"c{i:03d}" for i in range(people)))
    return folder


def test_couriers_compose_and_send_in_processes_of_their_own_and_each_send_goes_once(project, monkeypatch, tmp_path):
    folder = shop(project, monkeypatch, tmp_path, "Trail", 120, workers=2)
    assert project.tick(at(T0))["news"] == {"entered": 120, "sent": 120}
    sent = trail(folder)
    assert sorted(send_id for send_id, _ in sent) == list(range(1, 121))  # each once
    processes = {pid for _, pid in sent}
    assert len(processes) == 2 and os.getpid() not in processes
    rows = project.query("SELECT id, message_id FROM send WHERE status = 'sent'")
    messages = {int(p.name.split(".")[0]): p.read_bytes() for p in folder.iterdir()}
    for send_id, message_id in rows:  # the ledger holds each courier's result for its own send
        assert f"Message-ID: {message_id}".encode() in messages[send_id]
    assert project.query("SELECT count(*) FROM worker") == [(0,)]  # and the couriers are gone


def test_one_worker_composes_and_sends_in_the_ticks_own_process(project, monkeypatch, tmp_path):
    folder = shop(project, monkeypatch, tmp_path, "Trail", 30, workers=1)
    assert project.tick(at(T0))["news"] == {"entered": 30, "sent": 30}
    assert {pid for _, pid in trail(folder)} == {os.getpid()}


def test_a_group_no_bigger_than_one_handover_is_sent_without_forking(project, monkeypatch, tmp_path):
    folder = shop(project, monkeypatch, tmp_path, "Trail", 10, workers=2)
    assert project.tick(at(T0))["news"] == {"entered": 10, "sent": 10}
    assert {pid for _, pid in trail(folder)} == {os.getpid()}


def test_a_courier_that_dies_leaves_unknown_only_what_was_with_the_couriers(project, monkeypatch, tmp_path):
    folder = shop(project, monkeypatch, tmp_path, "DiesOnSend25", 120, workers=2)
    counts = project.tick(at(T0))["news"]
    statuses = Counter(status for (status,) in project.query("SELECT status FROM send"))
    assert statuses["sending"] == 0 and sum(statuses.values()) == 120
    # the dead courier's group, and the other courier's (stopped with it), are unknown: at most two
    # groups of ten; they are never sent again. The batches after it go out through new couriers.
    assert 10 <= statuses["unknown"] <= 2 * DiesOnSend25.acknowledges
    unknown = {send_id for (send_id,) in project.query("SELECT id FROM send WHERE status = 'unknown'")}
    assert 25 in unknown
    sent = {send_id for (send_id,) in project.query("SELECT id FROM send WHERE status = 'sent'")}
    assert max(sent) == 120 and sent == {send_id for send_id, _ in trail(folder)} - unknown
    assert counts["sent"] == len(sent) and counts["unknown"] == len(unknown)
    assert statuses["sent"] + statuses["unknown"] + statuses["deferred"] == 120
