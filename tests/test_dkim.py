"""DKIM: messages from the file sender (a real tick) and the SMTP sender (a real SMTP server) carry
one signature a configured key, RSA and Ed25519, which dkimpy, an independent implementation,
verifies against the public keys served through its DNS hook."""

from __future__ import annotations

import base64

import dkim
import pytest
from conftest import customer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from dkim.canonicalization import Relaxed
from hypothesis import given
from hypothesis import strategies as st
from test_senders_smtp import Handler, make_config, make_email, start

from engine.config.settings import Config
from engine.mail.dkim import relaxed_body
from engine.senders.smtp import SmtpSender

WELCOME = """
    name: welcome
    type: transactional
    trigger: {event: signed_up}
    steps: [{template: plain, subject: "Welcome {{ customer.first_name }}"}]
"""
NEWS = """
    name: news
    topic: news
    trigger: {event: signed_up}
    steps: [{template: plain, subject: "News for {{ customer.first_name }}"}]
"""
# What the issue asks every signature to cover, when the message has the field.
MUST_SIGN = {"from", "subject", "date", "to", "message-id", "list-unsubscribe", "list-unsubscribe-post"}


def pem(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def txt_record(key) -> bytes:
    """The TXT record an operator publishes at SELECTOR._domainkey.DOMAIN (docs/operations.md)."""
    public = key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


@pytest.fixture(scope="module")
def keys():
    return {
        ("s1", "shop.example"): rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ("s2", "shop.example"): ed25519.Ed25519PrivateKey.generate(),
    }


@pytest.fixture
def signing(keys, monkeypatch):
    """config.yaml's dkim: entries (their keys in the environment) and the DNS dkimpy asks."""
    entries = []
    for n, ((selector, domain), key) in enumerate(keys.items()):
        monkeypatch.setenv(f"DKIM_KEY_{n}", pem(key))
        entries.append({"domain": domain, "selector": selector, "private_key_env": f"DKIM_KEY_{n}"})
    records = {f"{s}._domainkey.{d}.".encode(): txt_record(k) for (s, d), k in keys.items()}

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name if name.endswith(b".") else name + b".")

    return entries, dns


def verified(raw: bytes, dns) -> list[tuple[bool, str, set[str]]]:
    """For each DKIM-Signature, top down: (verified, algorithm, the fields it signs)."""
    count = raw.split(b"\r\n\r\n", 1)[0].lower().count(b"\ndkim-signature:") + raw.lower().startswith(
        b"dkim-signature:"
    )
    results = []
    for index in range(count):
        verifier = dkim.DKIM(raw)
        try:
            ok = verifier.verify(idx=index, dnsfunc=dns)
        except dkim.ValidationError:  # a body that does not match its hash
            ok = False
        signature = verifier.signature_fields
        names = {n.strip().decode().lower() for n in signature[b"h"].split(b":")}
        results.append((ok, signature[b"a"].decode(), names))
    return results


def test_a_tick_signs_each_email_with_every_key_and_dkimpy_verifies_them(project, signing):
    entries, dns = signing
    project.config(dkim=entries)
    project.template("plain", "Hello {{ customer.first_name }}.")
    project.campaign("welcome", WELCOME)
    project.campaign("news", NEWS)
    project.customers(customer("ann"), customer("bob"))
    project.events(*({"customer": c, "event": "signed_up", "at": "2026-03-01T09:00:00Z"} for c in ("ann", "bob")))
    project.tick("2026-03-01T09:05:00Z")
    files = sorted((project.root / "outbox").glob("*.eml"))
    assert len(files) == 4
    for path in files:
        raw = path.read_bytes()
        results = verified(raw, dns)
        assert [(ok, algorithm) for ok, algorithm, _ in results] == [(True, "rsa-sha256"), (True, "ed25519-sha256")]
        present = {line.split(b":")[0].decode().lower() for line in raw.split(b"\r\n\r\n")[0].split(b"\r\n")}
        for _, _, names in results:
            assert MUST_SIGN & present <= names
        if b"List-Unsubscribe-Post" in raw:
            assert {"list-unsubscribe", "list-unsubscribe-post", "list-id", "feedback-id"} <= results[0][2]


@pytest.mark.parametrize(
    ("what", "change"),
    [
        ("subject", (b"Subject: Hello", b"Subject: Hullo")),
        (
            "unsubscribe link",
            (
                b"List-Unsubscribe: <https://shop.example.com/unsubscribe/tok",
                b"List-Unsubscribe: <https://evil.example/unsubscribe/tok",
            ),
        ),
        ("body", (b"Hello 7", b"Hello 8")),
    ],
)
def test_a_changed_signed_field_or_body_fails_verification(server_sender, signing, what, change):
    entries, dns = signing
    sender, server = server_sender(entries)
    email = make_email(sender.config, 7, "ann@example.com", subject="Hello Ann")
    assert sender.send_batch([email])[0].ok
    received = server.envelopes[-1].content
    assert received.startswith(b"DKIM-Signature:")
    assert all(ok for ok, _, _ in verified(received, dns))
    tampered = received.replace(*change)
    assert tampered != received, what
    assert not any(ok for ok, _, _ in verified(tampered, dns))


@pytest.fixture
def server_sender():
    """A real SMTP server, and SMTP senders to it signing with the entries given."""
    handler = Handler()
    controller = start(handler)
    made = []

    def make(entries):
        config = make_config(controller.port)
        made.append(SmtpSender(Config.model_validate({**config.model_dump(by_alias=True), "dkim": entries})))
        return made[-1], handler

    yield make
    for sender in made:
        sender.close()
    controller.stop()


def test_a_missing_or_unusable_key_is_a_clear_error_with_the_keys_path(project, monkeypatch):
    project.template("plain", "Hello.")
    project.campaign("welcome", WELCOME)
    entries = [
        {"domain": "shop.example", "selector": "s1", "private_key_env": "DKIM_MISSING"},
        {"domain": "shop.example", "selector": "s2", "private_key_env": "DKIM_GARBAGE"},
        {"domain": "shop.example", "selector": "s3", "private_key_env": "DKIM_EC"},
    ]
    monkeypatch.delenv("DKIM_MISSING", raising=False)
    monkeypatch.setenv("DKIM_GARBAGE", "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    monkeypatch.setenv("DKIM_EC", pem(ec.generate_private_key(ec.SECP256R1())))
    project.config(dkim=entries)
    output = project.cli("validate", expect=1).output
    assert "config.yaml:" in output
    assert "dkim[0].private_key_env: the environment variable DKIM_MISSING is not set" in output
    assert "dkim[1].private_key_env: DKIM_GARBAGE does not hold an unencrypted PEM private key" in output
    assert "dkim[2].private_key_env: DKIM_EC holds a key DKIM cannot use: use RSA or Ed25519" in output
    # The tick refuses to start rather than send unsigned mail.
    tick = project.cli("tick", "--now", "2026-03-01T09:05:00Z", expect=1)
    assert "DKIM_MISSING is not set" in tick.output


@given(
    st.lists(st.text(st.sampled_from(["a", "é", " ", "\t", "=", "."]), max_size=20), max_size=12),
    st.sampled_from(["\r\n", "\r\n\r\n"]),
)
def test_the_relaxed_body_is_dkimpys(lines, end):
    """Spaces, tabs and empty lines anywhere; the message always ends with a line break (its last boundary)."""
    body = ("\r\n".join(lines) + end).encode()
    assert relaxed_body(body) == Relaxed.canonicalize_body(body)
