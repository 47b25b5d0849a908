"""The declared data model (config.yaml's `attributes:` and `events:`): import and the API type
values by it and refuse what does not fit, conditions are checked against it; and what no import
lets through, declared or not: numbers that are not finite, files that are not UTF-8."""

from __future__ import annotations

import json

import pytest
from conftest import customer
from starlette.testclient import TestClient
from test_bad_input import problem_lines

from engine.config.settings import load_config
from engine.web.app import create_app

MODEL = {
    "attributes": {
        "points": "integer",
        "ratio": "number",
        "vip": "boolean",
        "renews_on": "date",
        "last_seen": "datetime",
        "plan": {"type": "string", "values": ["free", "pro"]},
        "tags": "list",
    },
    "events": {"purchase": {"total": "number", "items": "integer"}},
}


def _bad(result, name: str) -> dict[int, str]:
    return {int(m["line"]): m["message"] for m in problem_lines(result.output) if m["file"].endswith(name)}


def _attributes(project, external_id: str) -> dict:
    (raw,) = project.query("SELECT attributes FROM customer WHERE external_id = :x", x=external_id)[0]
    return json.loads(raw)


def test_a_csv_is_typed_by_the_declarations_and_bad_values_are_listed(project):
    project.config(**MODEL)
    path = project.root / "customers.csv"
    path.write_text(
        "id,email,points,ratio,vip,renews_on,last_seen,plan,tags,note\n"
        'a1,a1@example.com,12,2.5,true,2026-12-01,2026-11-20T10:00:00+02:00,pro,"gold, early",0042\n'  # 2
        "b2,b2@example.com,twelve,,,,,,,\n"  # 3
        "c3,c3@example.com,,,maybe,,,,,\n"  # 4
        "d4,d4@example.com,,,,01/12/2026,,,,\n"  # 5
        "e5,e5@example.com,,,,,,gold,,\n"  # 6
        "f6,f6@example.com,1.5,,,,,,,\n"  # 7
        "g7,g7@example.com,,,,,yesterday,,,\n"  # 8
    )
    result = project.cli("import", "customers", str(path), expect=1)
    assert _bad(result, "customers.csv") == {
        3: "points is declared integer in config.yaml: expected an integer, not 'twelve'",
        4: "vip is declared boolean in config.yaml: expected true or false, not 'maybe'",
        5: "renews_on is declared date in config.yaml: expected a date (YYYY-MM-DD), not '01/12/2026'",
        6: "plan is declared string in config.yaml: 'gold' is not one of the allowed values (free, pro)",
        7: "points is declared integer in config.yaml: expected an integer, not '1.5'",
        8: "last_seen is declared datetime in config.yaml: expected a date and time (ISO-8601, like "
        "2026-11-23T09:00:00Z), not 'yesterday'",
    }, result.output
    assert "customers: 1 stored, 6 bad rows not stored" in result.output
    assert _attributes(project, "a1") == {
        "points": 12,
        "ratio": 2.5,
        "vip": True,
        "renews_on": "2026-12-01",
        "last_seen": "2026-11-20T08:00:00Z",
        "plan": "pro",
        "tags": ["gold", "early"],
        "note": 42,  # undeclared: typed by its look, as before
    }
    assert project.query("SELECT count(*) FROM customer") == [(1,)]


def test_jsonl_values_are_typed_and_event_properties_checked(project):
    project.config(**MODEL)
    project.customers(customer("ann", points="7", tags=["a"]), customer("bob", points=3.0, vip=False))
    assert _attributes(project, "ann") == {"points": 7, "tags": ["a"]}
    assert _attributes(project, "bob") == {"points": 3, "vip": False}
    path = project.jsonl(
        "events.jsonl",
        [
            {"customer": "ann", "event": "purchase", "at": "2026-03-01T10:00:00Z", "properties": {"total": "9.5"}},
            {"customer": "ann", "event": "purchase", "at": "2026-03-01T10:00:00Z", "properties": {"total": "abc"}},
            {"customer": "ann", "event": "purchase", "at": "2026-03-01T10:00:00Z", "properties": {"items": True}},
            {"customer": "ann", "event": "login", "at": "2026-03-01T10:00:00Z", "properties": {"total": "abc"}},
        ],
    )
    result = project.cli("import", "events", str(path), expect=1)
    assert _bad(result, "events.jsonl") == {
        2: "total is declared number in config.yaml: expected a number, not 'abc'",
        3: "items is declared integer in config.yaml: expected an integer, not true",
    }
    stored = [json.loads(p) for (p,) in project.query("SELECT properties FROM event ORDER BY id")]
    assert stored == [{"total": 9.5}, {"total": "abc"}]  # `login` declares nothing: kept as sent


@pytest.mark.parametrize("declared", [{}, MODEL], ids=["undeclared", "declared"])
def test_non_finite_numbers_are_refused_from_csv_and_jsonl(project, declared):
    project.config(**declared)
    csv = project.root / "customers.csv"
    csv.write_text("id,email,ratio\na1,a1@example.com,NaN\nb2,b2@example.com,-Infinity\nc3,c3@example.com,1.5\n")
    result = project.cli("import", "customers", str(csv), expect=1)
    assert set(_bad(result, "customers.csv")) == {2, 3}
    assert all("ratio" in m and ("NaN" in m or "Infinity" in m) for m in _bad(result, "customers.csv").values())
    jsonl = project.root / "more.jsonl"
    jsonl.write_text(
        '{"id": "d4", "email": "d4@example.com", "ratio": NaN}\n'
        '{"id": "e5", "email": "e5@example.com", "attributes": {"score": Infinity}}\n'
        '{"id": "f6", "email": "f6@example.com", "ratio": 2}\n'
    )
    result = project.cli("import", "customers", str(jsonl), expect=1)
    assert set(_bad(result, "more.jsonl")) == {1, 2}
    assert sorted(r[0] for r in project.query("SELECT external_id FROM customer")) == ["c3", "f6"]
    # Every later command still reads the store.
    assert project.cli("report", "--format", "json").exit_code == 0


def test_non_finite_event_properties_are_refused(project):
    project.customers(customer("ann"))
    path = project.root / "events.jsonl"
    path.write_text(
        '{"customer": "ann", "event": "purchase", "at": "2026-03-01T10:00:00Z", "properties": {"t": NaN}}\n'
    )
    result = project.cli("import", "events", str(path), expect=1)
    assert _bad(result, "events.jsonl") == {1: "properties.t: nan is not a finite number"}
    assert project.query("SELECT count(*) FROM event") == [(0,)]


@pytest.mark.parametrize("suffix, text", [(".csv", "id,email,city\na1,a1@example.com,Zürich\n"), (".jsonl", None)])
def test_a_latin1_file_is_one_clear_line_and_nothing_is_stored(project, suffix, text):
    path = project.root / f"people{suffix}"
    text = (
        text or '{"id": "a1", "email": "a1@example.com"}\n{"id": "b2", "email": "b2@example.com", "city": "Zürich"}\n'
    )
    path.write_bytes(text.encode("latin-1"))
    result = project.cli("import", "customers", str(path), expect=1)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    line = 2
    column = text.splitlines()[1].encode("latin-1").index("ü".encode("latin-1")) + 1
    assert lines[0] == (
        f"{path}:{line}:{column}: the file is not UTF-8 text (byte 0xFC cannot be read): save it as UTF-8 "
        "and import it again"
    )
    assert project.query("SELECT count(*) FROM customer") == [(0,)]


def test_a_wrongly_typed_field_far_down_a_file_is_one_bad_row(project):
    """1,100 good rows, then a `topics` that is not an object, then more good rows: the bad row is
    listed with its line, every other row is stored, nothing crashes."""
    records = [customer(f"c{n}") for n in range(1, 1101)]
    records.append({"id": "bad", "email": "bad@example.com", "topics": "offers"})
    records += [customer(f"d{n}") for n in range(1, 11)]
    path = project.jsonl("many.jsonl", records)
    result = project.cli("import", "customers", str(path), expect=1)
    assert _bad(result, "many.jsonl") == {1101: "'topics' must be an object of topic: true or false"}
    assert "customers: 1110 stored, 1 bad rows not stored" in result.output
    assert project.query("SELECT count(*) FROM customer") == [(1110,)]


def test_text_the_store_cannot_keep_is_refused(project):
    path = project.root / "odd.jsonl"
    path.write_text(
        '{"id": "a1", "email": "a1@example.com", "note": "nul \\u0000 here"}\n'
        '{"id": "b2", "email": "b2@example.com", "note": "lone \\ud800"}\n'
        '{"id": "c3", "email": "c3@example.com", "note": "fine"}\n'
    )
    result = project.cli("import", "customers", str(path), expect=1)
    assert _bad(result, "odd.jsonl") == {
        1: "note: text may not contain a NUL character",
        2: "note: text that is not valid Unicode",
    }
    assert project.query("SELECT external_id FROM customer") == [("c3",)]


def test_the_api_types_by_the_declarations_and_refuses_nan(project, monkeypatch):
    project.config(**MODEL)
    monkeypatch.setenv("LIFECYCLE_API_KEYS", "k")
    client = TestClient(create_app(load_config(project.root / "config.yaml")))
    headers = {"Authorization": "Bearer k"}
    body = '[{"id": "a1", "email": "a1@example.com", "points": "3"}, {"id": "b2", "email": "b2@example.com", '
    body += '"points": "x"}, {"id": "c3", "email": "c3@example.com", "ratio": "NaN"}]'
    response = client.post("/api/customers", content=body, headers=headers)
    assert response.status_code == 422
    assert response.json()["items"] == [
        {"index": 1, "reason": "points is declared integer in config.yaml: expected an integer, not 'x'"},
        {"index": 2, "reason": "ratio is declared number in config.yaml: expected a number, not 'NaN'"},
    ]
    # A bare NaN is no JSON at all: the whole body is refused before any item is read.
    bare = client.post("/api/customers", content=body.replace('"NaN"', "NaN"), headers=headers)
    assert bare.status_code == 400 and "NaN" in bare.text
    ok = client.post(
        "/api/customers", content='{"id": "a1", "email": "a1@example.com", "points": "3"}', headers=headers
    )
    assert ok.json() == {"stored": 1, "skipped": 0}
    assert _attributes(project, "a1") == {"points": 3}


# -- conditions -----------------------------------------------------------------------------------

# (campaign lines after `trigger:`/`steps:`, the expected `file:line:col: message`)
CONDITION_MISTAKES = {
    "gte on a string": (
        "audience:\n  - {attribute: plan, gte: 3}\n",
        "8:28: plan is declared string in config.yaml: gte compares numbers or dates, not text",
    ),
    "within_last on a number": (
        "audience:\n  - {attribute: points, within_last: 30d}\n",
        "8:38: points is declared integer in config.yaml: within_last needs a date or datetime",
    ),
    "in: outside the values": (
        "audience:\n  - {attribute: plan, in: [free, gold]}\n",
        "8:23: plan is declared string in config.yaml: 'gold' is not one of the allowed values (free, pro)",
    ),
    "equals with the wrong type": (
        "audience:\n  - {attribute: vip, equals: yes please}\n",
        "8:30: vip is declared boolean in config.yaml: expected true or false, not 'yes please'",
    ),
    "gt with a word on a number": (
        "audience:\n  - any:\n      - {attribute: points, gt: lots}\n",
        "9:33: points is declared integer in config.yaml: expected a number, not 'lots'",
    ),
    "a date compared with a number": (
        "audience:\n  - not: {attribute: renews_on, lt: 5}\n",
        "8:37: renews_on is declared date in config.yaml: expected a date (YYYY-MM-DD), not 5",
    ),
    "a core field": (
        "audience:\n  - {attribute: created_at, gt: soon}\n",
        "8:33: created_at is declared datetime in config.yaml: expected a date and time (ISO-8601, like "
        "2026-11-23T09:00:00Z), not 'soon'",
    ),
    "where: on an event property": (
        "audience:\n  - {event: purchase, where: {total: {gte: big}}}\n",
        "8:44: total is declared number in config.yaml: expected a number, not 'big'",
    ),
    "where: shorthand": (
        "audience:\n  - {event: purchase, where: {items: many}}\n",
        "8:38: items is declared integer in config.yaml: expected an integer, not 'many'",
    ),
    "a list tested with equals": (
        "audience:\n  - {attribute: tags, equals: gold}\n",
        "8:31: tags is declared list in config.yaml: equals cannot test a list: test it with exists",
    ),
}


def _conditional(project, extra: str) -> None:
    project.campaign(
        "cond",
        "description: Conditions\ntype: transactional\ntrigger:\n  event: purchase\n"
        "steps:\n  - {template: plain, subject: Hi}\n" + extra,
    )


@pytest.mark.parametrize("case", list(CONDITION_MISTAKES))
def test_conditions_are_checked_against_the_declared_types(project, case):
    project.config(**MODEL)
    extra, expected = CONDITION_MISTAKES[case]
    _conditional(project, extra)
    result = project.cli("validate", expect=1)
    assert [m.group(0) for m in problem_lines(result.output)] == [f"campaigns/cond.yaml:{expected}"], result.output


def test_conditions_that_fit_the_types_and_undeclared_names_pass(project):
    project.config(**MODEL)
    _conditional(
        project,
        "audience:\n"
        "  - {attribute: points, gte: 3}\n"
        "  - {attribute: ratio, lt: 2.5}\n"
        "  - {attribute: plan, in: [free, pro]}\n"
        "  - {attribute: renews_on, within_next: 30d}\n"
        "  - {attribute: renews_on, gt: 2026-01-01}\n"
        "  - {attribute: tags, exists: true}\n"
        "  - {attribute: shoe_size, gte: anything}\n"
        "  - {event: purchase, where: {total: {gt: 10}, colour: red}}\n",
    )
    assert "ok:" in project.cli("validate").output
