"""Property-based: whatever customers and events a client posts (text with control characters and
lone surrogates, huge, tiny and non-finite numbers, nested lists and objects, odd dates), the API
answers with a 2xx or a 4xx, and a tick of the shipped campaigns then never raises, never leaves
a send `sending`, and records a reason for every failure.

Examples are derandomized (the same ones on every run) and few, so CI stays fast and stable; one
project serves every example, each posting customers of its own."""

from __future__ import annotations

import itertools
import json
import math
import shutil
from datetime import UTC, datetime

import pytest
import yaml
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from engine.campaigns.language import load_campaigns
from engine.config.settings import load_config
from engine.delivery.tick import tick
from engine.senders import load_sender
from engine.store import schema
from engine.web import create_app

API_KEY = "property-key"
NOW = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)
EVENTS = ["signed_up", "confirmed", "purchase", "feedback_submitted", "login"]
PROPERTIES = ["total", "score", "items", "product", "currency", "amount"]

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

# every character, surrogates and controls included
text = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
odd_dates = st.sampled_from(
    [
        "9999-12-31T23:59:59-05:00",
        "0001-01-01T00:00:00+01:00",
        "2026-02-30",
        "2026-03-01",
        "2026-03-01T10:00:00Z",
        "2026-03-01T25:00:00Z",
        "0000-00-00",
    ]
) | st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat)
numbers = (
    st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0.0, -0.0, 5e-324, 1.7976931348623157e308, math.nan, math.inf, -math.inf])
)
scalars = st.none() | st.booleans() | numbers | text | odd_dates
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3), max_leaves=6
)
# the shipped templates read total and score: they get odd values most often
properties = st.fixed_dictionaries({}, optional={"total": values, "score": values}) | st.dictionaries(
    st.sampled_from(PROPERTIES) | text, values, max_size=4
)
ids = itertools.count()


@pytest.fixture
def shop(tmp_path, monkeypatch):
    """The shipped config, campaigns and templates in a folder of their own, with an API key."""
    monkeypatch.setenv("LIFECYCLE_SECRET", "test-secret")
    monkeypatch.setenv("LIFECYCLE_API_KEYS", API_KEY)
    shutil.copytree(REPO / "campaigns", tmp_path / "campaigns")
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config |= {
        "database": f"sqlite:///{tmp_path}/store.db",
        "sender": {"backend": "file", "file": {"directory": "outbox"}},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    loaded = load_config(tmp_path / "config.yaml")
    engine = schema.open_store(loaded.database_url)
    return loaded, load_campaigns(loaded), engine, TestClient(create_app(loaded, engine))


def post(client: TestClient, kind: str, records: list[dict]) -> int:
    body = json.dumps(records)  # NaN and Infinity as JSON's non-standard tokens, surrogates as \ud800
    response = client.post(f"/api/{kind}", content=body, headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code in (200, 400, 422), response.text
    if response.status_code != 200:
        assert response.json()["error"]  # a reason, not a traceback
    return response.status_code


@SETTINGS
@given(
    first_name=text | numbers,
    last_name=text,
    locale=st.sampled_from(["en", "ar", "fr", ""]) | text,
    attributes=st.dictionaries(
        st.sampled_from(["plan", "score", "confirmed_at", "birthday"]) | text, values, max_size=4
    ),
    events=st.lists(st.tuples(st.sampled_from(EVENTS), properties), min_size=1, max_size=4),
)
def test_whatever_is_posted_a_tick_records_every_send(shop, first_name, last_name, locale, attributes, events):
    config, campaigns, engine, client = shop
    cid = f"p{next(ids)}"
    person = {"id": cid, "email": f"{cid}@example.com", "first_name": first_name, "last_name": last_name}
    person["created_at"] = "2026-03-01T00:00:00Z"
    if locale:
        person["locale"] = locale
    post(client, "customers", [person | {"attributes": attributes}])
    if post(client, "customers", [person]) == 200:  # the plain customer always exists for the events
        at = "2026-03-03T08:30:00Z"  # the thank-you (1h later) is due by NOW
        post(client, "events", [{"customer": cid, "event": name, "at": at, "properties": p} for name, p in events])
    with load_sender(config) as sender:
        report = tick(config, campaigns, engine, sender, NOW)
    assert not report.problems, report.problems
    with engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT status, reason FROM send").all()
    assert not [r for r in rows if r.status == "sending"]
    assert all(r.reason for r in rows if r.status in ("failed", "unknown"))
