"""Segment's tracking API: the official `segment-analytics-python` client feeds a real
`lifecycle serve` unchanged, and what it sends becomes customers and events; a retried call stores
nothing twice, and one bad call in a batch fails alone."""

from __future__ import annotations

import base64
import gzip
import json
from datetime import UTC

import pytest
from conftest import customer
from segment.analytics import Client
from test_web import API_KEY, Web, web_for
from test_web_browser import free_port, lifecycle_serve


@pytest.fixture
def service(store_project, monkeypatch) -> Web:
    return web_for(store_project, monkeypatch)


def basic(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def post(service: Web, path: str, body, headers: dict[str, str] | None = None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return service.client.post(path, content=data, headers={**basic(), **(headers or {})})


def events_of(project, external_id: str) -> list[tuple]:
    return project.query(
        "SELECT e.uid, e.name, e.properties FROM event e JOIN customer c ON c.id = e.customer_id"
        " WHERE c.external_id = :x ORDER BY e.at",
        x=external_id,
    )


def test_the_official_client_feeds_the_served_engine(project, monkeypatch):
    monkeypatch.setenv("LIFECYCLE_API_KEYS", API_KEY)
    port = free_port()
    with lifecycle_serve(project, port) as url:
        client = Client(API_KEY, host=url, sync_mode=True, max_retries=0)
        client.identify(
            "u-1",
            {"email": "Lina@Example.com", "name": "Lina Haddad", "plan": "pro", "points": 120},
            context={"locale": "ar-EG", "timezone": "Asia/Beirut"},
            timestamp=None,
        )
        client.track("u-1", "purchase", {"total": 42.5}, message_id="m-1", timestamp=_at("2026-11-02T10:00:00"))
        client.track("u-1", "purchase", {"total": 42.5}, message_id="m-1", timestamp=_at("2026-11-02T10:00:00"))
        zipped = Client(API_KEY, host=url, sync_mode=True, gzip=True, max_retries=0)
        zipped.track("u-1", "login", message_id="m-2", timestamp=_at("2026-11-03T09:00:00"))
    row = project.query(
        "SELECT email, first_name, last_name, locale, timezone, attributes FROM customer WHERE external_id = 'u-1'"
    )[0]
    assert row[:5] == ("lina@example.com", "Lina", "Haddad", "ar", "Asia/Beirut")
    attributes = row[5] if isinstance(row[5], dict) else json.loads(row[5])
    assert attributes == {"plan": "pro", "points": 120}
    stored = events_of(project, "u-1")
    assert [(uid, name) for uid, name, _ in stored] == [("m-1", "purchase"), ("m-2", "login")]


def _at(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_a_batch_stores_identifies_before_tracks_and_names_each_bad_call(service):
    batch = {
        "batch": [
            {
                "type": "track",
                "userId": "new-1",
                "event": "signup",
                "timestamp": "2026-11-01T08:00:00Z",
                "messageId": "a",
            },
            {"type": "identify", "userId": "new-1", "traits": {"email": "new1@example.com"}},
            {"type": "track", "userId": "nobody", "event": "signup", "timestamp": "2026-11-01T08:00:00Z"},
            {"type": "track", "event": "signup", "anonymousId": "x", "timestamp": "2026-11-01T08:00:00Z"},
            {"type": "page", "userId": "new-1", "name": "Home"},
            {"type": "identify", "userId": "new-2", "traits": {"name": "No Email"}},
            {"type": "track", "userId": "new-1", "event": "ping", "timestamp": "not a time", "messageId": "b"},
            {"type": "fly", "userId": "new-1"},
            "not an object",
        ],
        "context": {"locale": "en-GB"},
    }
    answer = post(service, "/v1/batch", batch)
    assert answer.status_code == 200
    body = answer.json()
    assert (body["stored"], body["ignored"]) == (2, 1)
    reasons = {item["index"]: item["reason"] for item in body["rejected"]}
    assert sorted(reasons) == [2, 3, 5, 6, 7, 8]
    assert "'nobody' does not exist" in reasons[2]
    assert "userId" in reasons[3]
    assert "is new: 'email' is required" in reasons[5]
    assert reasons[6].startswith("at:")
    assert "'type' must be identify or track" in reasons[7]
    assert [name for _, name, _ in events_of(service.project, "new-1")] == ["signup"]
    assert service.project.query("SELECT locale FROM customer WHERE external_id = 'new-1'") == [("en",)]
    assert service.project.query("SELECT count(*) FROM customer WHERE external_id = 'new-2'") == [(0,)]


def test_an_identify_without_email_updates_a_known_customer_and_keeps_the_email(service):
    answer = post(service, "/v1/identify", {"userId": "ann", "traits": {"firstName": "Anne", "tier": "gold"}})
    assert answer.json()["stored"] == 1
    email, first, attributes = service.project.query(
        "SELECT email, first_name, attributes FROM customer WHERE external_id = 'ann'"
    )[0]
    assert (email, first) == ("ann@example.com", "Anne")
    assert (attributes if isinstance(attributes, dict) else json.loads(attributes))["tier"] == "gold"


def test_a_retried_track_stores_nothing_twice(service):
    call = {"userId": "ann", "event": "purchase", "timestamp": "2026-11-02T10:00:00Z", "messageId": "r-1"}
    first, second = post(service, "/v1/track", call).json(), post(service, "/v1/track", call).json()
    assert (first["stored"], second["stored"], second["skipped"]) == (1, 0, 1)
    assert [uid for uid, _, _ in events_of(service.project, "ann")] == ["r-1"]


def test_a_batch_counts_what_it_stored_and_what_it_skipped(service):
    batch = [
        {
            "type": "track",
            "userId": "ann",
            "event": "visit",
            "timestamp": "2026-11-02T10:00:00Z",
            "messageId": f"b{n % 150}",
        }
        for n in range(200)
    ]
    first, second = (
        post(service, "/v1/batch", {"batch": batch}).json(),
        post(service, "/v1/batch", {"batch": batch}).json(),
    )
    assert (first["stored"], first["skipped"], second["stored"], second["skipped"]) == (150, 50, 0, 200)
    assert service.project.query("SELECT count(*) FROM event") == [(150,)]


@pytest.mark.parametrize(
    "headers, body",
    [
        ({}, {"batch": []}),
        (basic("wrong-key"), {"batch": []}),
        ({"Authorization": "Basic !!not-base64"}, {"batch": []}),
        ({"Authorization": f"Bearer {API_KEY}x"}, {"batch": []}),
    ],
)
def test_a_call_without_a_valid_write_key_is_refused_in_segments_shape(service, headers, body):
    answer = service.client.post("/v1/batch", content=json.dumps(body), headers=headers)
    assert answer.status_code == 401
    assert answer.json()["code"] == "unauthorized"


def test_the_write_key_may_come_in_the_body_as_the_clients_also_send_it(service):
    answer = service.client.post(
        "/v1/identify", content=json.dumps({"userId": "ann", "traits": {"vip": True}, "writeKey": API_KEY})
    )
    assert answer.status_code == 200 and answer.json()["stored"] == 1


@pytest.mark.parametrize(
    "body, headers, status, code",
    [
        (b"{not json", {}, 400, "invalid_json"),
        (b"[]", {}, 400, "invalid_request"),
        (json.dumps({"batch": {"type": "track"}}).encode(), {}, 400, "invalid_request"),
        (b"plain bytes", {"Content-Encoding": "gzip"}, 400, "invalid_gzip"),
        (gzip.compress(b" " * (6 * 1024 * 1024)), {"Content-Encoding": "gzip"}, 413, "too_large"),
        (b"{}", {"Content-Encoding": "br"}, 415, "unsupported_encoding"),
    ],
)
def test_a_body_that_cannot_be_read_is_a_4xx_with_code_and_message(service, body, headers, status, code):
    answer = post(service, "/v1/batch", body, headers)
    assert (answer.status_code, answer.json()["code"]) == (status, code)
    assert answer.json()["message"]
    assert service.project.query("SELECT count(*) FROM event") == [(0,)]


def test_customers_from_segment_are_the_same_as_imported_ones(service):
    post(service, "/v1/identify", {"userId": "seg", "traits": {"email": "seg@example.com", "firstName": "Seg"}})
    service.project.customers(customer("imp", first_name="Seg"))
    columns = "first_name, locale, timezone, attributes"
    seg = service.project.query(f"SELECT {columns} FROM customer WHERE external_id = 'seg'")
    imp = service.project.query(f"SELECT {columns} FROM customer WHERE external_id = 'imp'")
    assert seg == imp


def test_what_orjson_cannot_read_is_read_as_before_and_fails_alone(service):
    """orjson reads a body quickly but refuses a lone surrogate and reads an integer past 64 bits
    as a float: such a body is read by the standard library, so the bad call fails alone and the
    large integer is kept exactly."""
    track = {"type": "track", "userId": "ann", "event": "visit", "timestamp": "2026-11-02T10:00:00Z"}
    large = {**track, "messageId": "s-1", "properties": {"order": 123456789012345678901234567890}}
    surrogate = {**track, "messageId": "s-2", "properties": {"note": "\ud800"}}
    answers = [post(service, "/v1/batch", {"batch": batch}).json() for batch in ([large], [surrogate, large])]
    assert [(a["stored"], a["skipped"]) for a in answers] == [(1, 0), (0, 1)]
    assert [item["index"] for item in answers[1]["rejected"]] == [0]
    [(uid, _, properties)] = events_of(service.project, "ann")
    assert uid == "s-1"
    assert (properties if isinstance(properties, dict) else json.loads(properties)) == {
        "order": 123456789012345678901234567890
    }
