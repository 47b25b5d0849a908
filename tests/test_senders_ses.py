"""SesSender against moto's server, a local implementation of the SES v2 API: what SES received,
and each class of error. Throttling is the one error moto cannot produce; botocore's Stubber
answers it instead."""

from __future__ import annotations

import datetime as dt
import email
import socket

import boto3
import pytest
from botocore.stub import Stubber
from moto.core import DEFAULT_ACCOUNT_ID
from moto.server import ThreadedMotoServer
from moto.ses.models import ses_backends

from engine.config.settings import Config
from engine.errors import ConfigError
from engine.mail.message import OutgoingEmail, build_email
from engine.mail.rendering import RenderedEmail
from engine.senders import load_sender
from engine.senders.ses import SesSender

REGION = "eu-west-1"
NOW = dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.UTC)
SAME = RenderedEmail("Spring sale", "<p>20% off everything</p>", "20% off everything")


@pytest.fixture(autouse=True)
def credentials(monkeypatch):
    monkeypatch.setenv("SES_TEST_KEY_ID", "testing")
    monkeypatch.setenv("SES_TEST_SECRET", "testing")


@pytest.fixture
def moto_ses():
    """moto's server on a free local port, with the shop's address verified."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    client = boto3.client(
        "sesv2", region_name=REGION, endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    client.create_email_identity(EmailIdentity="shop@example.com")
    yield url
    server.stop()
    ses_backends[DEFAULT_ACCOUNT_ID][REGION].reset()


def sent_messages():
    return ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages


def make_config(endpoint_url: str | None, from_email: str = "shop@example.com", **ses) -> Config:
    return Config.model_validate(
        {
            "from": {"email": from_email, "name": "Shop"},
            "sender": {
                "backend": "ses",
                "ses": {
                    "region": REGION,
                    "access_key_id_env": "SES_TEST_KEY_ID",
                    "secret_access_key_env": "SES_TEST_SECRET",
                    "endpoint_url": endpoint_url,
                    **ses,
                },
            },
        }
    )


def make_email(config: Config, send_id: int, to: str | None = None) -> OutgoingEmail:
    return build_email(
        config,
        send_id=send_id,
        campaign="spring sale",
        marketing=True,
        to=to or f"user{send_id}@example.com",
        to_name="Ann",
        rendered=SAME,
        unsubscribe_url=f"https://shop.example.com/unsubscribe/tok{send_id}",
        now=NOW,
    )


@pytest.fixture
def sender(moto_ses):
    with load_sender(make_config(moto_ses)) as sender:
        yield sender


def test_ses_receives_each_message_byte_for_byte(sender):
    emails = [make_email(sender.config, i) for i in (1, 2, 3)]
    results = sender.send_batch(emails)

    assert [r.send_id for r in results] == [1, 2, 3] and all(r.ok for r in results)
    received = sent_messages()
    assert [m.raw_data.encode() for m in received] == [e.raw for e in emails]
    assert [m.id for m in received] == [r.message_id for r in results]
    assert received[0].source == "shop@example.com"
    assert "user1@example.com" in received[0].destinations
    parsed = email.message_from_bytes(emails[1].raw)
    assert parsed["X-Lifecycle-Send-Id"] == "2"


def test_the_request_names_the_configuration_set_and_tags_the_send(moto_ses):
    sender = SesSender(make_config(moto_ses, configuration_set="events"))
    params = sender.request(make_email(sender.config, 7))

    assert params["ConfigurationSetName"] == "events"
    assert params["EmailTags"] == [{"Name": "send_id", "Value": "7"}, {"Name": "campaign", "Value": "spring_sale"}]
    assert params["Destination"] == {"ToAddresses": ["user7@example.com"]}


def test_an_unverified_sender_is_a_final_refusal_in_ses_words(moto_ses):
    config = make_config(moto_ses, from_email="stranger@example.org")
    with SesSender(config) as sender:
        [result] = sender.send_batch([make_email(config, 1)])

    assert not result.ok and not result.transient and not result.invalid_address
    assert result.error == "ses MessageRejected: Did not have authority to send from email stranger@example.org"
    assert sent_messages() == []


def test_a_bad_address_fails_only_itself(sender):
    emails = [make_email(sender.config, 1), make_email(sender.config, 2, to="nobody"), make_email(sender.config, 3)]
    results = {r.send_id: r for r in sender.send_batch(emails)}

    assert results[1].ok and results[3].ok
    assert not results[2].ok and results[2].invalid_address and not results[2].transient
    assert len(sent_messages()) == 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_api_is_transient():
    with SesSender(make_config(f"http://127.0.0.1:{free_port()}")) as sender:
        results = sender.send_batch([make_email(sender.config, 1), make_email(sender.config, 2)])

    assert [r.send_id for r in results] == [1, 2]
    assert all(not r.ok and r.transient and r.error.startswith("ses unreachable") for r in results)


@pytest.mark.parametrize(
    ("code", "status", "transient", "invalid"),
    [
        ("TooManyRequestsException", 429, True, False),
        ("Throttling", 400, True, False),
        ("LimitExceededException", 400, True, False),
        ("InternalFailure", 500, True, False),
        ("MessageRejected", 400, False, False),
        ("MailFromDomainNotVerifiedException", 400, False, False),
        ("AccountSuspendedException", 400, False, False),
    ],
)
def test_error_classes_moto_cannot_produce(code, status, transient, invalid):
    """Stubbed, since moto never throttles nor fails on its own side."""
    sender = SesSender(make_config(None))
    with Stubber(sender.client) as stub:
        stub.add_client_error("send_email", service_error_code=code, service_message="said so", http_status_code=status)
        stub.add_response("send_email", {"MessageId": "ok-2"})
        results = sender.send_batch([make_email(sender.config, 1), make_email(sender.config, 2)])

    first, second = results
    assert (first.ok, first.transient, first.invalid_address) == (False, transient, invalid)
    assert first.error == f"ses {code}: said so"
    assert second.ok and second.message_id == "ok-2"


def test_missing_credentials_are_a_config_error(monkeypatch):
    monkeypatch.delenv("SES_TEST_SECRET")
    with pytest.raises(ConfigError, match="SES_TEST_SECRET is not set"):
        SesSender(make_config(None))
