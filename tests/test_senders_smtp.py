"""SmtpSender against a real SMTP server (aiosmtpd) on a loopback port."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from engine.config.settings import Config
from engine.errors import ConfigError
from engine.mail.message import build_email
from engine.mail.rendering import RenderedEmail
from engine.senders import smtp as smtp_module
from engine.senders.smtp import SmtpSender

NOW = dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.UTC)


class Handler:
    """Collects envelopes; answers RCPT by the local part: bad* -> 550, later* -> 451."""

    def __init__(self) -> None:
        self.envelopes = []
        self.connections = 0
        self.drop_after_first = False
        self.say_421_after_first = False
        self.always_421 = False

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        if not getattr(session, "counted", False):  # STARTTLS means a second EHLO on one connection
            session.counted = True
            self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.drop_after_first and getattr(session, "delivered", 0) >= 1:
            server.transport.close()  # hang up without a word, as an idle-timeout would
            return "421 closing"
        if self.always_421 or (self.say_421_after_first and getattr(session, "delivered", 0) >= 1):
            return "421 4.4.2 idle too long, closing connection"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("bad"):
            return f"550 5.1.1 <{address}>: no such user"
        if address.startswith("later"):
            return "451 4.3.0 mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        session.delivered = getattr(session, "delivered", 0) + 1
        return "250 Message accepted"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(handler: Handler, **kwargs) -> Controller:
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **kwargs)
    controller.start()
    return controller


@pytest.fixture
def server():
    handler = Handler()
    controller = start(handler)
    handler.port = controller.port
    yield handler
    controller.stop()


def make_config(port: int, **smtp) -> Config:
    return Config.model_validate(
        {
            "from": {"email": "shop@example.com", "name": "Shop"},
            "sender": {"backend": "smtp", "smtp": {"host": "127.0.0.1", "port": port, "timeout": 5, **smtp}},
        }
    )


def make_email(
    config: Config,
    send_id: int,
    to: str,
    *,
    to_name: str | None = "Ann",
    subject: str = "Welcome",
    marketing: bool = True,
):
    rendered = RenderedEmail(subject, f"<p>Hello {send_id}</p>", f"Hello {send_id}")
    return build_email(
        config,
        send_id=send_id,
        campaign="welcome",
        marketing=marketing,
        to=to,
        to_name=to_name,
        rendered=rendered,
        unsubscribe_url=f"https://shop.example.com/unsubscribe/tok{send_id}",
        now=NOW,
    )


@pytest.fixture
def sender(server):
    sender = SmtpSender(make_config(server.port))
    yield sender
    sender.close()


def by_id(results):
    return {r.send_id: r for r in results}


def test_every_message_arrives_whole_with_its_headers(server, sender):
    emails = [make_email(sender.config, i, f"user{i}@example.com") for i in (1, 2, 3)]
    results = sender.send_batch(emails)

    assert all(r.ok for r in results)
    assert by_id(results)[2].message_id == emails[1].message_id
    assert len(server.envelopes) == 3
    for email, envelope in zip(emails, server.envelopes, strict=True):
        assert envelope.mail_from == "shop@example.com"
        assert envelope.rcpt_tos == [email.to]
        assert envelope.original_content == email.raw  # byte for byte
        received = message_from_bytes(envelope.original_content, policy=default_policy)
        assert received["X-Lifecycle-Send-Id"] == str(email.send_id)
        assert received["List-Unsubscribe"] == f"<https://shop.example.com/unsubscribe/tok{email.send_id}>"
        assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert received.get_body(("plain",)).get_content().strip() == email.text
        assert received.get_body(("html",)).get_content().strip() == email.html


def test_one_connection_serves_several_batches(server, sender):
    first = sender.send_batch([make_email(sender.config, 1, "a@example.com")])
    second = sender.send_batch(
        [make_email(sender.config, 2, "b@example.com"), make_email(sender.config, 3, "c@example.com")]
    )

    assert all(r.ok for r in first + second)
    assert server.connections == 1
    assert len(server.envelopes) == 3


def test_close_quits_and_the_next_batch_opens_a_new_connection(server, sender):
    sender.send_batch([make_email(sender.config, 1, "a@example.com")])
    sender.close()
    sender.close()  # twice is harmless
    assert sender.send_batch([make_email(sender.config, 2, "b@example.com")])[0].ok
    assert server.connections == 2


def test_a_rejected_recipient_fails_only_its_own_message(server, sender):
    emails = [
        make_email(sender.config, 1, "a@example.com"),
        make_email(sender.config, 2, "bad@example.com"),
        make_email(sender.config, 3, "c@example.com"),
    ]
    results = by_id(sender.send_batch(emails))

    assert results[1].ok and results[3].ok
    bad = results[2]
    assert not bad.ok and not bad.transient and bad.invalid_address
    assert bad.error.startswith("smtp 550 ") and "no such user" in bad.error
    assert [e.rcpt_tos for e in server.envelopes] == [["a@example.com"], ["c@example.com"]]
    assert server.connections == 1


def test_a_451_is_transient(server, sender):
    results = by_id(
        sender.send_batch(
            [make_email(sender.config, 1, "later@example.com"), make_email(sender.config, 2, "a@example.com")]
        )
    )

    assert not results[1].ok and results[1].transient and not results[1].invalid_address
    assert results[1].error.startswith("smtp 451 ")
    assert results[2].ok


def test_a_dropped_connection_is_reopened_and_the_message_retried(server, sender):
    server.drop_after_first = True
    emails = [make_email(sender.config, i, f"user{i}@example.com") for i in (1, 2, 3)]
    results = sender.send_batch(emails)

    assert all(r.ok for r in results), results
    assert sorted(e.rcpt_tos[0] for e in server.envelopes) == [e.to for e in emails]
    assert server.connections == 3


def test_a_421_closing_the_channel_is_followed_by_a_new_connection(server, sender):
    server.say_421_after_first = True
    results = sender.send_batch(
        [make_email(sender.config, 1, "a@example.com"), make_email(sender.config, 2, "b@example.com")]
    )

    assert all(r.ok for r in results), results
    assert server.connections == 2


def test_a_server_that_keeps_closing_gives_a_transient_failure(server, sender):
    server.always_421 = True
    results = sender.send_batch([make_email(sender.config, 1, "a@example.com")])

    assert not results[0].ok and results[0].transient
    assert "421" in results[0].error
    assert server.connections == 2  # the message was tried once more on a fresh connection


def test_a_connection_lost_between_batches_is_reopened(server):
    sender = SmtpSender(make_config(server.port))
    assert sender.send_batch([make_email(sender.config, 1, "a@example.com")])[0].ok
    sender.connection.sock.shutdown(socket.SHUT_RDWR)  # as if the server timed us out while idle

    assert sender.send_batch([make_email(sender.config, 2, "b@example.com")])[0].ok
    assert server.connections == 2
    sender.close()


def test_an_unreachable_server_fails_the_batch_transiently_and_quickly():
    sender = SmtpSender(make_config(free_port()))
    config = sender.config
    results = sender.send_batch([make_email(config, 1, "a@example.com"), make_email(config, 2, "b@example.com")])

    assert [r.send_id for r in results] == [1, 2]
    assert all(not r.ok and r.transient for r in results)
    assert "cannot connect to smtp server 127.0.0.1" in results[0].error


def test_header_injection_through_names_and_subject_is_neutralised(server, sender):
    evil = "Eve\r\nBcc: victim@example.com"
    email = make_email(sender.config, 1, "eve@example.com", to_name=evil, subject=evil)
    assert sender.send_batch([email])[0].ok

    envelope = server.envelopes[0]
    assert envelope.rcpt_tos == ["eve@example.com"]
    received = message_from_bytes(envelope.original_content, policy=default_policy)
    assert received["Bcc"] is None
    assert b"\nBcc:" not in envelope.original_content
    assert "Bcc: victim@example.com" in received["Subject"]  # kept as text on the one Subject line
    assert [a.addr_spec for a in received["To"].addresses] == ["eve@example.com"]


def test_a_username_without_its_password_variable_is_a_config_error(monkeypatch):
    monkeypatch.delenv("SMTP_TEST_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="SMTP_TEST_PASSWORD is not set"):
        SmtpSender(make_config(25, username="shop", password_env="SMTP_TEST_PASSWORD"))
    with pytest.raises(ConfigError, match="password_env is not"):
        SmtpSender(make_config(25, username="shop"))


# --- TLS: a throwaway CA-less self-signed certificate for 127.0.0.1 ---------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


@pytest.fixture
def trust(certificate, monkeypatch):
    """The sender trusts the test certificate instead of the system's CAs."""
    cert_file, _ = certificate
    monkeypatch.setattr(smtp_module, "tls_context", lambda: ssl.create_default_context(cafile=str(cert_file)))


def server_context(certificate) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*map(str, certificate))
    return context


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"shop", b"s3cret")
    return AuthResult(success=ok, handled=False)  # aiosmtpd answers 535 itself


def test_starttls_then_login_with_the_password_from_the_environment(certificate, trust, monkeypatch):
    monkeypatch.setenv("SMTP_TEST_PASSWORD", "s3cret")
    handler = Handler()
    controller = start(
        handler,
        tls_context=server_context(certificate),
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
    )
    try:
        sender = SmtpSender(
            make_config(controller.port, starttls=True, username="shop", password_env="SMTP_TEST_PASSWORD")
        )
        results = sender.send_batch([make_email(sender.config, 1, "a@example.com")])
        sender.close()
    finally:
        controller.stop()
    assert results[0].ok, results
    assert handler.envelopes[0].rcpt_tos == ["a@example.com"]


def test_a_wrong_password_fails_the_batch_transiently(certificate, trust, monkeypatch):
    monkeypatch.setenv("SMTP_TEST_PASSWORD", "wrong")
    controller = start(
        Handler(),
        tls_context=server_context(certificate),
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
    )
    try:
        sender = SmtpSender(
            make_config(controller.port, starttls=True, username="shop", password_env="SMTP_TEST_PASSWORD")
        )
        results = sender.send_batch(
            [make_email(sender.config, 1, "a@example.com"), make_email(sender.config, 2, "b@example.com")]
        )
        sender.close()
    finally:
        controller.stop()
    assert all(not r.ok and r.transient for r in results)
    assert "smtp login as shop refused" in results[0].error


def test_implicit_tls(certificate, trust):
    handler = Handler()
    controller = start(handler, ssl_context=server_context(certificate))
    try:
        sender = SmtpSender(make_config(controller.port, ssl=True))
        results = sender.send_batch([make_email(sender.config, 1, "a@example.com")])
        sender.close()
    finally:
        controller.stop()
    assert results[0].ok, results
    assert len(handler.envelopes) == 1
