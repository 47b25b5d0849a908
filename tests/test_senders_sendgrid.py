"""SendgridSender against a local HTTP server standing in for SendGrid's v3 Mail Send API."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import time
from dataclasses import replace

import pytest
from standin import serving

from engine.config.settings import Config
from engine.errors import ConfigError
from engine.mail.message import OutgoingEmail, build_email
from engine.mail.rendering import RenderedEmail
from engine.senders.sendgrid import SendgridSender

API_KEY = "SG.test-key"
NOW = dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.UTC)
SAME = RenderedEmail("Spring sale", "<p>20% off everything</p>", "20% off everything")


def shape_problems(method: str, path: str, headers, body) -> list[str]:
    """Everything SendGrid would refuse, as readable complaints."""
    problems = []
    if method != "POST" or path != "/v3/mail/send":
        problems.append(f"{method} {path}")
    if headers.get("Authorization") != f"Bearer {API_KEY}":
        problems.append(f"Authorization: {headers.get('Authorization')}")
    if not isinstance(body, dict):
        return [*problems, "body is not a JSON object"]
    personalizations = body.get("personalizations") or []
    if not 1 <= len(personalizations) <= 1000:
        problems.append(f"{len(personalizations)} personalizations")
    addresses = [to["email"].lower() for p in personalizations for to in p.get("to", [])]
    if len(addresses) != len(set(addresses)):
        problems.append("an address appears twice")
    for p in personalizations:
        if not p.get("to") or not isinstance(p.get("custom_args", {}).get("send_id"), str):
            problems.append(f"personalization without to or a string custom_args.send_id: {p}")
    if not body.get("from", {}).get("email"):
        problems.append("no from")
    if [c["type"] for c in body.get("content", [])] != ["text/plain", "text/html"]:
        problems.append(f"content types {[c['type'] for c in body.get('content', [])]}")
    for headers_ in [body.get("headers", {})] + [p.get("headers", {}) for p in personalizations]:
        for name, value in headers_.items():
            if any(ch in name + value for ch in "\r\n") or not isinstance(value, str):
                problems.append(f"header {name!r}: {value!r}")
            if name.lower() in {"to", "from", "subject", "reply-to", "cc", "bcc", "content-type"}:
                problems.append(f"reserved header {name}")
    return problems


class FakeSendGrid:
    """Records each request; `answer(body)` decides the (status, headers, body) of the reply."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.problems: list[str] = []
        self.lock = threading.Lock()
        self.answer = lambda body: (202, {"X-Message-Id": f"msg{len(self.bodies)}"}, b"")

    def handle(self, method: str, path: str, headers, raw: bytes):
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with self.lock:
            self.problems += shape_problems(method, path, headers, body)
            self.bodies.append(body)
            return self.answer(body)

    @property
    def sizes(self) -> list[int]:
        return [len(b["personalizations"]) for b in self.bodies]


@pytest.fixture
def api():
    with serving(FakeSendGrid()) as fake:
        yield fake


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("SENDGRID_TEST_KEY", API_KEY)


def make_config(base_url: str, **sendgrid) -> Config:
    return Config.model_validate(
        {
            "from": {"email": "shop@example.com", "name": "Shop"},
            "reply_to": "help@example.com",
            "sender": {
                "backend": "sendgrid",
                "sendgrid": {"api_key_env": "SENDGRID_TEST_KEY", "base_url": base_url, **sendgrid},
            },
        }
    )


def make_email(
    config: Config, send_id: int, to: str | None = None, rendered: RenderedEmail = SAME, to_name: str | None = "Ann"
) -> OutgoingEmail:
    return build_email(
        config,
        send_id=send_id,
        campaign="spring",
        marketing=True,
        to=to or f"user{send_id}@example.com",
        to_name=to_name,
        rendered=rendered,
        unsubscribe_url=f"https://shop.example.com/unsubscribe/tok{send_id}",
        now=NOW,
    )


@pytest.fixture
def sender(api):
    sender = SendgridSender(make_config(api.base_url))
    yield sender
    sender.close()


def by_id(results):
    return {r.send_id: r for r in results}


def like(email: OutgoingEmail, send_id: int) -> OutgoingEmail:
    """The same content for another recipient, without paying for a full build_email each time."""
    headers = {
        **email.headers,
        "X-Lifecycle-Send-Id": str(send_id),
        "List-Unsubscribe": f"<https://shop.example.com/unsubscribe/tok{send_id}>",
    }
    return replace(
        email,
        send_id=send_id,
        to=f"user{send_id}@example.com",
        headers=headers,
        message_id=f"<send{send_id}@example.com>",
    )


def test_identical_content_goes_in_requests_of_at_most_1000(api, sender):
    template = make_email(sender.config, 1)
    emails = [like(template, i) for i in range(1, 2501)]
    results = sender.send_batch(emails)

    assert api.problems == []
    assert api.sizes == [1000, 1000, 500]
    assert len(results) == 2500 and all(r.ok for r in results)
    assert by_id(results)[1].message_id == "msg1.1" and by_id(results)[2500].message_id == "msg3.2500"
    sent = {p["custom_args"]["send_id"]: p for body in api.bodies for p in body["personalizations"]}
    assert sorted(map(int, sent)) == list(range(1, 2501))
    # What differs per recipient rides in its personalization; the rest goes once.
    first = sent["7"]
    assert first["to"] == [{"email": "user7@example.com", "name": "Ann"}]
    assert first["headers"]["List-Unsubscribe"] == "<https://shop.example.com/unsubscribe/tok7>"
    assert first["headers"]["X-Lifecycle-Send-Id"] == "7"
    assert first["headers"]["Message-ID"] == emails[6].message_id
    assert api.bodies[0]["headers"] == {
        "X-Lifecycle-Campaign": "spring",
        "List-Id": "<spring.example.com>",
        "Feedback-ID": "spring:marketing:example.com",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def test_the_request_carries_the_whole_message(api, sender):
    email = make_email(sender.config, 42)
    assert sender.send_batch([email])[0].ok

    body = api.bodies[0]
    assert api.problems == []
    assert body["from"] == {"email": "shop@example.com", "name": "Shop"}
    assert body["reply_to"] == {"email": "help@example.com"}
    assert body["subject"] == "Spring sale"
    assert body["content"] == [{"type": "text/plain", "value": SAME.text}, {"type": "text/html", "value": SAME.html}]
    assert body["personalizations"] == [
        {"to": [{"email": "user42@example.com", "name": "Ann"}], "custom_args": {"send_id": "42"}}
    ]
    assert body["headers"] == {
        "X-Lifecycle-Campaign": "spring",
        "X-Lifecycle-Send-Id": "42",
        "List-Id": "<spring.example.com>",
        "Feedback-ID": "spring:marketing:example.com",
        "List-Unsubscribe": "<https://shop.example.com/unsubscribe/tok42>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "Message-ID": email.message_id,
    }
    assert body["mail_settings"] == {"sandbox_mode": {"enable": False}}


def test_different_content_goes_in_separate_requests(api, sender):
    other = RenderedEmail("Last chance", "<p>Ends tonight</p>", "Ends tonight")
    emails = [
        make_email(sender.config, 1),
        make_email(sender.config, 2, rendered=other),
        make_email(sender.config, 3),
        make_email(sender.config, 4, rendered=RenderedEmail(SAME.subject, SAME.html, "a different text part")),
    ]
    results = sender.send_batch(emails)

    assert api.problems == []
    assert all(r.ok for r in results)
    assert sorted(api.sizes) == [1, 1, 2]
    together = next(b for b in api.bodies if len(b["personalizations"]) == 2)
    assert [p["custom_args"]["send_id"] for p in together["personalizations"]] == ["1", "3"]


def test_the_same_address_twice_never_shares_a_request(api, sender):
    emails = [
        make_email(sender.config, 1, "ann@example.com"),
        make_email(sender.config, 2, "ANN@example.com"),
        make_email(sender.config, 3, "bob@example.com"),
    ]
    assert all(r.ok for r in sender.send_batch(emails))
    assert api.problems == []
    assert api.sizes == [2, 1]


def test_sandbox_mode_is_set_when_configured(api):
    sender = SendgridSender(make_config(api.base_url, sandbox=True))
    api.answer = lambda body: (200, {"X-Message-Id": "sandboxed"}, b"")  # sandbox: valid, not queued
    result = sender.send_batch([make_email(sender.config, 1)])[0]

    assert result.ok and result.message_id == "sandboxed.1"
    assert api.bodies[0]["mail_settings"] == {"sandbox_mode": {"enable": True}}


def test_no_header_value_carries_a_newline(api, sender):
    email = OutgoingEmail(
        send_id=5,
        campaign="spring",
        to="eve@example.com",
        from_email="shop@example.com",
        from_name="Shop\r\nBcc: victim@example.com",
        subject="Hi\r\nBcc: victim@example.com",
        html="<p>x</p>",
        text="x",
        message_id="<5@example.com>",
        headers={
            "X-Lifecycle-Campaign": "spring\r\nBcc: victim@example.com",
            "List-Unsubscribe": "<https://x/u/1>\n\rBcc: victim@example.com",
        },
    )
    assert sender.send_batch([email])[0].ok

    body = api.bodies[0]
    assert api.problems == []
    assert "\n" not in body["subject"] and "\n" not in body["from"]["name"]
    assert body["headers"]["X-Lifecycle-Campaign"] == "spring Bcc: victim@example.com"
    assert [to["email"] for p in body["personalizations"] for to in p["to"]] == ["eve@example.com"]


ERRORS_400 = {
    "errors": [
        {"message": "The from address does not match a verified Sender Identity.", "field": "from", "help": None}
    ]
}


@pytest.mark.parametrize(
    "status, headers, body, expected",
    [
        (400, {}, ERRORS_400, "The from address does not match a verified Sender Identity."),
        (
            401,
            {},
            {
                "errors": [
                    {"message": "The provided authorization grant is invalid, expired, or revoked", "field": None}
                ]
            },
            "authorization grant is invalid",
        ),
        (403, {}, {"errors": [{"message": "access forbidden"}]}, "access forbidden"),
    ],
)
def test_refusals_are_final_with_sendgrids_words(api, sender, status, headers, body, expected):
    api.answer = lambda _: (status, {"Content-Type": "application/json", **headers}, json.dumps(body).encode())
    results = sender.send_batch([make_email(sender.config, 1), make_email(sender.config, 2)])

    assert len(results) == 2
    for result in results:
        assert not result.ok and not result.transient and not result.invalid_address
        assert result.error.startswith(f"sendgrid {status}") and expected in result.error


def test_429_is_transient_and_says_when_to_come_back(api, sender):
    reset = int(time.time()) + 30
    api.answer = lambda _: (429, {"X-RateLimit-Reset": str(reset)}, b'{"errors":[{"message":"too many requests"}]}')
    result = sender.send_batch([make_email(sender.config, 1)])[0]

    assert not result.ok and result.transient
    assert 25 <= result.retry_after <= 31
    assert "too many requests" in result.error


def test_429_with_retry_after_seconds(api, sender):
    api.answer = lambda _: (429, {"Retry-After": "12"}, b"")
    result = sender.send_batch([make_email(sender.config, 1)])[0]
    assert result.transient and result.retry_after == 12


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_transient(api, sender, status):
    api.answer = lambda _: (status, {}, b"oops")
    results = sender.send_batch([make_email(sender.config, 1), make_email(sender.config, 2)])
    assert all(not r.ok and r.transient and r.error.startswith(f"sendgrid {status}") for r in results)


def test_an_unreachable_api_is_transient():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sender = SendgridSender(make_config(f"http://127.0.0.1:{port}"))
    results = sender.send_batch([make_email(sender.config, 1), make_email(sender.config, 2)])
    assert all(not r.ok and r.transient and "sendgrid unreachable" in r.error for r in results)


def test_payload_too_large_splits_the_request_in_halves(api, sender):
    api.answer = lambda body: (
        (413, {}, b'{"errors":[{"message":"payload too large"}]}')
        if len(body["personalizations"]) > 2
        else (202, {"X-Message-Id": "ok"}, b"")
    )
    results = sender.send_batch([make_email(sender.config, i) for i in range(1, 9)])

    assert api.problems == []
    assert all(r.ok for r in results) and len(results) == 8
    assert api.sizes == [8, 4, 2, 2, 4, 2, 2]


def test_payload_too_large_for_a_single_message_is_final(api, sender):
    api.answer = lambda body: (413, {}, b'{"errors":[{"message":"payload too large"}]}')
    result = sender.send_batch([make_email(sender.config, 1)])[0]
    assert not result.ok and not result.transient and "payload too large" in result.error


def test_a_bad_address_in_a_shared_request_fails_only_itself(api, sender):
    def answer(body):
        bad = [i for i, p in enumerate(body["personalizations"]) if p["to"][0]["email"] == "nope@"]
        if bad:
            errors = [
                {"message": "Does not contain a valid address.", "field": f"personalizations.{i}.to.0.email"}
                for i in bad
            ]
            return 400, {}, json.dumps({"errors": errors}).encode()
        return 202, {"X-Message-Id": "ok"}, b""

    api.answer = answer
    results = by_id(
        sender.send_batch(
            [make_email(sender.config, 1), make_email(sender.config, 2, "nope@"), make_email(sender.config, 3)]
        )
    )

    assert results[1].ok and results[3].ok
    assert not results[2].ok and not results[2].transient and results[2].invalid_address
    assert "Does not contain a valid address." in results[2].error
    assert api.sizes == [3, 2]


def test_a_missing_api_key_is_a_config_error(monkeypatch):
    monkeypatch.delenv("SENDGRID_TEST_KEY")
    with pytest.raises(ConfigError, match="SENDGRID_TEST_KEY is not set"):
        SendgridSender(make_config("https://api.sendgrid.com"))
