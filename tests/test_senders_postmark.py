"""PostmarkSender against a local HTTP server standing in for Postmark's batch API."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
from dataclasses import replace

import pytest
from standin import serving

from engine.config.settings import Config
from engine.errors import ConfigError
from engine.mail.message import OutgoingEmail, build_email
from engine.mail.rendering import RenderedEmail
from engine.senders import load_sender
from engine.senders.postmark import PostmarkSender

TOKEN = "server-token-1"
NOW = dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.UTC)
SAME = RenderedEmail("Spring sale", "<p>20% off everything</p>", "20% off everything")
REQUIRED = {"From", "To", "Subject", "Headers", "MessageStream", "Metadata"}


def shape_problems(method: str, path: str, headers, body) -> list[str]:
    """Everything Postmark would refuse, as readable complaints."""
    problems = []
    if method != "POST" or path != "/email/batch":
        problems.append(f"{method} {path}")
    if headers.get("X-Postmark-Server-Token") != TOKEN:
        problems.append(f"X-Postmark-Server-Token: {headers.get('X-Postmark-Server-Token')}")
    if headers.get("Content-Type") != "application/json" or headers.get("Accept") != "application/json":
        problems.append(f"Content-Type {headers.get('Content-Type')}, Accept {headers.get('Accept')}")
    if not isinstance(body, list):
        return [*problems, "body is not a JSON list"]
    if not 1 <= len(body) <= 500:
        problems.append(f"{len(body)} messages")
    for m in body:
        if missing := REQUIRED - m.keys():
            problems.append(f"a message without {sorted(missing)}")
        if not (m.get("HtmlBody") or m.get("TextBody")):
            problems.append("a message without a body")
        if not isinstance(m.get("Metadata", {}).get("send_id"), str):
            problems.append(f"Metadata {m.get('Metadata')}")
        for h in m.get("Headers", []):
            if set(h) != {"Name", "Value"} or any(ch in h["Name"] + h["Value"] for ch in "\r\n"):
                problems.append(f"header {h!r}")
    return problems


def accepted(body) -> tuple[int, dict, bytes]:
    answers = [{"ErrorCode": 0, "Message": "OK", "MessageID": f"pm-{m['Metadata']['send_id']}"} for m in body]
    return 200, {"Content-Type": "application/json"}, json.dumps(answers).encode()


class FakePostmark:
    """Records each request; `answer(body)` decides the (status, headers, body) of the reply."""

    def __init__(self) -> None:
        self.bodies: list = []
        self.problems: list[str] = []
        self.lock = threading.Lock()
        self.answer = accepted

    def handle(self, method: str, path: str, headers, raw: bytes):
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with self.lock:
            self.problems += shape_problems(method, path, headers, body)
            self.bodies.append(body)
            return self.answer(body)


@pytest.fixture
def api():
    with serving(FakePostmark()) as fake:
        yield fake


@pytest.fixture(autouse=True)
def token(monkeypatch):
    monkeypatch.setenv("POSTMARK_TEST_TOKEN", TOKEN)


def make_config(base_url: str, **postmark) -> Config:
    return Config.model_validate(
        {
            "from": {"email": "shop@example.com", "name": "Shop"},
            "reply_to": "help@example.com",
            "sender": {
                "backend": "postmark",
                "postmark": {"server_token_env": "POSTMARK_TEST_TOKEN", "base_url": base_url, **postmark},
            },
        }
    )


def make_email(config: Config, send_id: int, to: str | None = None, marketing: bool = True) -> OutgoingEmail:
    return build_email(
        config,
        send_id=send_id,
        campaign="spring",
        marketing=marketing,
        to=to or f"user{send_id}@example.com",
        to_name="Ann",
        rendered=SAME,
        unsubscribe_url=f"https://shop.example.com/unsubscribe/tok{send_id}",
        now=NOW,
    )


@pytest.fixture
def sender(api):
    with load_sender(make_config(api.base_url)) as sender:
        assert isinstance(sender, PostmarkSender)
        yield sender


def by_id(results):
    return {r.send_id: r for r in results}


def test_the_request_carries_the_whole_message(api, sender):
    email = make_email(sender.config, 42)
    result = sender.send_batch([email])[0]

    assert api.problems == []
    assert result.ok and result.message_id == "pm-42"
    assert api.bodies[0] == [
        {
            "From": '"Shop" <shop@example.com>',
            "To": '"Ann" <user42@example.com>',
            "Subject": "Spring sale",
            "HtmlBody": SAME.html,
            "TextBody": SAME.text,
            "ReplyTo": "help@example.com",
            "MessageStream": "broadcast",
            "Metadata": {"send_id": "42"},
            "Headers": [
                {"Name": "X-Lifecycle-Campaign", "Value": "spring"},
                {"Name": "X-Lifecycle-Send-Id", "Value": "42"},
                {"Name": "List-Id", "Value": "<spring.example.com>"},
                {"Name": "Feedback-ID", "Value": "spring:marketing:example.com"},
                {"Name": "List-Unsubscribe", "Value": "<https://shop.example.com/unsubscribe/tok42>"},
                {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"},
                {"Name": "Message-ID", "Value": email.message_id},
            ],
        }
    ]


def test_transactional_mail_goes_to_the_transactional_stream_and_streams_are_configurable(api):
    sender = PostmarkSender(
        make_config(api.base_url, message_stream_marketing="news", message_stream_transactional="receipts")
    )
    sender.send_batch([make_email(sender.config, 1), make_email(sender.config, 2, marketing=False)])

    assert api.problems == []
    assert [m["MessageStream"] for m in api.bodies[0]] == ["news", "receipts"]
    assert "List-Unsubscribe" not in {h["Name"] for h in api.bodies[0][1]["Headers"]}


def test_batches_hold_at_most_500_messages(api, sender):
    template = make_email(sender.config, 1)
    emails = [replace(template, send_id=i, to=f"user{i}@example.com") for i in range(1, 1202)]
    results = sender.send_batch(emails)

    assert api.problems == []
    assert [len(b) for b in api.bodies] == [500, 500, 201]
    assert len(results) == 1201 and all(r.ok for r in results)
    assert by_id(results)[1201].message_id == "pm-1201"


def test_no_header_value_carries_a_newline(api, sender):
    email = OutgoingEmail(
        send_id=5,
        campaign="spring",
        to="eve@example.com",
        from_email="shop@example.com",
        from_name="Shop\r\nBcc: victim@example.com",
        subject="Hi\r\nBcc: victim@example.com",
        html="<p>x</p>",
        text="",
        message_id="<5@example.com>",
        headers={"X-Lifecycle-Campaign": "spring\r\nBcc: victim@example.com", "Bcc": "victim@example.com"},
    )
    assert sender.send_batch([email])[0].ok

    sent = api.bodies[0][0]
    assert api.problems == []
    assert sent["Subject"] == "Hi Bcc: victim@example.com" and "\n" not in sent["From"]
    assert sent["Headers"][0] == {"Name": "X-Lifecycle-Campaign", "Value": "spring Bcc: victim@example.com"}
    assert "Bcc" not in {h["Name"] for h in sent["Headers"]} and "TextBody" not in sent
    assert sent["To"] == "eve@example.com"


def test_a_bad_recipient_fails_only_itself(api, sender):
    def answer(body):
        answers = []
        for m in body:
            if "nope" in m["To"]:
                answers.append({"ErrorCode": 300, "Message": "Invalid 'To' address: 'nope@'."})
            elif "gone" in m["To"]:
                answers.append(
                    {
                        "ErrorCode": 406,
                        "Message": "You tried to send to recipient(s) that have been marked as inactive.",
                    }
                )
            elif "pending" in m["To"]:
                answers.append({"ErrorCode": 412, "Message": "Your account is pending approval."})
            else:
                answers.append({"ErrorCode": 0, "Message": "OK", "MessageID": "ok-" + m["Metadata"]["send_id"]})
        return 200, {}, json.dumps(answers).encode()

    api.answer = answer
    config = sender.config
    results = by_id(
        sender.send_batch(
            [
                make_email(config, 1),
                make_email(config, 2, "nope@"),
                make_email(config, 3, "gone@example.com"),
                make_email(config, 4, "pending@example.com"),
                make_email(config, 5),
            ]
        )
    )

    assert results[1].ok and results[5].ok and results[5].message_id == "ok-5"
    assert not results[2].ok and results[2].invalid_address and not results[2].transient
    assert results[2].error == "postmark 300: Invalid 'To' address: 'nope@'."
    assert not results[3].ok and results[3].invalid_address and "inactive" in results[3].error
    assert not results[4].ok and not results[4].invalid_address and not results[4].transient
    assert results[4].error.startswith("postmark 412")
    assert len(api.bodies) == 1


@pytest.mark.parametrize(
    "status, body, expected",
    [
        (
            401,
            {"ErrorCode": 10, "Message": "No Account or Server API tokens were supplied in the HTTP headers."},
            "10 No",
        ),
        (422, {"ErrorCode": 410, "Message": "You may only send up to 500 messages per batch."}, "410 You may"),
        (422, "not json at all", "not json at all"),
    ],
)
def test_refusals_of_the_whole_call_are_final_with_postmarks_words(api, sender, status, body, expected):
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    api.answer = lambda _: (status, {"Content-Type": "application/json"}, raw)
    results = sender.send_batch([make_email(sender.config, 1), make_email(sender.config, 2)])

    assert len(results) == 2
    for result in results:
        assert not result.ok and not result.transient and not result.invalid_address
        assert result.error.startswith(f"postmark {status}: {expected}")


@pytest.mark.parametrize(
    "status, headers, wait", [(429, {"Retry-After": "12"}, 12), (503, {}, None), (500, {"retry-after": "3"}, 3)]
)
def test_throttling_and_server_errors_are_transient(api, sender, status, headers, wait):
    api.answer = lambda _: (status, headers, b'{"ErrorCode": 0, "Message": "slow down"}')
    results = sender.send_batch([make_email(sender.config, 1), make_email(sender.config, 2)])

    assert all(not r.ok and r.transient and r.retry_after == wait for r in results)
    assert all(r.error.startswith(f"postmark {status}") for r in results)


def test_an_answer_without_one_result_a_message_fails_them_for_good(api, sender):
    """Postmark may have sent them: retrying could send twice."""
    api.answer = lambda _: (200, {}, b'[{"ErrorCode": 0, "MessageID": "x"}]')
    results = sender.send_batch([make_email(sender.config, 1), make_email(sender.config, 2)])
    assert all(not r.ok and not r.transient and "not one result a message" in r.error for r in results)


def test_an_unreachable_api_is_transient():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sender = PostmarkSender(make_config(f"http://127.0.0.1:{port}"))
    results = sender.send_batch([make_email(sender.config, 1), make_email(sender.config, 2)])
    assert all(not r.ok and r.transient and "postmark unreachable" in r.error for r in results)


def test_a_missing_token_or_a_bad_url_is_a_config_error(monkeypatch):
    with pytest.raises(ConfigError, match="is not an http"):
        PostmarkSender(make_config("ftp://api.postmarkapp.com"))
    monkeypatch.delenv("POSTMARK_TEST_TOKEN")
    with pytest.raises(ConfigError, match="POSTMARK_TEST_TOKEN is not set"):
        PostmarkSender(make_config("https://api.postmarkapp.com"))
