"""Every bad input gets its clear, located error and exit status 1, and nothing is sent or stored:
campaign files, templates, config.yaml, option values, import files, the suppression list."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
from conftest import customer

LOCATED = re.compile(r"^(?P<file>\S+?):(?P<line>\d+):(?P<col>\d+): (?P<message>.+)$")


def problem_lines(output: str) -> list[re.Match]:
    """The `file:line:col: message` lines of an output."""
    return [m for m in (LOCATED.match(line.strip()) for line in output.splitlines()) if m]


def located(output: str, file_suffix: str, line: int, phrase: str) -> re.Match:
    """The one problem of `file_suffix` at `line` whose message holds `phrase` (case-insensitive)."""
    found = [m for m in problem_lines(output) if m["file"].replace("\\", "/").endswith(file_suffix)]
    assert found, f"no problem located in {file_suffix}:\n{output}"
    matching = [m for m in found if int(m["line"]) == line and phrase.lower() in m["message"].lower()]
    assert matching, f"expected {file_suffix}:{line}: ...{phrase}... in:\n{output}"
    assert int(matching[0]["col"]) >= 1
    return matching[0]


# A transactional campaign that sends: used next to broken ones to prove nothing goes out.
RECEIPT = """\
description: Thank every buyer
type: transactional
trigger:
  event: purchase
steps:
  - template: plain
    subject: "Thanks {{ customer.first_name }}"
"""

# Each broken campaign: (file stem, text, line of the mistake, a phrase of the message).
BROKEN_CAMPAIGNS = {
    "syntax_error": (
        "broken",
        """\
description: A colon in an unquoted value
type: transactional
trigger:
  event: purchase
steps:
  - template: plain
    subject: Thanks: for your order
""",
        7,
        "invalid YAML",
    ),
    "unknown_key": (
        "broken",
        """\
description: A misspelt key
type: transactional
trigger:
  event: purchase
steps:
  - template: plain
    subject: "Thanks"
sned_window: {start: "09:00", end: "20:00"}
""",
        8,
        "unknown key 'sned_window'",
    ),
    "bad_duration": (
        "broken",
        """\
description: A duration with an unknown unit
type: transactional
trigger:
  event: purchase
steps:
  - template: plain
    subject: "Thanks"
    delay: 3q
""",
        8,
        "not a duration",
    ),
    "undeclared_topic": (
        "broken",
        """\
description: A topic that config.yaml does not declare
type: marketing
topic: gossip
trigger:
  event: purchase
steps:
  - template: plain
    subject: "Thanks"
""",
        3,
        "topic 'gossip' is not declared",
    ),
    "two_trigger_kinds": (
        "broken",
        """\
description: A trigger of two kinds at once
type: transactional
trigger: {event: purchase, schedule: "0 9 * * MON"}
steps:
  - template: plain
    subject: "Thanks"
""",
        3,
        "exactly one of event, inactivity, date, schedule, at",
    ),
    "two_operators": (
        "broken",
        """\
description: A condition with two operators
type: transactional
trigger:
  event: purchase
audience:
  - {event: purchase, at_least: 1}
  - {attribute: plan, equals: pro, in: [pro, business]}
steps:
  - template: plain
    subject: "Thanks"
""",
        7,
        "exactly one operator",
    ),
    "undeclared_subscribed_topic": (
        "broken",
        """\
description: An audience on a topic that config.yaml does not declare
type: marketing
topic: news
trigger:
  event: purchase
audience:
  - subscribed: gossip
steps:
  - template: plain
    subject: "Thanks"
""",
        7,
        "topic 'gossip' is not declared",
    ),
    "missing_steps": (
        "broken",
        """\
description: No steps at all
type: transactional
trigger:
  event: purchase
""",
        1,
        "'steps' is required",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN_CAMPAIGNS))
def test_validate_locates_each_campaign_mistake(project, case):
    stem, text, line, phrase = BROKEN_CAMPAIGNS[case]
    project.campaign("receipt", RECEIPT)
    project.campaign(stem, text)
    result = project.cli("validate", expect=1)
    located(result.output, f"campaigns/{stem}.yaml", line, phrase)
    assert "Traceback" not in result.output
    # The good campaign is not blamed.
    assert not [m for m in problem_lines(result.output) if m["file"].endswith("receipt.yaml")]


def test_validate_passes_the_same_project_without_the_broken_file(project):
    """The control for the cases above: the fixture project with RECEIPT alone is valid."""
    project.campaign("receipt", RECEIPT)
    result = project.cli("validate")
    assert "1 campaigns" in result.output


def test_duplicate_campaign_names_across_two_files(project):
    project.campaign("a_thanks", RECEIPT.replace("description:", "name: thanks\ndescription:"))
    project.campaign(
        "b_thanks", "description: Another one\n" + RECEIPT.replace("description: Thank every buyer\n", "name: thanks\n")
    )
    # b_thanks.yaml: line 1 description, line 2 `name: thanks`.
    assert (project.root / "campaigns" / "b_thanks.yaml").read_text().splitlines()[1] == "name: thanks"
    result = project.cli("validate", expect=1)
    problem = [m for m in problem_lines(result.output) if "thanks" in m["message"] and "already used" in m["message"]]
    assert len(problem) == 1, result.output
    assert problem[0]["file"].endswith("campaigns/b_thanks.yaml")
    assert "a_thanks.yaml" in problem[0]["message"]


def test_duplicate_campaign_name_points_at_the_name_line(project):
    project.campaign("a_thanks", RECEIPT.replace("description:", "name: thanks\ndescription:"))
    project.campaign(
        "b_thanks", "description: Another one\n" + RECEIPT.replace("description: Thank every buyer\n", "name: thanks\n")
    )
    result = project.cli("validate", expect=1)
    located(result.output, "campaigns/b_thanks.yaml", 2, "already used")


def _buyers(project):
    project.customers(customer("ann"), customer("bob"))
    project.events(
        {"id": "p1", "customer": "ann", "event": "purchase", "at": "2026-03-01T10:00:00Z"},
        {"id": "p2", "customer": "bob", "event": "purchase", "at": "2026-03-01T10:00:00Z"},
    )


@pytest.mark.parametrize("case", list(BROKEN_CAMPAIGNS))
def test_tick_with_a_broken_campaign_sends_nothing(project, case):
    stem, text, line, phrase = BROKEN_CAMPAIGNS[case]
    _buyers(project)
    project.campaign("receipt", RECEIPT)
    project.campaign(stem, text)
    result = project.cli("tick", "--now", "2026-03-01T10:05:00Z", expect=1)
    located(result.output, f"campaigns/{stem}.yaml", line, phrase)
    assert "Traceback" not in result.output
    assert project.outbox() == []
    assert project.sends() == []
    assert project.query("SELECT count(*) FROM entry") == [(0,)]


def test_tick_sends_once_the_broken_campaign_is_gone(project):
    """The control for the test above: the same store and RECEIPT do send."""
    _buyers(project)
    project.campaign("receipt", RECEIPT)
    project.campaign("broken", BROKEN_CAMPAIGNS["bad_duration"][1])
    project.cli("tick", "--now", "2026-03-01T10:05:00Z", expect=1)
    (project.root / "campaigns" / "broken.yaml").unlink()
    counts = project.tick("2026-03-01T10:05:00Z")
    assert counts["receipt"]["sent"] == 2
    assert len(project.outbox()) == 2


# -- templates ---------------------------------------------------------------------------------


def _uses(project, template: str, kind: str = "transactional") -> None:
    topic = "topic: news\n" if kind == "marketing" else ""
    project.campaign(
        "uses",
        f"""\
description: Uses one template
type: {kind}
{topic}trigger:
  event: purchase
steps:
  - template: {template}
    subject: "Hello"
""",
    )


def test_jinja_syntax_error_is_located_in_the_template(project):
    (project.root / "templates" / "emails" / "broken.mjml").write_text(
        "{% extends '_layout.mjml' %}\n"
        "{% block content %}\n"
        "Hello {{ customer.first_name }}\n"
        "{% if customer.first_name %}\n"
        "Welcome back\n"
        "{% endfor %}\n"
        "{% endblock %}\n"
    )
    _uses(project, "broken")
    result = project.cli("validate", expect=1)
    located(result.output, "templates/emails/broken.mjml", 6, "endfor")


def test_tick_with_a_broken_template_writes_no_email(project):
    """A template that does not compile never goes out blank or half-rendered."""
    (project.root / "templates" / "emails" / "broken.mjml").write_text(
        "{% extends '_layout.mjml' %}\n{% block content %}\nHello {{ customer.first_name }}\n{% endfor %}\n"
        "{% endblock %}\n"
    )
    _uses(project, "broken")
    _buyers(project)
    project.cli("tick", "--now", "2026-03-01T10:05:00Z", expect=None)
    assert project.outbox() == []
    assert project.sent() == []


def test_undefined_name_fails_validate(project):
    (project.root / "templates" / "emails" / "nosy.mjml").write_text(
        "{% extends '_layout.mjml' %}\n"
        "{% block content %}\n"
        "Hello {{ customer.first_name }},\n"
        "\n"
        "your code is {{ nope }}\n"
        "{% endblock %}\n"
    )
    _uses(project, "nosy")
    result = project.cli("validate", expect=1)
    problem = located(result.output, "templates/emails/nosy.mjml", 5, "nope")
    assert "undefined" in problem["message"].lower()


def test_validate_survives_a_filter_on_an_attribute_it_cannot_know(project):
    """Any imported attribute can be named, so validate cannot know `birthday`: it may accept the
    template or report it, but as a located line, never as a crash."""
    project.template("bday", "Hello {{ customer.first_name }}, see you on {{ customer.birthday|date }}")
    _uses(project, "bday")
    result = project.cli("validate", expect=None)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if result.exit_code:
        assert [m for m in problem_lines(result.output) if m["file"].endswith("templates/emails/bday.mjml")]


def test_tick_survives_a_filter_on_a_missing_attribute(project):
    """Declared, so `validate` knows the name; these customers lack it, so their sends fail."""
    project.config(attributes={"birthday": "date"})
    project.template("bday", "Hello {{ customer.first_name }}, see you on {{ customer.birthday|date }}")
    project.campaign(
        "birthday",
        """\
description: Uses an attribute the customers do not have
type: transactional
priority: 90
trigger:
  event: purchase
steps:
  - template: bday
    subject: "Hello"
""",
    )
    project.campaign("receipt", RECEIPT)
    _buyers(project)
    result = project.cli("tick", "--now", "2026-03-01T10:05:00Z", expect=None)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    birthday = project.sends("birthday")
    assert [(r[1], r[3]) for r in birthday] == [("ann", "failed"), ("bob", "failed")]
    assert all("birthday" in r[4] for r in birthday)
    assert sorted(project.sent("receipt")) == [("ann", 1), ("bob", 1)]
    assert len(project.outbox()) == 2


NO_LINKS = """<mjml><mj-body><mj-section><mj-column><mj-text>
{{% block content %}}{{% endblock %}}
{{{{ brand.address }}}}
</mj-text></mj-column></mj-section></mj-body></mjml>"""


def test_marketing_template_without_unsubscribe_link_fails_validate(project):
    project.template("bare", "Buy now, {{ customer.first_name }}!", layout=NO_LINKS)
    _uses(project, "bare", kind="marketing")
    result = project.cli("validate", expect=1)
    problems = [m for m in problem_lines(result.output) if "bare" in m["message"]]
    assert problems, result.output
    assert "links.unsubscribe" in problems[0]["message"]


def test_transactional_template_without_unsubscribe_link_is_fine(project):
    """The control: the link rule is for marketing only."""
    project.template("bare", "Your receipt, {{ customer.first_name }}.", layout=NO_LINKS)
    _uses(project, "bare", kind="transactional")
    project.cli("validate")


def test_missing_template_file_fails_validate(project):
    _uses(project, "ghost")
    result = project.cli("validate", expect=1)
    problems = [m for m in problem_lines(result.output) if "ghost" in m["message"] or "ghost" in m["file"]]
    assert problems, result.output
    assert "does not exist" in problems[0]["message"]


# -- config.yaml -------------------------------------------------------------------------------

CONFIG = """\
database: sqlite:///store.db
from: {email: hello@shop.example, name: Shop}
brand: {name: Shop, address: 1 Test Street, url: https://shop.example}
timezone: UTC
locales: [en, ar]
sender:
  backend: file
  file: {directory: outbox}
scheduler:
  interval: 60s
  batch_size: 100
topics:
  news: {title: News}
  offers: {title: Offers}
"""


def _config_text(project, text: str) -> None:
    (project.root / "config.yaml").write_text(text)


def test_the_hand_written_config_is_valid(project):
    """The control for the config cases: CONFIG as written passes."""
    _config_text(project, CONFIG)
    project.cli("validate")


@pytest.mark.parametrize(
    "text, line, phrase",
    [
        (CONFIG + "colour: blue\n", 15, "unknown key 'colour'"),
        (CONFIG.replace("  batch_size: 100\n", "  batch_size: 100\n  batch: 10\n"), 12, "unknown key 'batch'"),
        (CONFIG.replace("timezone: UTC", "timezone: Mars/Olympus"), 4, "not an IANA timezone"),
        (CONFIG.replace("batch_size: 100", "batch_size: lots"), 11, "batch_size"),
    ],
    ids=["unknown_key", "unknown_nested_key", "bad_timezone", "bad_type"],
)
def test_config_mistakes_are_located(project, text, line, phrase):
    project.campaign("receipt", RECEIPT)
    _config_text(project, text)
    result = project.cli("validate", expect=1)
    located(result.output, "config.yaml", line, phrase)
    result = project.cli("tick", "--now", "2026-03-01T10:05:00Z", expect=1)
    located(result.output, "config.yaml", line, phrase)
    assert "Traceback" not in result.output
    assert project.outbox() == []


def test_missing_secret_is_named(project, monkeypatch):
    _buyers(project)
    project.campaign("receipt", RECEIPT)
    monkeypatch.delenv("LIFECYCLE_SECRET")
    result = project.cli("validate", expect=1)
    assert "LIFECYCLE_SECRET" in result.output
    result = project.cli("tick", "--now", "2026-03-01T10:05:00Z", expect=1)
    assert "LIFECYCLE_SECRET" in result.output
    assert "Traceback" not in result.output
    assert project.outbox() == []
    assert project.sends() == []


# -- option values -----------------------------------------------------------------------------


def test_tick_with_a_bad_now_is_one_clear_line(project):
    project.campaign("receipt", RECEIPT)
    result = project.cli("tick", "--now", "not-a-date", expect=1)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "not-a-date" in lines[0]
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


# -- import ------------------------------------------------------------------------------------


def test_csv_customers_bad_rows_are_listed_and_not_stored(project):
    path = project.root / "customers.csv"
    path.write_text(
        "id,email,first_name,created_at\n"  # line 1
        "a1,a1@example.com,Ann,2026-01-01T00:00:00Z\n"  # line 2
        "b2,not-an-email,Bob,2026-01-01T00:00:00Z\n"  # line 3: bad email
        "c3,c3@example.com,Cid,2026-01-02\n"  # line 4
        "d4,d4@example.com,Dee,yesterday\n"  # line 5: bad created_at
        "e5,e5@example.com,Eve,2026-01-03T10:00:00+02:00\n"
    )  # line 6
    result = project.cli("import", "customers", str(path), expect=1)
    bad = {int(m["line"]): m["message"] for m in problem_lines(result.output) if m["file"].endswith("customers.csv")}
    assert set(bad) == {3, 5}, result.output
    assert "email" in bad[3] and "not-an-email" in bad[3]
    assert "created_at" in bad[5]
    stored = sorted(r[0] for r in project.query("SELECT external_id FROM customer"))
    assert stored == ["a1", "c3", "e5"]
    created = dict(project.query("SELECT external_id, created_at FROM customer"))
    assert created["e5"].startswith("2026-01-03 08:00:00")


def test_jsonl_events_bad_lines_are_listed_and_not_stored(project):
    project.customers(customer("ann"))
    path = project.root / "events.jsonl"
    path.write_text(
        '{"id": "e1", "customer": "ann", "event": "purchase", "at": "2026-03-01T10:00:00Z"}\n'  # 1
        '{"id": "e2", "customer": "ann", "event": "purchase", "at": \n'  # 2: bad JSON
        '{"id": "e3", "customer": "zed", "event": "purchase", "at": "2026-03-01T10:00:00Z"}\n'  # 3: unknown
        '{"id": "e4", "customer": "ann", "event": "purchase"}\n'  # 4: no at
        '{"id": "e5", "customer": "ann", "event": "login", "at": "2026-03-02T10:00:00Z"}\n'
    )  # 5
    result = project.cli("import", "events", str(path), expect=1)
    bad = {int(m["line"]): m["message"] for m in problem_lines(result.output) if m["file"].endswith("events.jsonl")}
    assert set(bad) == {2, 3, 4}, result.output
    assert "JSON" in bad[2]
    assert "zed" in bad[3]
    assert "'at'" in bad[4]
    assert sorted(r[0] for r in project.query("SELECT uid FROM event")) == ["e1", "e5"]


def test_csv_topic_column_records_the_choice_and_its_consent(project):
    path = project.root / "customers.csv"
    path.write_text("id,email,topic:offers,topic:news\na1,a1@example.com,false,true\nb2,b2@example.com,,\n")
    project.cli("import", "customers", str(path))
    choices = project.query("""SELECT c.external_id, s.topic, s.subscribed FROM subscription s
                               JOIN customer c ON c.id = s.customer_id ORDER BY c.external_id, s.topic""")
    assert choices == [("a1", "news", 1), ("a1", "offers", 0)]
    consents = project.query("""SELECT c.external_id, k.topic, k.action FROM consent k
                                JOIN customer c ON c.id = k.customer_id ORDER BY k.topic""")
    assert ("a1", "offers", "unsubscribe") in consents
    assert ("a1", "news", "subscribe") in consents
    assert not [c for c in consents if c[0] == "b2"]


def test_unknown_csv_columns_become_typed_attributes(project):
    path = project.root / "customers.csv"
    path.write_text(
        "id,email,points,ratio,vip,renews_on,last_seen,plan\n"
        "a1,a1@example.com,120,2.5,true,2026-12-01,2026-11-20T10:00:00+02:00,pro\n"
    )
    project.cli("import", "customers", str(path))
    (raw,) = project.query("SELECT attributes FROM customer WHERE external_id = 'a1'")[0]
    attributes = json.loads(raw)
    assert attributes["points"] == 120 and type(attributes["points"]) is int
    assert attributes["ratio"] == 2.5
    assert attributes["vip"] is True
    assert attributes["plan"] == "pro"
    assert attributes["renews_on"] == "2026-12-01"
    seen = datetime.fromisoformat(attributes["last_seen"].replace("Z", "+00:00"))
    assert seen == datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    # Core columns are columns, not attributes.
    assert "email" not in attributes and "id" not in attributes


def test_reimporting_events_with_ids_stores_nothing_twice(project):
    project.customers(customer("ann"))
    path = project.jsonl(
        "history.jsonl",
        [
            {
                "id": "h1",
                "customer": "ann",
                "event": "purchase",
                "at": "2026-03-01T10:00:00Z",
                "properties": {"total": 5},
            },
            {"id": "h2", "customer": "ann", "event": "login", "at": "2026-03-02T10:00:00Z"},
        ],
    )
    first = project.cli("import", "events", str(path))
    assert "2 stored" in first.output
    second = project.cli("import", "events", str(path))
    assert "0 stored" in second.output and "2 already stored" in second.output
    assert project.query("SELECT count(*) FROM event") == [(2,)]


# -- the suppression list ----------------------------------------------------------------------


def test_suppressed_address_gets_no_transactional_email(project):
    project.campaign("receipt", RECEIPT)
    project.customers(customer("sam"), customer("tia"))
    project.cli("suppress", "sam@example.com")
    project.events(
        {"id": "p1", "customer": "sam", "event": "purchase", "at": "2026-03-01T10:00:00Z"},
        {"id": "p2", "customer": "tia", "event": "purchase", "at": "2026-03-01T10:00:00Z"},
    )
    counts = project.tick("2026-03-01T10:05:00Z")
    assert counts["receipt"]["skipped:suppressed"] == 1
    assert ("receipt", "sam", 1, "skipped", "suppressed") in project.sends()
    assert project.sent("receipt") == [("tia", 1)]
    assert [m["To"].addresses[0].addr_spec for m in project.outbox()] == ["tia@example.com"]


def test_unsuppress_of_an_address_not_on_the_list_fails(project):
    result = project.cli("unsuppress", "nobody@example.com", expect=1)
    assert "nobody@example.com" in result.output
    assert "Traceback" not in result.output
    project.cli("suppress", "sam@example.com")
    project.cli("unsuppress", "sam@example.com")
    project.cli("unsuppress", "sam@example.com", expect=1)
