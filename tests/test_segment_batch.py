"""A Segment batch is stored set-wise (engine/customers/tracking.py): its answer and what it stores
are exactly what storing its calls one at a time with the importer gives, duplicates, unknown
customers and bad calls included, on SQLite and PostgreSQL (through COPY there)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from conftest import POSTGRES_SKIP, Project, customer, postgres_enabled, postgres_schema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

import engine.store.dialect
from engine.clock import utcnow
from engine.config.settings import Config, load_config
from engine.customers.importing import Importer
from engine.customers.segment import calls
from engine.store import schema
from engine.web.segment import store

PROPERTY_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
    max_leaves=4,
)
# Calls that store, and the same with one thing wrong as it goes wrong in practice: an unknown or
# missing user, text too long or not text, a time that is none, a NUL, a lone surrogate, NaN.
GOOD = st.fixed_dictionaries(
    {
        "type": st.just("track"),
        "userId": st.sampled_from(["ann", "sara", " ann "]),
        "event": st.sampled_from(["visit", "purchase", " visit", "\u00fcber"]),
        "timestamp": st.sampled_from(["2026-11-02T10:00:00Z", "2026-11-02T10:00:00.123+02:00", "2026-11-02"]),
    },
    optional={
        "messageId": st.sampled_from(["m1", "m2", "m3", " m1", 5]),
        "properties": st.dictionaries(st.text(max_size=4), PROPERTY_VALUES, max_size=3),
    },
)
FAULTS = [
    ("userId", "nobody"),
    ("userId", ""),
    ("userId", "a" * 201),
    ("event", ""),
    ("event", "a\x00b"),
    ("event", "e" * 101),
    ("event", 3),
    ("timestamp", "2026-02-30T00:00:00Z"),
    ("timestamp", "soon"),
    ("messageId", ""),
    ("messageId", "x" * 201),
    ("messageId", "\ud800"),
    ("properties", [1]),
    ("properties", {"price": float("nan")}),
]
TRACK = st.builds(
    lambda call, fault: call if fault is None else {**call, fault[0]: fault[1]},
    GOOD,
    st.none() | st.none() | st.sampled_from(FAULTS),
)
CALLS = st.lists(TRACK | st.sampled_from([{"type": "page", "userId": "ann"}, "not an object"]), min_size=1, max_size=16)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def two_stores(request, tmp_path, monkeypatch):
    """Two projects alike, customers ann and sara in each: one for the batch, one for the calls one
    at a time. PostgreSQL copies even a batch of one here, so that COPY is what is compared."""
    monkeypatch.setenv("LIFECYCLE_SECRET", "test-secret")
    monkeypatch.delenv("LIFECYCLE_CONFIG", raising=False)
    monkeypatch.setattr(engine.store.dialect, "COPY_FROM", 1)
    (tmp_path / "batch").mkdir()
    (tmp_path / "one").mkdir()
    if request.param == "sqlite":
        yield from _ready(Project(tmp_path / "batch"), Project(tmp_path / "one"))
        return
    if not postgres_enabled():
        pytest.skip(POSTGRES_SKIP)
    with postgres_schema(tmp_path / "batch") as batch, postgres_schema(tmp_path / "one") as one:
        yield from _ready(batch, one)


def _ready(*projects: Project) -> Iterator[list[tuple[Project, Config, Engine]]]:
    stores = []
    for project in projects:
        project.customers(customer("ann"), customer("sara"))
        config = load_config(project.root / "config.yaml")
        stores.append((project, config, schema.open_store(config.database_url)))
    yield stores
    for _, _, store_engine in stores:
        store_engine.dispose()


@settings(max_examples=40, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(messages=CALLS)
def test_a_batch_stores_what_its_calls_store_one_at_a_time(two_stores, messages):
    (batch_project, config, batch_engine), (one_project, one_config, one_engine) = two_stores
    stored, skipped, rejected = store(batch_engine, config, calls(messages, config))
    importer = Importer(one_engine, one_config, utcnow(), source="segment")
    expected = {"stored": 0, "skipped": 0, "rejected": []}
    for call in calls(messages, one_config):
        if call.kind is None:
            continue
        result = importer.events([(call.position, call.record)], "/v1")
        expected["stored"] += result.stored
        expected["skipped"] += result.skipped
        expected["rejected"] += [{"index": p.line, "reason": p.message} for p in result.problems]
    assert {"stored": stored, "skipped": skipped, "rejected": rejected} == expected
    assert events(batch_project) == events(one_project)


def events(project: Project) -> list[tuple]:
    rows = project.query(
        "SELECT e.uid, c.external_id, e.name, e.at, e.properties FROM event e JOIN customer c ON c.id = e.customer_id"
    )
    return sorted(
        ((uid, who, name, str(at), json.dumps(_json(props), sort_keys=True)) for uid, who, name, at, props in rows),
        key=repr,
    )


def _json(value):
    return json.loads(value) if isinstance(value, str) else value


def test_a_batch_the_store_refuses_is_stored_call_by_call_and_names_the_refused_one(store_project, monkeypatch):
    """Should the database refuse the set-wise insert, nothing of it stays: the importer stores the
    calls one at a time, and only the call it refuses is named."""
    store_project.customers(customer("ann"))
    config = load_config(store_project.root / "config.yaml")
    messages = [
        {"type": "track", "userId": "ann", "event": "visit", "timestamp": "2026-11-02T10:00:00Z", "messageId": m}
        for m in ("r1", "r2", "r3")
    ]
    store_project.query(
        "CREATE TRIGGER no_r2 BEFORE INSERT ON event FOR EACH ROW WHEN (NEW.uid = 'r2') "
        "BEGIN SELECT RAISE(ABORT, 'r2 refused'); END"
        if store_project.database.startswith("sqlite")
        else "ALTER TABLE event ADD CONSTRAINT no_r2 CHECK (uid <> 'r2')"
    )
    store_engine = schema.open_store(config.database_url)
    stored, skipped, rejected = store(store_engine, config, calls(messages, config))
    store_engine.dispose()
    assert (stored, skipped, [item["index"] for item in rejected]) == (2, 0, [1]), rejected
    assert "refused" in rejected[0]["reason"]
    assert sorted(uid for (uid,) in store_project.query("SELECT uid FROM event")) == ["r1", "r3"]


def test_a_large_batch_of_mostly_unknown_customers_stores_the_known_ones(store_project):
    """The batch is large enough for COPY on PostgreSQL while its known customers' events are few."""
    store_project.customers(customer("ann"))
    config = load_config(store_project.root / "config.yaml")
    messages = [
        {"type": "track", "userId": "ann" if n % 12 == 0 else f"u{n}", "event": "visit", "timestamp": "2026-11-02"}
        for n in range(120)
    ]
    store_engine = schema.open_store(config.database_url)
    stored, skipped, rejected = store(store_engine, config, calls(messages, config))
    store_engine.dispose()
    assert (stored, skipped, len(rejected)) == (10, 0, 110)
    assert store_project.query("SELECT count(*) FROM event") == [(10,)]
