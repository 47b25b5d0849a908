"""Property-based: whatever a marketer writes in a campaign file (a valid campaign with keys
removed, values replaced by any YAML value, unknown keys added, or text that is not YAML at all),
`lifecycle validate` answers with `ok` or located problems (exit 0 or 1, never a traceback), and
`lifecycle tick` on what validates never raises and never leaves a send `sending`.

Examples are derandomized and few, so CI stays fast and stable."""

from __future__ import annotations

import re

import yaml
from conftest import customer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

VALID = {
    "type": "marketing",
    "topic": "news",
    "trigger": {"event": "signed_up", "where": {"plan": {"in": ["pro", "free"]}}},
    "audience": [{"stage": "prospect"}, {"attribute": "points", "gte": 1}],
    "steps": [
        {"template": "plain", "subject": {"en": "Hi {{ customer.first_name }}", "ar": "مرحبا"}, "delay": "1h"},
        {"template": "plain", "subject": "Again", "delay": "2d"},
    ],
    "exit": [{"event": "purchase"}],
    "reentry": "30d",
    "send_window": {"start": "09:00", "end": "20:00"},
    "expire_after": "3d",
    "goal": {"event": "purchase", "within": "7d"},
    "holdout": "10%",
}
LINE = re.compile(r"^[^:\n]+:\d+:\d+: .+$")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["1h", "-1d", "0d", "25:00", "{{ x }}", "news", "welcome", "never", "100%", "a@b.example"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def paths(node: object, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a nested campaign, lists included."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += paths(value, (*prefix, index))
    return found


def changed(campaign: dict, path: tuple, action: str, value: object) -> dict:
    """The campaign with the value at `path` replaced, removed, or given a sibling key."""
    copy = yaml.safe_load(yaml.safe_dump(campaign, allow_unicode=True))
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if action == "remove":
        del parent[last]
    elif action == "add" and isinstance(parent, dict):
        parent[f"{last}_extra"] = value
    else:
        parent[last] = value
    return copy


@st.composite
def campaign_texts(draw) -> str:
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "raw"]))
    if kind == "raw":
        return draw(st.text(max_size=200))
    path = draw(st.sampled_from(paths(VALID)))
    action = draw(st.sampled_from(["replace", "remove", "add"]))
    return yaml.safe_dump(changed(VALID, path, action, draw(values)), allow_unicode=True)


def test_the_valid_campaign_is_valid(project):
    project.campaign("news", yaml.safe_dump(VALID, allow_unicode=True))
    assert project.cli("validate").output.splitlines()[-1].startswith("ok: config, 1 campaigns")


@SETTINGS
@given(text=campaign_texts())
def test_any_campaign_file_is_validated_without_a_traceback_and_ticks_safely(project, text):
    project.campaign("news", text)
    result = project.cli("validate", expect=None)
    assert result.exit_code in (0, 1), (text, result.output, result.exception)
    event(f"validate exit {result.exit_code}")
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    problems = [
        line for line in result.output.splitlines() if line and not line.startswith(("note: ", "ok: ", "warning: "))
    ]
    assert all(LINE.match(line) for line in problems), problems
    if result.exit_code == 0:
        project.customers(customer("ann", points=3, plan="pro"))
        project.events({"customer": "ann", "event": "signed_up", "at": "2026-03-01T10:00:00Z"})
        ticked = project.cli("tick", "--now", "2026-03-01T12:00:00Z", expect=None)
        assert ticked.exit_code in (0, 1) and not isinstance(ticked.exception, (KeyError, TypeError, ValueError))
        assert project.query("SELECT count(*) FROM send WHERE status = 'sending'") == [(0,)]
