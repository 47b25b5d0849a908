"""The SES webhook: SES events (in SNS notifications) as provider-neutral events, table-driven, and
signed SNS posts through the app with a certificate made here, fetched through an injected fetcher."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from conftest import customer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from starlette.testclient import TestClient

from engine.config.settings import load_config
from engine.delivery.events import EventType, RejectReason
from engine.web import create_app
from engine.web.webhooks import ses
from engine.web.webhooks.flow import BadPost

TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-events"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000.pem"
SUBSCRIBE_URL = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=x&Token=t"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # plays SNS's part
NEWS = """
type: marketing
topic: news
trigger: {event: ping}
steps: [{template: plain, subject: News}]
"""


def certificate(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def mail(send_id: int | None = 12, to: str = "ann@example.com", tag: bool = False) -> dict:
    headers = [{"name": "From", "value": "shop@example.com"}]
    if send_id is not None and not tag:
        headers.append({"name": "X-Lifecycle-Send-Id", "value": str(send_id)})
    return {
        "timestamp": "2026-03-01T10:00:00.000Z",
        "messageId": "0102018e-ses",
        "destination": [to],
        "headers": headers,
        "tags": {"send_id": [str(send_id)]} if tag else {},
    }


def notification(event: dict, message_id: str = "sns-1") -> bytes:
    return json.dumps({"Type": "Notification", "MessageId": message_id, "Message": json.dumps(event)}).encode()


WHEN = dt.datetime(2026, 3, 1, 10, 5, tzinfo=dt.UTC)
STAMP = "2026-03-01T10:05:00.000Z"


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"eventType": "Delivery", "delivery": {"timestamp": STAMP}}, (EventType.DELIVERED, False, None)),
        ({"eventType": "Open", "open": {"timestamp": STAMP}}, (EventType.OPENED, False, None)),
        ({"eventType": "Click", "click": {"timestamp": STAMP, "link": "https://x"}}, (EventType.CLICKED, False, None)),
        (
            {"eventType": "Bounce", "bounce": {"bounceType": "Permanent", "timestamp": STAMP}},
            (EventType.BOUNCED, True, None),
        ),
        (
            {"eventType": "Bounce", "bounce": {"bounceType": "Transient", "timestamp": STAMP}},
            (EventType.BOUNCED, False, None),
        ),
        (
            {"notificationType": "Bounce", "bounce": {"bounceType": "Undetermined", "timestamp": STAMP}},
            (EventType.BOUNCED, False, None),
        ),
        ({"eventType": "Complaint", "complaint": {"timestamp": STAMP}}, (EventType.COMPLAINED, False, None)),
        (
            {"eventType": "Reject", "reject": {"reason": "Bad content", "timestamp": STAMP}},
            (EventType.REJECTED, False, RejectReason.OTHER),
        ),
    ],
)
def test_each_recorded_ses_event_maps_to_its_neutral_event(event, expected):
    [parsed] = ses.parse(notification({**event, "mail": mail()}))

    assert (parsed.type, parsed.hard, parsed.reject_reason) == expected
    assert (parsed.send_id, parsed.provider_event_id, parsed.email) == (12, "sns-1", "ann@example.com")
    assert parsed.at == WHEN


def test_the_send_id_comes_from_the_tag_when_the_header_is_missing():
    [parsed] = ses.parse(notification({"eventType": "Delivery", "mail": mail(34, tag=True)}))
    assert parsed.send_id == 34


def test_a_bounce_names_its_recipient_and_each_recipient_gets_its_own_id():
    bounce = {
        "bounceType": "Permanent",
        "bouncedRecipients": [{"emailAddress": "a@example.com"}, {"emailAddress": "b@example.com"}],
    }
    parsed = ses.parse(notification({"eventType": "Bounce", "bounce": bounce, "mail": mail()}))
    assert [(p.email, p.provider_event_id, p.suppression) for p in parsed] == [
        ("a@example.com", "sns-1/a@example.com", "bounce"),
        ("b@example.com", "sns-1/b@example.com", "bounce"),
    ]


@pytest.mark.parametrize("kind", ["Send", "DeliveryDelay", "Rendering Failure", "Subscription", None])
def test_events_not_recorded_are_skipped(kind):
    assert ses.parse(notification({"eventType": kind, "mail": mail()})) == []


@pytest.mark.parametrize("send_id", ["abc", "9" * 400, "١٢"])
def test_an_unusable_send_id_is_none(send_id):
    event = {
        "eventType": "Delivery",
        "mail": {**mail(), "headers": [{"name": "X-Lifecycle-Send-Id", "value": send_id}]},
    }
    assert ses.parse(notification(event))[0].send_id is None


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        json.dumps({"Type": "Notification", "Message": "{nope"}).encode(),
        notification({"eventType": "Open"}),
    ],
)
def test_a_body_sns_would_never_send_is_a_bad_post(body):
    with pytest.raises(BadPost):
        ses.parse(body)


# -- signed posts through the app ------------------------------------------------------------------


def sign(message: dict, key: rsa.RSAPrivateKey = KEY, version: str = "1") -> dict:
    message = {**message, "SignatureVersion": version, "SigningCertURL": message.get("SigningCertURL", CERT_URL)}
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    data = ses.string_to_sign(message)
    return {**message, "Signature": base64.b64encode(key.sign(data, padding.PKCS1v15(), algorithm)).decode()}


def sns_message(event: dict, message_id: str = "sns-1", age: dt.timedelta = dt.timedelta(seconds=5)) -> dict:
    stamp = (dt.datetime.now(dt.UTC) - age).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": TOPIC,
        "Message": json.dumps(event),
        "Timestamp": stamp,
    }


class Sns:
    """Plays SNS's web server: serves the signing certificate and records subscription confirmations."""

    def __init__(self) -> None:
        self.fetched: list[str] = []
        self.files = {CERT_URL: certificate(KEY)}

    def __call__(self, url: str) -> bytes:
        self.fetched.append(url)
        return self.files.get(url, b"<ConfirmSubscriptionResponse/>")


@pytest.fixture
def sns(monkeypatch) -> Sns:
    fake = Sns()
    monkeypatch.setattr(ses, "fetcher", fake)
    monkeypatch.setattr(ses, "KEYS", {})
    return fake


@pytest.fixture
def app(project, sns):
    project.config(sender={"ses": {"topic_arns": [TOPIC]}})
    project.campaign("news", NEWS)
    project.customers(customer("ann"), customer("sara"))
    project.events(*({"customer": n, "event": "ping", "at": "2026-03-01T10:00:00Z"} for n in ("ann", "sara")))
    project.tick("2026-03-01T10:00:00Z")
    project.client = TestClient(create_app(load_config(project.root / "config.yaml")))
    project.sends = dict(
        project.query("SELECT c.external_id, s.id FROM send s JOIN customer c ON c.id = s.customer_id")
    )
    return project


def post(app, message: dict | bytes):
    body = message if isinstance(message, bytes) else json.dumps(message).encode()
    return app.client.post("/webhooks/ses", content=body, headers={"Content-Type": "text/plain; charset=UTF-8"})


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_signed_notification_records_suppresses_and_a_replay_changes_nothing(app, sns, version):
    bounce = {
        "eventType": "Bounce",
        "bounce": {"bounceType": "Permanent", "bouncedRecipients": [{"emailAddress": "sara@example.com"}]},
        "mail": mail(app.sends["sara"], to="sara@example.com"),
    }
    delivered = {"eventType": "Delivery", "mail": mail(app.sends["ann"])}
    posts = [sign(sns_message(bounce, "m1"), version=version), sign(sns_message(delivered, "m2"), version=version)]

    assert [post(app, p).json() for p in posts] == [{"recorded": 1, "suppressed": 1}, {"recorded": 1, "suppressed": 0}]
    assert [post(app, p).json() for p in posts] == [{"recorded": 0, "suppressed": 0}] * 2
    assert sorted(app.query("SELECT kind FROM delivery")) == [("Bounce/Permanent",), ("Delivery",)]
    assert app.query("SELECT email, reason FROM suppression") == [("sara@example.com", "bounce")]
    assert sns.fetched == [CERT_URL]  # the certificate is fetched once


def test_forged_stale_unsigned_and_foreign_posts_are_refused(app, sns):
    event = {"eventType": "Complaint", "mail": mail(app.sends["ann"])}
    good = sign(sns_message(event))
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = {
        "unsigned": {k: v for k, v in good.items() if k != "Signature"},
        "altered": {**good, "Message": json.dumps({**event, "eventType": "Delivery"})},
        "other key": sign(sns_message(event), key=other_key),
        "stale": sign(sns_message(event, age=dt.timedelta(hours=1, minutes=1))),
        "other topic": sign({**sns_message(event), "TopicArn": "arn:aws:sns:eu-west-1:999:theirs"}),
        "cert elsewhere": sign({**sns_message(event), "SigningCertURL": "https://evil.example.com/cert.pem"}),
        "cert over http": sign({**sns_message(event), "SigningCertURL": CERT_URL.replace("https", "http")}),
        "cert on a look-alike host": sign(
            {**sns_message(event), "SigningCertURL": "https://sns.eu-west-1.amazonaws.com.evil.example/c.pem"}
        ),
        "unknown version": {**good, "SignatureVersion": "3"},
        "garbage": b"\xff not json",
    }
    answers = {name: post(app, message).status_code for name, message in refused.items()}

    assert answers == dict.fromkeys(refused, 403)
    assert app.query("SELECT count(*) FROM delivery") == [(0,)]
    assert app.query("SELECT count(*) FROM suppression") == [(0,)]
    assert sns.fetched == [CERT_URL]  # no other host was ever asked


def subscription(subscribe_url: str) -> dict:
    return {
        "Type": "SubscriptionConfirmation",
        "MessageId": "sub-1",
        "Token": "t",
        "TopicArn": TOPIC,
        "Message": "You have chosen to subscribe to the topic.",
        "SubscribeURL": subscribe_url,
        "Timestamp": dt.datetime.now(dt.UTC).isoformat(),
    }


def test_a_subscription_confirmation_is_confirmed_at_its_subscribe_url(app, sns):
    answer = post(app, sign(subscription(SUBSCRIBE_URL)))

    assert answer.status_code == 200 and answer.json() == {"recorded": 0, "suppressed": 0}
    assert sns.fetched == [CERT_URL, SUBSCRIBE_URL]


def test_a_subscribe_url_off_amazon_is_never_fetched(app, sns):
    answer = post(app, sign(subscription("https://evil.example.com/?Action=ConfirmSubscription")))

    assert answer.status_code == 400
    assert sns.fetched == [CERT_URL]


def test_with_no_topic_configured_every_post_is_refused(app, sns):
    app.config()
    app.client = TestClient(create_app(load_config(app.root / "config.yaml")))
    assert post(app, sign(sns_message({"eventType": "Open", "mail": mail()}))).status_code == 403
