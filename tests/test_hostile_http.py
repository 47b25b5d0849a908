"""Hostile HTTP input gets a 4xx with a clear message (or is harmless), never a 500, a traceback or
memory that grows with what a client sends: made-up methods, deep JSON, lone surrogates, wrongly
shaped items, dates out of range, numbers JSON cannot hold, absurd webhook timestamps. A 500 that
a bug can still cause carries the security headers and no traceback."""

from __future__ import annotations

import base64
import json
import time

import pytest
from conftest import customer
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.testclient import TestClient
from test_web import API_KEY, NEWS, PUBLIC_KEY, SIGNING_KEY, Web, signed_post

from engine.web import ops


@pytest.fixture
def web(project, monkeypatch) -> Web:
    monkeypatch.setenv("LIFECYCLE_API_KEYS", API_KEY)
    monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", PUBLIC_KEY)
    project.campaign("news", NEWS)
    project.customers(customer("ann"))
    return Web(project)


def _label_lines(metrics: str) -> list[str]:
    return [line for line in metrics.splitlines() if line.startswith("lifecycle_http_request_duration_seconds_count")]


def test_made_up_methods_get_405_and_never_become_metric_labels(web):
    before = len(_label_lines(web.client.get("/metrics").text))
    for n in range(300):
        response = web.client.request(f"FAKE{n}", "/healthz" if n % 2 else f"/nowhere/{n}")
        assert response.status_code == 405
        assert "GET" in response.headers["allow"]
    for n in range(50):
        assert web.client.get(f"/nowhere/{n}").status_code == 404
    metrics = web.client.get("/metrics").text
    assert "FAKE" not in metrics and "/nowhere" not in metrics
    assert 'method="other"' in metrics and 'route="unmatched"' in metrics
    assert len(_label_lines(metrics)) <= before + 4  # other+405, GET+404, GET /metrics 200: bounded


@pytest.mark.parametrize("body", ["[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000])
def test_json_nested_100000_deep_is_a_400(web, body):
    response = web.api("customers", body)
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["error"]


def test_attributes_nested_past_the_limit_are_a_400(web):
    deep: dict = {}
    for _ in range(40):
        deep = {"x": deep}
    response = web.api("customers", customer("deep", plan=deep))
    assert response.status_code == 400 and "at most 32 levels" in response.json()["error"]
    assert web.api("customers", customer("shallow", plan={"a": {"b": [1, 2]}})).status_code == 200


@pytest.mark.parametrize(
    "body, phrase",
    [
        ('{"id": "n", "email": "n@example.com", "score": NaN}', "NaN"),
        ('{"id": "n", "email": "n@example.com", "score": -Infinity}', "-Infinity"),
        ('{"id": "n", "email": "n@example.com", "score": 1e400}', "too large"),
        ('{"id": "n", "email": "n@example.com", "score": ' + "9" * 5000 + "}", "not valid JSON"),
    ],
)
def test_numbers_json_cannot_hold_are_a_400(web, body, phrase):
    response = web.api("customers", body)
    assert response.status_code == 400 and phrase in response.json()["error"]
    assert web.project.query("SELECT count(*) FROM customer WHERE external_id = 'n'") == [(0,)]


@pytest.mark.parametrize(
    "field, value, where",
    [
        ("first_name", "Ann\ud800", "first_name"),
        ("email", "a\udfff@example.com", "email"),
        ("plan", "gold\ud800", "plan"),
        ("plan", {"tier\udc00": 1}, "plan.tier\\udc00"),
        ("plan", ["ok", "\ud800"], "plan[1]"),
    ],
)
def test_a_lone_surrogate_is_refused_with_its_index(web, field, value, where):
    body = json.dumps([customer("ok1"), {**customer("bad"), field: value}])  # json.dumps writes \ud800 escapes
    response = web.api("customers", body)
    assert response.status_code == 422
    assert response.json()["items"] == [
        {"index": 1, "reason": f"{where} holds a lone UTF-16 surrogate, which is not text"}
    ]
    assert web.project.query("SELECT count(*) FROM customer WHERE external_id IN ('ok1', 'bad')") == [(0,)]


@pytest.mark.parametrize(
    "kind, item, reason",
    [
        ("customers", customer("x", topics="x"), "'topics' must be an object (name: value), not str"),
        ("customers", customer("x", topics=["news"]), "'topics' must be an object (name: value), not list"),
        ("customers", customer("x", attributes=7), "'attributes' must be an object (name: value), not int"),
        ("events", {"customer": "ann", "event": "ping", "at": "2026-03-01T10:00:00Z", "properties": [1]}, "not list"),
        ("events", "ping", "each item must be a JSON object"),
        ("customers", customer("x", timezone="x" * 300), "'timezone' is longer than 64 characters"),
        ("customers", customer("x", timezone="Europe/" + "x" * 50), "is not an IANA timezone"),
        ("customers", customer("x" * 201), "'id' is longer than 200 characters"),
        ("customers", customer("x", first_name={"x": 1}), "'first_name' must be text, not dict"),
        ("customers", customer("x", locale=["en"]), "'locale' must be text, not list"),
        ("events", {"customer": "ann", "event": "e" * 101, "at": "2026-03-01T10:00:00Z"}, "'event' is longer than 100"),
    ],
)
def test_a_wrongly_shaped_item_is_a_422_naming_its_index(web, kind, item, reason):
    response = web.api(kind, [item])
    assert response.status_code == 422
    [problem] = response.json()["items"]
    assert problem["index"] == 0 and reason in problem["reason"]


def test_shape_problems_and_the_importers_are_reported_together(web):
    response = web.api("customers", [customer("x", topics="x"), {"id": "y", "email": "nope"}, customer("z")])
    assert response.status_code == 422
    assert [item["index"] for item in response.json()["items"]] == [0, 1]


@pytest.mark.parametrize(
    "kind, item, where",
    [
        ("customers", customer("x", created_at="9999-12-31T23:59:59-05:00"), "created_at"),
        ("customers", customer("x", confirmed_at="0001-01-01T00:00:00+01:00"), "confirmed_at"),
        ("customers", customer("x", renewal="9999-12-31T23:00:00-03:00"), "renewal"),
        ("events", {"customer": "ann", "event": "ping", "at": "9999-12-31T23:59:59-05:00"}, "at"),
        (
            "events",
            {
                "customer": "ann",
                "event": "ping",
                "at": "2026-03-01T10:00:00Z",
                "properties": {"due": "0001-01-01T00:30:00+01:00"},
            },
            "properties.due",
        ),
    ],
)
def test_a_date_out_of_range_after_its_offset_is_a_422(web, kind, item, where):
    response = web.api(kind, [item])
    assert response.status_code == 422
    [problem] = response.json()["items"]
    assert problem["reason"].startswith(f"{where}: '") and "out of range" in problem["reason"]


def _signed(web, body: bytes, stamp: str):
    signature = base64.b64encode(SIGNING_KEY.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
    return web.client.post(
        "/webhooks/sendgrid",
        content=body,
        headers={"X-Twilio-Email-Event-Webhook-Signature": signature, "X-Twilio-Email-Event-Webhook-Timestamp": stamp},
    )


@pytest.mark.parametrize("stamp", ["9" * 400, "1" * 5000, "0x10", " 12", "-1", str(int(time.time())) + ".5"])
def test_an_absurd_webhook_timestamp_header_is_a_403(web, stamp):
    assert _signed(web, b"[]", stamp).status_code == 403


def test_a_400_digit_event_timestamp_is_ignored_not_a_500(web):
    event = {"event": "open", "email": "ann@example.com", "timestamp": int("9" * 400), "sg_event_id": "e1"}
    response = signed_post(web, [event, {**event, "timestamp": 1e300, "sg_event_id": "e2"}])
    assert response.status_code == 200


def test_a_deep_webhook_body_is_a_400(web):
    response = _signed(web, b"[" * 100_000 + b"]" * 100_000, str(int(time.time())))
    assert response.status_code == 400 and "nested too deeply" in response.json()["error"]


def test_a_500_from_a_bug_carries_the_security_headers_and_no_traceback(web, monkeypatch):
    def bug(connection):
        raise RuntimeError("a bug in the health check")

    monkeypatch.setattr(ops, "_ping", bug)
    client = TestClient(web.client.app, raise_server_exceptions=False)
    response = client.get("/healthz")
    assert response.status_code == 500
    assert response.text == "internal error\n"
    for name in ("content-security-policy", "x-content-type-options", "x-frame-options", "referrer-policy"):
        assert name in response.headers
    assert response.headers["cache-control"] == "no-store"
    assert "Traceback" not in response.text and "RuntimeError" not in response.text
