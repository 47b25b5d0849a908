"""Template mistakes a marketer makes, each caught by `validate` with its exact message on the line
to change; and what rendering guarantees at send time: data keys before dict methods, a loop
budget, and a failure on one customer's data that fails that email alone, with its reason."""

from __future__ import annotations

import pytest
from conftest import customer
from test_bad_input import problem_lines

from engine.campaigns.language import Campaign
from engine.config.settings import load_config
from engine.errors import TemplateError
from engine.mail.rendering import LOOP_LIMIT, Renderer, template_context

T = "templates/emails/t.mjml"
C = "campaigns/uses.yaml"
STEP = {"template": "t", "subject": "Hi"}

DECLARED = {
    "attributes": {"points": "integer", "plan": {"type": "string", "values": ["free", "pro"]}, "renews_on": "date"},
    "events": {"purchase": {"total": "number", "items": "list", "currency": "string"}},
}

# (template body after two lines of header, expected `file:line:col: message` lines).
# The body starts on line 3 of the file (`{% extends %}` and `{% block %}` come first).
TEMPLATE_MISTAKES = {
    "misspelt customer field": (
        "Hello {{ customer.frist_name }}",
        [f"{T}:3:1: customer.frist_name is undefined (did you mean first_name?)"],
    ),
    "misspelt in a branch never taken": (
        "{% if false %}\n{{ customer.pionts }}\n{% endif %}",
        [f"{T}:4:1: customer.pionts is undefined (did you mean points?)"],
    ),
    "misspelt property": (
        "{{ event.properties.totl|money }}",
        [f"{T}:3:1: event.properties.totl is undefined (did you mean total?)"],
    ),
    "property by subscript": (
        "{{ event.properties['curency'] }}",
        [f"{T}:3:1: event.properties.curency is undefined (did you mean currency?)"],
    ),
    "unknown event field": (
        "{{ event.when }}",
        [f"{T}:3:1: event.when is undefined"],
    ),
    "unknown top-level name": (
        "{{ nope }}",
        [f"{T}:3:1: 'nope' is undefined"],
    ),
    "filter on a string": (
        "{{ customer.plan|money }}",
        [f"{T}:3:1: the money filter cannot read 'free'"],
    ),
    "text compared with a number": (
        "{% if customer.plan > 3 %}big{% endif %}",
        [
            f"{T}:3:1: cannot compute this with the data given (TypeError: '>' not supported between "
            "instances of 'str' and 'int')"
        ],
    ),
    "range too long": (
        "{% for i in range(10**9) %}{{ i }}{% endfor %}",
        [f"{T}:3:1: loop too long: more than {LOOP_LIMIT} iterations"],
    ),
    "nested loops too long": (
        "{% for i in range(200) %}\n{% for j in range(200) %}{{ j }}{% endfor %}\n{% endfor %}",
        [f"{T}:4:1: loop too long: more than {LOOP_LIMIT} iterations"],
    ),
    "a huge power": (
        "{{ 2 ** 1000 }}",
        [f"{T}:3:1: number too large: an exponent above 100"],
    ),
    "a guarded but undeclared name": (
        "{% if customer.nickname is defined %}{{ customer.nickname }}{% endif %}",
        [f"{T}:3:1: customer.nickname is undefined"],
    ),
    "a huge repetition": (
        "{{ 'x' * 1000000 }}",
        [f"{T}:3:1: value too large: more than 100000 characters or items"],
    ),
    "misspelt MJML element": (
        '<mj-buton href="{{ links.preferences }}">Go</mj-buton>',
        [f"{T}:3:1: unknown MJML element <mj-buton> (did you mean mj-button?)"],
    ),
    "misspelt MJML attribute": (
        '</mj-text><mj-text colour="red">Hi</mj-text><mj-text>',
        [f"{T}:3:11: <mj-text> has no attribute 'colour' (did you mean color?)"],
    ),
}

# Works on the typed samples: comparisons, arithmetic and filters on declared values.
TEMPLATES_THAT_WORK = {
    "comparison on a declared number": "{% if event.properties.total > 50 %}big{% endif %}",
    "arithmetic and round": "{{ (event.properties.total * 1.2)|round(2) }} {{ customer.points * 2 }}",
    "money and number filters": "{{ event.properties.total|money('EUR') }} {{ customer.points|number }}",
    "date filter on a declared date": "{{ customer.renews_on|date }}",
    "a list property": "{% for item in event.properties.items %}{{ item }}{% endfor %}",
    "dict methods still work": "{% for k, v in customer.items() %}{{ k }}{% endfor %}",
    "a real loop": "{% for i in range(3) %}{{ loop.index }}{% endfor %}",
}


def _campaign(project, subject: str = '"Hello"') -> None:
    project.campaign(
        "uses",
        f"""\
description: Uses one template
type: transactional
trigger:
  event: purchase
steps:
  - template: t
    subject: {subject}
""",
    )


def _template(project, body: str) -> None:
    (project.root / "templates" / "emails" / "t.mjml").write_text(
        "{% extends '_layout.mjml' %}\n{% block content %}\n" + body + "\n{% endblock %}\n"
    )


def _problems(result) -> list[str]:
    return [m.group(0) for m in problem_lines(result.output)]


@pytest.mark.parametrize("case", list(TEMPLATE_MISTAKES))
def test_validate_reports_each_template_mistake_on_its_line(project, case):
    body, expected = TEMPLATE_MISTAKES[case]
    project.config(**DECLARED)
    _template(project, body)
    _campaign(project)
    result = project.cli("validate", expect=1)
    assert "Traceback" not in result.output
    assert _problems(result) == expected, result.output


@pytest.mark.parametrize("case", list(TEMPLATES_THAT_WORK))
def test_validate_renders_typed_samples(project, case):
    project.config(**DECLARED)
    _template(project, TEMPLATES_THAT_WORK[case])
    _campaign(project)
    result = project.cli("validate")
    assert "ok:" in result.output


SUBJECT_MISTAKES = {
    "misspelt in a plain subject": (
        '"Hi {{ customer.firstname }}"',
        [f"{C}:7:14: subject: customer.firstname is undefined (did you mean first_name?)"],
    ),
    "misspelt in the Arabic subject": (
        '\n      en: "Hi {{ customer.first_name }}"\n      ar: "مرحبا {{ customer.firstname }}"',
        [f"{C}:9:11: subject (ar): customer.firstname is undefined (did you mean first_name?)"],
    ),
    "syntax error in a subject": (
        '"Hi {{ customer.first_name }"',
        [f"{C}:7:14: subject: unexpected '}}'"],
    ),
}


@pytest.mark.parametrize("case", list(SUBJECT_MISTAKES))
def test_subject_mistakes_are_located_at_the_subject_naming_the_locale(project, case):
    subject, expected = SUBJECT_MISTAKES[case]
    _template(project, "Hello")
    _campaign(project, subject)
    result = project.cli("validate", expect=1)
    assert _problems(result) == expected, result.output


def test_the_same_broken_subject_in_two_campaigns_is_reported_for_both(project):
    _template(project, "Hello")
    _campaign(project, '"Hi {{ customer.firstname }}"')
    text = (project.root / "campaigns" / "uses.yaml").read_text()
    (project.root / "campaigns" / "again.yaml").write_text(text)
    result = project.cli("validate", expect=1)
    assert sorted(m["file"] for m in problem_lines(result.output)) == ["campaigns/again.yaml", C]


def test_without_declarations_names_in_the_store_are_known_and_validate_says_so(project):
    _template(project, "{{ customer.shoe_size }} {{ event.properties.colour }}")
    _campaign(project)
    result = project.cli("validate", expect=1)
    assert _problems(result) == [
        f"{T}:3:1: customer.shoe_size is undefined",
        f"{T}:3:1: event.properties.colour is undefined",
    ], result.output
    assert result.output.count("declares no attributes: or events:") == 1
    project.customers(customer("ann", shoe_size=38))
    project.events({"customer": "ann", "event": "purchase", "at": "2026-03-01T10:00:00Z", "properties": {"colour": 1}})
    assert "ok:" in project.cli("validate").output


# -- at send time ---------------------------------------------------------------------------------


def _context(project, properties: dict) -> tuple[Renderer, dict]:
    """A renderer and the context a send gets (template data wrapped as in production)."""
    config = load_config(project.root / "config.yaml")
    campaign = Campaign(name="c", type="transactional", trigger={"event": "purchase"}, steps=[STEP])
    event = {"name": "purchase", "at": "2026-03-01", "properties": properties}
    links = {"unsubscribe": "U", "preferences": "P"}
    return Renderer(config), template_context(config, campaign, 1, {"first_name": "Ann"}, event, links)


def test_a_property_named_items_is_the_property_not_the_dict_method(project):
    _template(project, "{{ event.properties.items }}|{{ event.properties.keys|join(',') }}")
    renderer, context = _context(project, {"items": "three socks", "keys": ["a", "b"]})
    _html, text = renderer.body("t", context)
    assert "three socks|a,b" in "".join(text)


@pytest.mark.parametrize(
    "body, message",
    [
        ("{{ event.properties.total|money }}", "the money filter cannot read 'abc'"),
        ("{{ event.properties.total|number }}", "the number filter cannot read 'abc'"),
        ("{{ event.properties.total|date }}", "the date filter cannot read 'abc'"),
        ("{{ (event.properties.total|int) / 0 }}", "ZeroDivisionError"),
        ("{{ event.properties.total > 5 }}", "'>' not supported"),
        ("{{ event.properties.totl }}", "event.properties.totl is undefined (did you mean total?)"),
    ],
)
def test_bad_data_for_one_customer_is_a_template_error_naming_the_line(project, body, message):
    _template(project, body)
    renderer, context = _context(project, {"total": "abc"})
    with pytest.raises(TemplateError) as caught:
        renderer.body("t", context)
    (problem,) = caught.value.problems
    assert (problem.file, problem.line) == (T, 3)
    assert message in problem.message


def test_a_huge_loop_over_data_ends_at_the_budget(project):
    _template(project, "{% for a in event.properties.xs %}{% for b in event.properties.xs %}.{% endfor %}{% endfor %}")
    renderer, context = _context(project, {"xs": list(range(1000))})
    with pytest.raises(TemplateError, match="loop too long"):
        renderer.body("t", context)


def test_tick_fails_only_the_send_whose_data_breaks_the_filter(project):
    project.config(events={"purchase": {"total": "number"}})
    _template(project, "Total {{ event.properties.total|money }}")
    _campaign(project)
    project.customers(customer("ann"), customer("bob"))
    project.events(
        {"id": "p1", "customer": "ann", "event": "purchase", "at": "2026-03-01T10:00:00Z", "properties": {"total": 5}},
    )
    # Stored before `total` was declared: the store holds what the import of the day accepted.
    project.config()
    project.events(
        {
            "id": "p2",
            "customer": "bob",
            "event": "purchase",
            "at": "2026-03-01T10:00:00Z",
            "properties": {"total": "x"},
        },
    )
    project.config(events={"purchase": {"total": "number"}})
    result = project.cli("tick", "--now", "2026-03-01T10:05:00Z", expect=None)
    assert "Traceback" not in result.output
    sends = {r[1]: (r[3], r[4]) for r in project.sends("uses")}
    assert sends["ann"] == ("sent", None)
    assert sends["bob"][0] == "failed" and "money filter cannot read 'x'" in sends["bob"][1]
