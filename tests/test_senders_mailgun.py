"""MailgunSender against a local HTTP server standing in for Mailgun's `messages.mime` API."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import socket
import threading
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import python_multipart

from engine.config.settings import Config
from engine.errors import ConfigError
from engine.mail.message import OutgoingEmail, build_email
from engine.mail.rendering import RenderedEmail
from engine.senders import load_sender
from engine.senders.mailgun import MailgunSender

API_KEY = "key-test"
DOMAIN = "mg.example.com"
NOW = dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.UTC)
SAME = RenderedEmail("Spring sale", "<p>20% off everything</p>", "20% off everything")
INVALID_TO = b'{"message": "\'to\' parameter is not a valid address. please check documentation"}'


def form(headers, raw: bytes) -> dict[str, object]:
    """The multipart body as an independent parser reads it: text fields, and files as (name, bytes)."""
    fields: dict[str, object] = {}

    def on_field(field) -> None:
        fields[field.field_name.decode()] = field.value.decode()

    def on_file(file) -> None:
        file.file_object.seek(0)
        fields[file.field_name.decode()] = (file.file_name.decode(), file.file_object.read())

    python_multipart.parse_form(
        {"Content-Type": headers.get("Content-Type"), "Content-Length": str(len(raw))},
        io.BytesIO(raw),
        on_field,
        on_file,
    )
    return fields


def shape_problems(method: str, path: str, headers, fields: dict[str, object]) -> list[str]:
    """Everything Mailgun would refuse, as readable complaints."""
    problems = []
    if method != "POST" or path != f"/v3/{DOMAIN}/messages.mime":
        problems.append(f"{method} {path}")
    expected = "Basic " + base64.b64encode(f"api:{API_KEY}".encode()).decode()
    if headers.get("Authorization") != expected:
        problems.append(f"Authorization: {headers.get('Authorization')}")
    if sorted(fields) != ["message", "o:tag", "to", "v:send_id"]:
        problems.append(f"fields {sorted(fields)}")
    message = fields.get("message")
    if not (isinstance(message, tuple) and message_from_bytes(message[1], policy=policy.strict)["To"]):
        problems.append("message is not a file holding a parseable email")
    if not str(fields.get("v:send_id", "")).isdigit():
        problems.append(f"v:send_id {fields.get('v:send_id')!r}")
    return problems


class FakeMailgun:
    """Records each request's form fields; `answer(fields)` decides the (status, headers, body) of the reply."""

    def __init__(self) -> None:
        self.requests: list[dict[str, object]] = []
        self.problems: list[str] = []
        self.connections: set[int] = set()
        self.hang_up_after_answer = False  # as a server closing an idle kept-alive connection
        self.lock = threading.Lock()
        self.answer = lambda fields: (200, {}, json.dumps({"id": f"<m{fields['v:send_id']}@{DOMAIN}>"}).encode())

    def handle(self, method: str, path: str, headers, raw: bytes, port: int):
        fields = form(headers, raw)
        with self.lock:
            self.connections.add(port)
            self.problems += shape_problems(method, path, headers, fields)
            self.requests.append(fields)
            return self.answer(fields)

    @property
    def send_ids(self) -> list[int]:
        return [int(fields["v:send_id"]) for fields in self.requests]


@pytest.fixture
def api():
    fake = FakeMailgun()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as Mailgun's servers

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, headers, body = fake.handle(self.command, self.path, self.headers, raw, self.client_address[1])
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = fake.hang_up_after_answer

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.handle_error = lambda request, address: None  # a handler that hangs up on purpose
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("MAILGUN_TEST_KEY", API_KEY)


def make_config(base_url: str, **mailgun) -> Config:
    return Config.model_validate(
        {
            "from": {"email": "shop@example.com", "name": "Shop"},
            "sender": {
                "backend": "mailgun",
                "mailgun": {"api_key_env": "MAILGUN_TEST_KEY", "domain": DOMAIN, "base_url": base_url, **mailgun},
            },
        }
    )


def make_email(config: Config, send_id: int, to: str | None = None) -> OutgoingEmail:
    return build_email(
        config,
        send_id=send_id,
        campaign="spring",
        marketing=True,
        to=to or f"user{send_id}@example.com",
        to_name="Ann",
        rendered=SAME,
        unsubscribe_url=f"https://shop.example.com/unsubscribe/tok{send_id}",
        now=NOW,
    )


@pytest.fixture
def sender(api):
    with load_sender(make_config(api.base_url)) as sender:
        yield sender


def by_id(results):
    return {r.send_id: r for r in results}


def test_each_message_goes_raw_with_its_send_id_and_campaign_over_one_connection(api, sender):
    emails = [make_email(sender.config, i) for i in range(1, 4)]
    results = by_id(sender.send_batch(emails) + sender.send_batch([make_email(sender.config, 4)]))

    assert api.problems == []
    assert api.send_ids == [1, 2, 3, 4]
    assert len(api.connections) == 1  # kept alive across messages and batches
    assert all(results[i].ok and results[i].message_id == f"<m{i}@{DOMAIN}>" for i in range(1, 5))
    first = api.requests[0]
    assert first["to"] == "user1@example.com" and first["o:tag"] == "spring"
    assert first["message"] == ("message.mime", emails[0].raw)  # byte for byte what other senders emit
    parsed = message_from_bytes(emails[0].raw, policy=policy.default)
    assert parsed["X-Lifecycle-Send-Id"] == "1"


def test_a_connection_the_server_closed_is_reopened(api, sender):
    api.hang_up_after_answer = True
    assert sender.send_batch([make_email(sender.config, 1)])[0].ok
    assert sender.send_batch([make_email(sender.config, 2)])[0].ok
    assert api.send_ids == [1, 2] and len(api.connections) == 2


def test_close_releases_the_connection(api):
    sender = MailgunSender(make_config(api.base_url))
    with sender:
        assert sender.send_batch([make_email(sender.config, 1)])[0].ok
        assert sender.connection is not None
    assert sender.connection is None


def test_an_invalid_address_fails_only_itself(api, sender):
    api.answer = lambda fields: (
        (400, {}, INVALID_TO)
        if fields["to"] == "nope@"
        else (200, {}, json.dumps({"id": f"<m{fields['v:send_id']}>"}).encode())
    )
    results = by_id(
        sender.send_batch(
            [make_email(sender.config, 1), make_email(sender.config, 2, "nope@"), make_email(sender.config, 3)]
        )
    )

    assert results[1].ok and results[3].ok and results[3].message_id == "<m3>"
    assert not results[2].ok and not results[2].transient and results[2].invalid_address
    assert results[2].error == "mailgun 400: 'to' parameter is not a valid address. please check documentation"


def test_another_400_is_final_but_not_about_the_address(api, sender):
    api.answer = lambda fields: (400, {}, b'{"message": "from parameter is missing"}')
    result = sender.send_batch([make_email(sender.config, 1)])[0]
    assert not result.ok and not result.transient and not result.invalid_address
    assert result.error == "mailgun 400: from parameter is missing"


@pytest.mark.parametrize(
    "status, body", [(401, b"Forbidden"), (403, b'{"message": "Domain mg.example.com is disabled"}')]
)
def test_a_refused_key_fails_the_whole_batch_after_one_call(api, sender, status, body):
    api.answer = lambda fields: (status, {}, body)
    results = sender.send_batch([make_email(sender.config, i) for i in range(1, 4)])

    assert api.send_ids == [1]
    assert sorted(r.send_id for r in results) == [1, 2, 3]
    assert all(not r.ok and not r.transient and r.error.startswith(f"mailgun {status}: ") for r in results)


@pytest.mark.parametrize(
    "status, headers, wait",
    [(429, {"Retry-After": "12"}, 12), (503, {}, None), (500, {"Retry-After": "x"}, None), (502, {}, None)],
)
def test_throttling_and_outages_are_transient_and_end_the_batch(api, sender, status, headers, wait):
    api.answer = lambda fields: (status, headers, b'{"message": "slow down"}')
    results = sender.send_batch([make_email(sender.config, i) for i in range(1, 4)])

    assert api.send_ids == [1]
    assert sorted(r.send_id for r in results) == [1, 2, 3]
    assert all(not r.ok and r.transient and r.retry_after == wait for r in results)
    assert all(r.error == f"mailgun {status}: slow down" for r in results)


def test_retry_after_as_an_http_date(api, sender):
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    api.answer = lambda fields: (429, {"Retry-After": later}, b"")
    result = sender.send_batch([make_email(sender.config, 1)])[0]
    assert result.transient and 50 <= result.retry_after <= 61 and result.error == "mailgun 429"


def test_a_message_after_a_success_is_not_held_up_by_an_earlier_one(api, sender):
    api.answer = lambda fields: (
        (429, {"Retry-After": "5"}, b"") if fields["v:send_id"] == "2" else (200, {}, b'{"id": "<ok>"}')
    )
    results = by_id(sender.send_batch([make_email(sender.config, i) for i in range(1, 4)]))
    assert results[1].ok and results[2].transient and results[3].transient and results[3].retry_after == 5


def test_an_unreachable_api_is_transient():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with MailgunSender(make_config(f"http://127.0.0.1:{port}")) as sender:
        results = sender.send_batch([make_email(sender.config, 1), make_email(sender.config, 2)])
    assert sorted(r.send_id for r in results) == [1, 2]
    assert all(not r.ok and r.transient and r.error.startswith("mailgun unreachable") for r in results)


def test_a_server_that_hangs_up_is_transient(api, sender):
    def hang_up(fields):
        raise ConnectionAbortedError  # the handler dies: the connection closes without an answer

    api.answer = hang_up
    results = sender.send_batch([make_email(sender.config, 1), make_email(sender.config, 2)])
    assert all(not r.ok and r.transient and r.error.startswith("mailgun unreachable") for r in results)


def test_the_domain_is_in_the_path_and_the_eu_region_is_a_base_url(api):
    config = make_config("https://api.eu.mailgun.net")
    sender = MailgunSender(config)
    assert (sender.url.hostname, sender.path) == ("api.eu.mailgun.net", f"/v3/{DOMAIN}/messages.mime")
    assert MailgunSender(make_config("https://api.mailgun.net", domain="a/b")).path == "/v3/a%2Fb/messages.mime"


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"domain": ""}, "sender.mailgun.domain"),
        ({"base_url": "ftp://api.mailgun.net"}, "sender.mailgun.base_url"),
    ],
)
def test_settings_that_cannot_work_are_config_errors(settings, message):
    with pytest.raises(ConfigError, match=message):
        MailgunSender(make_config(**({"base_url": "https://api.mailgun.net"} | settings)))


def test_a_missing_api_key_is_a_config_error(monkeypatch):
    monkeypatch.delenv("MAILGUN_TEST_KEY")
    with pytest.raises(ConfigError, match="MAILGUN_TEST_KEY is not set"):
        MailgunSender(make_config("https://api.mailgun.net"))
