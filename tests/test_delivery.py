"""Delivery end to end through `lifecycle tick`: a real SMTP server (aiosmtpd) and a local stand-in
for SendGrid's API. One bad recipient never stops the batch; a transient failure is retried with
backoff (never sooner than the server asked) up to `scheduler.max_attempts`; a permanent one fails
and suppresses; a send left `sending` by a crash is reported `unknown` and never sent again."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from conftest import customer

T0 = datetime(2026, 3, 1, 10, 0)
NEWS = """\
topic: news
trigger: {event: signed_up}
steps: [{template: plain, subject: "Hello {{ customer.first_name }}"}]
"""


def at(moment: datetime) -> str:
    return moment.isoformat() + "Z"


class Mailbox:
    """An SMTP server's handler: 550 for addresses starting with `bad`, 451 for those in `busy`."""

    def __init__(self) -> None:
        self.busy: set[str] = set()
        self.messages: list = []
        self.refused: list[str] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("bad"):
            return f"550 5.1.1 <{address}>: no such user"
        if address in self.busy:
            self.refused.append(address)
            return "451 4.2.1 mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.original_content, policy=policy.default)))
        return "250 Message accepted"

    def to(self, address: str) -> list:
        return [message for rcpt_tos, message in self.messages if rcpt_tos == [address]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mailbox(project):
    handler = Mailbox()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    project.config(
        sender={"backend": "smtp", "smtp": {"host": "127.0.0.1", "port": controller.port, "timeout": 5}},
        scheduler={"max_attempts": 3},
    )
    yield handler
    controller.stop()


def signups(project, *names: str, **fields) -> None:
    project.customers(*(customer(n, **fields) for n in names))
    project.events(*({"customer": n, "event": "signed_up", "at": at(T0)} for n in names))


def send_row(project, name: str) -> dict:
    (row,) = project.query(
        """SELECT s.id, s.status, s.reason, s.attempts, s.next_attempt_at, s.message_id FROM send s
                              JOIN customer c ON c.id = s.customer_id WHERE c.external_id = :name""",
        name=name,
    )
    return dict(zip(("id", "status", "reason", "attempts", "next_attempt_at", "message_id"), row, strict=True))


def when(value) -> datetime:
    return datetime.fromisoformat(str(value)).replace(tzinfo=None)


def test_a_refused_and_a_busy_recipient_do_not_stop_the_batch(project, mailbox):
    project.campaign("news", NEWS)
    signups(project, "ann", "bad", "later", "bob")
    mailbox.busy.add("later@example.com")

    counts = project.tick(at(T0))["news"]
    assert counts["sent"] == 2 and counts["failed"] == 1 and counts["deferred:retry"] == 1
    assert [len(mailbox.to(f"{n}@example.com")) for n in ("ann", "bob")] == [1, 1]
    bad = send_row(project, "bad")
    assert bad["status"] == "failed" and bad["reason"].startswith("smtp 550 5.1.1")
    assert project.query("SELECT email, reason FROM suppression") == [("bad@example.com", "invalid")]
    later = send_row(project, "later")
    assert later["status"] == "deferred" and later["reason"].startswith("retry: smtp 451")
    retry_at = when(later["next_attempt_at"])
    assert T0 + timedelta(seconds=30) <= retry_at <= T0 + timedelta(seconds=90)  # 60 s, with jitter

    mailbox.busy.clear()
    project.tick(at(retry_at - timedelta(seconds=1)))
    assert mailbox.to("later@example.com") == [] and send_row(project, "later")["status"] == "deferred"
    project.tick(at(retry_at))
    assert send_row(project, "later")["status"] == "sent" and len(mailbox.to("later@example.com")) == 1
    project.tick(at(T0 + timedelta(days=1)))
    assert len(mailbox.messages) == 3 and send_row(project, "bad")["status"] == "failed"


def test_after_max_attempts_a_transient_failure_is_final(project, mailbox):
    project.campaign("news", NEWS)
    signups(project, "later")
    mailbox.busy.add("later@example.com")
    moment = T0
    for attempt in range(1, 4):
        project.tick(at(moment))
        row = send_row(project, "later")
        assert row["attempts"] == attempt
        if attempt < 3:
            assert row["status"] == "deferred"
            moment = when(row["next_attempt_at"])
    assert row["status"] == "failed" and "451" in row["reason"]
    assert project.query("SELECT count(*) FROM suppression") == [(0,)]  # a busy mailbox is not a bad address
    project.tick(at(moment + timedelta(days=1)))
    assert mailbox.refused == ["later@example.com"] * 3


def test_what_arrives_over_smtp_is_whole_and_safe(project, mailbox):
    project.campaign("news", NEWS)
    signups(project, "eve", first_name="Eve\r\nBcc: victim@example.com")
    project.tick(at(T0))

    (message,) = mailbox.to("eve@example.com")
    for name in (
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "X-Lifecycle-Campaign",
        "X-Lifecycle-Send-Id",
    ):
        assert message[name], name
    assert message["Bcc"] is None and str(message["Subject"]) == "Hello Eve Bcc: victim@example.com"
    assert str(message["Message-ID"]).endswith("@shop.example>")
    assert str(message["List-Unsubscribe"]).startswith("<http://localhost:8000/unsubscribe/")
    assert str(message["X-Lifecycle-Send-Id"]) == str(send_row(project, "eve")["id"])
    assert send_row(project, "eve")["message_id"] == str(message["Message-ID"])
    html = message.get_body(("html",)).get_content()
    assert "1 Test Street" in html and "Eve Bcc: victim@example.com" in " ".join(html.split())


def test_send_test_goes_through_smtp(project, mailbox):
    project.campaign("news", NEWS)
    project.customers(customer("ann"))
    result = project.cli("send-test", "news", "--to", "qa@shop.example", "--customer", "ann")
    assert "sent news step 1 to qa@shop.example" in result.output
    (message,) = mailbox.to("qa@shop.example")
    assert str(message["Subject"]) == "Hello Ann" and str(message["To"]) == "qa@shop.example"


def test_a_send_left_sending_by_a_crash_is_unknown_and_never_sent(project):
    project.campaign("news", NEWS.replace('subject: "Hello {{ customer.first_name }}"', 'subject: "Hi", delay: 1h'))
    signups(project, "ann", "bob")
    project.tick(at(T0))  # both entered; their sends are due at T0 + 1h
    crashed, in_flight = T0 - timedelta(hours=1), T0 + timedelta(minutes=55)  # the lease is 15 minutes
    for name, updated_at in (("ann", crashed), ("bob", in_flight)):
        project.query(
            "UPDATE send SET status = 'sending', attempts = 1, updated_at = :at WHERE id = :id",
            at=updated_at.isoformat(sep=" ", timespec="microseconds"),
            id=send_row(project, name)["id"],
        )

    project.tick(at(T0 + timedelta(hours=1)))
    ann, bob = send_row(project, "ann"), send_row(project, "bob")
    assert ann["status"] == "unknown" and "in flight" in ann["reason"]
    assert bob["status"] == "sending"  # another worker may still be sending it: left alone
    project.tick(at(T0 + timedelta(days=1)))
    assert project.outbox() == []
    report = json.loads(project.cli("report", "--format", "json", "--now", at(T0 + timedelta(days=1))).stdout)
    assert report["campaigns"]["news"]["unknown"] == 2


# -- SendGrid ---------------------------------------------------------------------------------------


class FakeSendGrid:
    """A stand-in for the v3 Mail Send API: records requests, answers from a queue (then 202)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.answers: list[tuple[int, dict[str, str]]] = []


@pytest.fixture
def sendgrid_api(project, monkeypatch):
    fake = FakeSendGrid()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            fake.requests.append({"path": self.path, "authorization": self.headers["Authorization"], "body": body})
            status, headers = fake.answers.pop(0) if fake.answers else (202, {"X-Message-Id": "sg-1"})
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("SENDGRID_TEST_KEY", "SG.key")
    project.config(
        sender={
            "backend": "sendgrid",
            "sendgrid": {
                "api_key_env": "SENDGRID_TEST_KEY",
                "sandbox": True,
                "base_url": f"http://127.0.0.1:{server.server_address[1]}",
            },
        }
    )
    yield fake
    server.shutdown()
    server.server_close()


def test_sendgrid_429_waits_until_the_rate_limit_resets(project, sendgrid_api):
    project.campaign("news", NEWS)
    signups(project, "ann")
    sendgrid_api.answers.append((429, {"X-RateLimit-Reset": str(int(time.time()) + 3600)}))

    project.tick(at(T0))
    row = send_row(project, "ann")
    assert row["status"] == "deferred" and "sendgrid 429" in row["reason"]
    retry_at = when(row["next_attempt_at"])
    assert T0 + timedelta(minutes=58) <= retry_at <= T0 + timedelta(hours=1)  # the hint, not 60 s of backoff

    project.tick(at(T0 + timedelta(minutes=30)))
    assert len(sendgrid_api.requests) == 1 and send_row(project, "ann")["status"] == "deferred"
    project.tick(at(retry_at))
    row = send_row(project, "ann")
    assert row["status"] == "sent" and row["message_id"] == f"sg-1.{row['id']}"
    request = sendgrid_api.requests[-1]
    assert request["path"] == "/v3/mail/send" and request["authorization"] == "Bearer SG.key"
    body = request["body"]
    (personalization,) = body["personalizations"]
    assert personalization["to"] == [{"email": "ann@example.com", "name": "Ann"}]
    assert personalization["custom_args"] == {"send_id": str(row["id"])}
    assert body["mail_settings"] == {"sandbox_mode": {"enable": True}}
    assert body["subject"] == "Hello Ann"
    headers = {**body.get("headers", {}), **personalization.get("headers", {})}
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert headers["X-Lifecycle-Send-Id"] == str(row["id"])
