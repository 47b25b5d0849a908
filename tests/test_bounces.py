"""SMTP bounces end to end: the tick sends through a real SMTP server (aiosmtpd) with the bounce
address as envelope sender, real-shaped bounces of those very messages (Postfix, Exim, Gmail and
Yahoo, a delay warning, an auto-reply, garbage) are put into a real IMAP server (Debian's Dovecot)
with IMAP APPEND, and `lifecycle bounces` reads them: sends marked bounced hard or soft, hard
bounces suppressed, nothing read twice, a bad message moved aside alone."""

from __future__ import annotations

import json
import mailbox
import re
import ssl
from email import message_from_bytes
from email.utils import parseaddr
from pathlib import Path

import pytest
import test_senders_smtp
from conftest import customer
from imapserver import dovecot
from sqlalchemy import create_engine
from test_senders_smtp import Handler, make_email, start

from engine.campaigns.language import load_campaigns
from engine.clock import parse_instant
from engine.config.settings import Config, load_config
from engine.delivery import mailboxes
from engine.delivery.daemon import Daemon
from engine.delivery.dsn import read_bounce
from engine.senders import load_sender
from engine.senders.smtp import SmtpSender
from engine.senders.verp import ReturnPaths, read_verp, signature

HERE = Path(__file__).parent
certificate = test_senders_smtp.certificate  # the fixture: a throwaway certificate for 127.0.0.1
SENT = "2026-03-01T10:00:00Z"
LATER = "2026-03-01T12:00:00Z"
BOUNCES = "bounces@shop.example"
NEWS = """
type: marketing
topic: news
trigger: {event: ping}
steps: [{template: plain, subject: News}]
"""
PEOPLE = {
    "ann": "ann@example.com",
    "bob": "bob@example.com",
    "carol": "carol@yahoo.com",
    "dave": "dave@gmail.com",
    "erin": "erin@example.com",
    "frank": "frank@example.com",
}


def bounce(name: str, to: str, recipient: str, original: bytes = b"", message_id: str | None = None) -> bytes:
    """A bounce of the shape `tests/bounces/<name>.eml`, sent to `to`, about `recipient`, returning `original`."""
    original = original.replace(b"\r\n", b"\n").rstrip(b"\n") + b"\n"
    raw = (HERE / "bounces" / f"{name}.eml").read_bytes()
    for placeholder, value in (
        (b"@@TO@@", to.encode()),
        (b"@@RECIPIENT@@", recipient.encode()),
        (b"@@ORIGINAL_HEADERS@@", original.split(b"\n\n", 1)[0] + b"\n"),
        (b"@@ORIGINAL@@", original),
    ):
        raw = raw.replace(placeholder, value)
    if message_id is not None:
        raw = re.sub(rb"(?im)^Message-Id: .*$", f"Message-Id: <{message_id}>".encode(), raw, count=1)
    return raw


@pytest.fixture
def smtp():
    handler = Handler()
    controller = start(handler)
    handler.port = controller.port
    yield handler
    controller.stop()


@pytest.fixture
def imap():
    with dovecot() as server:
        yield server


def configure(project, smtp, **bounces) -> None:
    project.config(
        sender={"backend": "smtp", "smtp": {"host": "127.0.0.1", "port": smtp.port, "timeout": 5}},
        bounces={"address": BOUNCES, "verp": True, **bounces},
    )


def send_news(project, smtp) -> dict[str, tuple[int, str, bytes]]:
    """Everyone gets the news over SMTP: by name, (send id, envelope sender, the message as it went)."""
    project.campaign("news", NEWS)
    project.customers(*(customer(name, email=email) for name, email in PEOPLE.items()))
    project.events(*({"customer": name, "event": "ping", "at": SENT} for name in PEOPLE))
    assert project.tick(SENT)["news"]["sent"] == len(PEOPLE)
    sends = dict(project.query("SELECT to_email, id FROM send"))
    went = {}
    for envelope in smtp.envelopes:
        (to,) = envelope.rcpt_tos
        name = next(n for n, e in PEOPLE.items() if e == to)
        went[name] = (sends[to], envelope.mail_from, envelope.original_content)
    return went


def outcomes(project) -> dict[str, tuple[bool, list[str]]]:
    """By customer: whether the send is marked bounced, and the kinds of its delivery records."""
    bounced = dict(
        project.query(
            "SELECT c.external_id, s.bounced_at IS NOT NULL FROM send s JOIN customer c ON c.id = s.customer_id"
        )
    )
    kinds: dict[str, list[str]] = {}
    for name, kind in project.query(
        "SELECT c.external_id, d.kind FROM delivery d JOIN send s ON s.id = d.send_id "
        "JOIN customer c ON c.id = s.customer_id ORDER BY d.id"
    ):
        kinds.setdefault(name, []).append(kind)
    return {name: (bool(bounced[name]), kinds.get(name, [])) for name in PEOPLE}


def test_bounces_from_a_real_imap_mailbox_mark_sends_and_suppress_hard_ones(store_project, smtp, imap, monkeypatch):
    project = store_project
    monkeypatch.setenv("BOUNCES_IMAP_PASSWORD", imap.password)
    configure(project, smtp, imap={"host": "127.0.0.1", "port": imap.port, "ssl": False, "username": imap.user})
    went = send_news(project, smtp)
    frank_send = went["frank"][0]
    imap.append(
        bounce("postfix_user_unknown", went["ann"][1], PEOPLE["ann"], went["ann"][2]),
        # sent to the plain bounce address: the send is found by the X-Lifecycle-Send-Id Exim quotes
        bounce("exim_mailbox_full", BOUNCES, PEOPLE["bob"], went["bob"][2]),
        b"\xff\xfe\x00 not a message at all",
        # quotes no header of ours: the send is found by the address alone
        bounce("yahoo_no_account", BOUNCES, PEOPLE["carol"]),
        bounce("gmail_blocked", went["dave"][1], PEOPLE["dave"], went["dave"][2]),
        bounce("out_of_office", BOUNCES, ""),
        bounce("postfix_delayed", went["erin"][1], PEOPLE["erin"], went["erin"][2]),
        # a forged VERP address naming frank's send, about someone else
        bounce(
            "gmail_blocked",
            f"bounces+{frank_send}-0123456789@shop.example",
            "stranger@elsewhere.example",
            message_id="forged@elsewhere.example",
        ),
    )

    output = project.cli("bounces", "--now", LATER).stdout

    assert outcomes(project) == {
        "ann": (True, ["hard bounce 5.1.1"]),
        "bob": (True, ["soft bounce 5.2.2"]),
        "carol": (True, ["hard bounce"]),
        "dave": (True, ["soft bounce 5.7.1"]),
        "erin": (False, []),  # a delay warning: still being tried
        "frank": (False, []),  # the forged VERP address is ignored
    }
    assert sorted(project.query("SELECT email, reason FROM suppression")) == [
        ("ann@example.com", "bounce"),
        ("carol@yahoo.com", "bounce"),
    ]
    assert f"hard bounce 5.1.1: ann@example.com: send {went['ann'][0]} (news step 1)" in output
    assert "soft bounce 5.7.1: stranger@elsewhere.example: no send found" in output
    assert "moved to Errors: message 3 of imap://bounces@127.0.0.1/INBOX: cannot be read as a bounce:" in output
    assert (
        "moved to Errors: message 6 of imap://bounces@127.0.0.1/INBOX (Subject: Out of office: Welcome): not a bounce"
    ) in output
    assert (
        "bounces: 8 messages read, 5 bounced (2 hard, 3 soft), 4 recorded on sends, 2 addresses suppressed, "
        "1 delay warning, 1 forged VERP address ignored, 2 moved to Errors"
    ) in output
    assert imap.folder("INBOX") == []
    assert len(imap.folder("Processed")) == 6
    errors = imap.folder("Errors")
    assert [b"not a message at all" in m for m in errors] == [True, False]
    assert b"Out of office" in errors[1]

    report = json.loads(project.cli("report", "--format", "json", "--now", LATER).stdout)
    assert report["campaigns"]["news"]["bounced"] == 4

    # Nothing is read twice; the same bounce delivered again is recognised and recorded once.
    assert "bounces: 0 messages read" in project.cli("bounces", "--now", LATER).stdout
    imap.append(bounce("postfix_user_unknown", went["ann"][1], PEOPLE["ann"], went["ann"][2]))
    again = project.cli("bounces", "--now", LATER).stdout
    assert "1 message read, 1 bounced (1 hard, 0 soft), 0 recorded on sends, 0 addresses suppressed" in again
    assert outcomes(project)["ann"] == (True, ["hard bounce 5.1.1"])

    # The next news goes to the soft bounces and not to the hard ones.
    project.events(*({"customer": name, "event": "ping", "at": "2026-03-02T10:00:00Z"} for name in PEOPLE))
    project.tick("2026-03-02T10:00:00Z")
    second = project.query(
        "SELECT c.external_id, s.status, s.reason FROM send s JOIN customer c ON c.id = s.customer_id "
        "WHERE s.due_at >= '2026-03-02' ORDER BY c.external_id"
    )
    assert {name: (status, reason) for name, status, reason in second} == {
        "ann": ("skipped", "suppressed"),
        "bob": ("sent", None),
        "carol": ("skipped", "suppressed"),
        "dave": ("sent", None),
        "erin": ("sent", None),
        "frank": ("sent", None),
    }


def test_a_local_maildir_with_processed_messages_deleted(project, smtp):
    configure(project, smtp, maildir={"path": "bounce-mail"}, processed_folder=None)
    went = send_news(project, smtp)
    box = mailbox.Maildir(project.root / "bounce-mail", create=True)
    box.add(bounce("postfix_user_unknown", went["ann"][1], PEOPLE["ann"], went["ann"][2]))
    box.add(b"\xff\xfe\x00 garbage")
    box.add(bounce("exim_mailbox_full", went["bob"][1], PEOPLE["bob"], went["bob"][2]))
    # a test send (`lifecycle send-test`, send id 0) to erin's address bounces: about no send of hers
    test_send = ReturnPaths(load_config(project.root / "config.yaml")).for_send(0)
    box.add(bounce("gmail_blocked", test_send, PEOPLE["erin"], went["erin"][2], message_id="test-send@example"))

    output = project.cli("bounces", "--now", LATER).stdout

    assert "4 messages read, 3 bounced (1 hard, 2 soft), 2 recorded on sends, 1 address suppressed" in output
    assert "soft bounce 5.7.1: erin@example.com: no send found" in output
    assert outcomes(project)["erin"] == (False, [])
    assert outcomes(project)["ann"] == (True, ["hard bounce 5.1.1"])
    assert outcomes(project)["bob"] == (True, ["soft bounce 5.2.2"])
    assert project.query("SELECT email FROM suppression") == [("ann@example.com",)]
    assert len(box) == 0  # processed ones deleted
    assert [m.get_payload() for m in box.get_folder("Errors")] == ["\ufffd\ufffd\x00 garbage"]
    assert "bounces: 0 messages read" in project.cli("bounces", "--now", LATER).stdout


def test_the_daemon_reads_the_bounce_mailbox_after_each_tick(project, smtp):
    configure(project, smtp, maildir={"path": "bounce-mail"})
    went = send_news(project, smtp)
    box = mailbox.Maildir(project.root / "bounce-mail", create=True)
    box.add(bounce("postfix_user_unknown", went["ann"][1], PEOPLE["ann"], went["ann"][2]))
    config = load_config(project.root / "config.yaml")
    engine = create_engine(project.url)
    now = parse_instant(LATER, "UTC")
    daemon = Daemon(config, load_campaigns(config), engine, load_sender(config), clock=lambda: now)

    assert daemon.tick_once() is not None

    assert outcomes(project)["ann"] == (True, ["hard bounce 5.1.1"])
    assert len(box) == 0 and len(box.get_folder("Processed")) == 1
    engine.dispose()


def test_a_mailbox_that_cannot_be_read_is_one_clear_line(project, smtp, imap, monkeypatch):
    monkeypatch.setenv("BOUNCES_IMAP_PASSWORD", "wrong")
    imap_settings = {"host": "127.0.0.1", "port": imap.port, "ssl": False, "username": imap.user}
    configure(project, smtp, imap=imap_settings)
    refused = project.cli("bounces", expect=1).output
    assert f"imap://bounces@127.0.0.1/INBOX on port {imap.port}:" in refused
    assert "AUTHENTICATIONFAILED" in refused or "Authentication failed" in refused

    monkeypatch.delenv("BOUNCES_IMAP_PASSWORD")
    unset = project.cli("bounces", expect=1).output
    assert "bounces.imap.password_env: the environment variable BOUNCES_IMAP_PASSWORD is not set" in unset

    configure(project, smtp)
    assert "bounces: no mailbox to read: set bounces.imap" in project.cli("bounces", expect=1).output

    configure(project, smtp, maildir={"path": "missing"})
    assert "not a Maildir" in project.cli("bounces", expect=1).output


@pytest.mark.parametrize("tls", ["ssl", "starttls"])
def test_the_mailbox_is_read_over_tls(project, smtp, certificate, monkeypatch, tls):
    """Over TLS from the start (IMAPS) or upgraded with STARTTLS, trusting the server's certificate."""
    monkeypatch.setattr(mailboxes, "tls_context", lambda: ssl.create_default_context(cafile=str(certificate[0])))
    with dovecot(certificate=certificate) as server:
        monkeypatch.setenv("BOUNCES_IMAP_PASSWORD", server.password)
        secured = {"ssl": True, "port": server.tls_port} if tls == "ssl" else {"ssl": False, "starttls": True}
        configure(project, smtp, imap={"host": "127.0.0.1", "port": server.port, "username": server.user} | secured)
        went = send_news(project, smtp)
        server.append(bounce("postfix_user_unknown", went["ann"][1], PEOPLE["ann"], went["ann"][2]))

        assert "1 message read, 1 bounced (1 hard, 0 soft)" in project.cli("bounces", "--now", LATER).stdout

        assert outcomes(project)["ann"] == (True, ["hard bounce 5.1.1"])
        assert len(server.folder("Processed")) == 1


def smtp_config(port: int, **bounces) -> Config:
    smtp = {"host": "127.0.0.1", "port": port, "timeout": 5}
    settings = {"from": {"email": "shop@example.com", "name": "Shop"}, "sender": {"backend": "smtp", "smtp": smtp}}
    return Config.model_validate(settings | ({"bounces": bounces} if bounces else {}))


def test_the_smtp_sender_sends_from_the_bounce_address_and_with_verp_names_the_send(smtp, monkeypatch):
    monkeypatch.setenv("LIFECYCLE_SECRET", "test-secret")
    cases = [({}, None), ({"address": BOUNCES}, BOUNCES), ({"address": BOUNCES, "verp": True}, "verp")]
    for bounces, expected in cases:
        smtp.envelopes.clear()
        with SmtpSender(smtp_config(smtp.port, **bounces)) as sender:
            assert all(
                r.ok for r in sender.send_batch([make_email(sender.config, n, f"u{n}@example.com") for n in (7, 8)])
            )
        for send_id, envelope in zip((7, 8), smtp.envelopes, strict=True):
            received = message_from_bytes(envelope.original_content)
            assert parseaddr(received["From"])[1] == "shop@example.com"  # the author stays who it was
            if expected is None:
                assert envelope.mail_from == "shop@example.com"
            elif expected == BOUNCES:
                assert envelope.mail_from == BOUNCES
            else:
                assert re.fullmatch(rf"bounces\+{send_id}-[0-9a-f]{{10}}@shop\.example", envelope.mail_from)
                assert read_verp(sender.config, envelope.mail_from) == (send_id, True)


def test_a_forged_or_foreign_verp_address_names_no_send(monkeypatch):
    monkeypatch.setenv("LIFECYCLE_SECRET", "new-secret")
    monkeypatch.setenv("OLD_SECRETS", "old-secret")
    config = Config.model_validate(
        {"from": {"email": "shop@example.com"}, "old_secret_keys_env": "OLD_SECRETS", "bounces": {"address": BOUNCES}}
    )
    genuine = ReturnPaths(config.model_copy(update={"bounces": config.bounces.model_copy(update={"verp": True})}))
    address = genuine.for_send(41)
    assert read_verp(config, address) == (41, True)
    assert read_verp(config, address.upper()) == (41, True)  # some servers change the case of local parts
    forged = address.replace("+41-", "+42-")  # another send with this one's signature
    assert read_verp(config, forged) == (42, False)
    assert read_verp(config, f"bounces+41-{signature('someone-else', 41)}@shop.example") == (41, False)
    assert read_verp(config, f"bounces+41-{signature('old-secret', 41)}@shop.example") == (41, True)  # rotated
    assert read_verp(config, address.replace("shop.example", "other.example")) is None
    assert read_verp(config, BOUNCES) is None
    assert read_verp(config, "bounces+41@shop.example") is None


def test_a_code_in_the_returned_copy_or_in_an_address_is_not_the_bounce_status():
    quoted = b"Subject: News\nX-Lifecycle-Send-Id: 7\n\nVersion 5.1.1 is out, on 10.4.4.1 and 5.2.2.1"
    yahoo = read_bounce(bounce("yahoo_no_account", BOUNCES, "carol@yahoo.com").replace(b"Subject: Welcome", quoted))
    assert [(f.recipient, f.status, f.hard) for f in yahoo.failures] == [("carol@yahoo.com", None, True)]
    assert yahoo.original_send_id == 7
    exim = read_bounce(bounce("exim_mailbox_full", BOUNCES, "bob@example.com", quoted))
    assert [(f.status, f.hard, f.kind) for f in exim.failures] == [("5.2.2", False, "soft bounce 5.2.2")]
    delayed = read_bounce(bounce("postfix_delayed", BOUNCES, "erin@example.com", quoted))
    assert (delayed.failures, delayed.delayed, delayed.original_send_id) == ((), ("erin@example.com",), 7)
