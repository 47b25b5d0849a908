"""The mistakes marketers and operators really make in campaigns/*.yaml and config.yaml, each
reported by `lifecycle validate` as `file:line:col: message` on the line to change, in words that
say what to write instead: one table, with every message and position exact."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_bad_input import CONFIG, RECEIPT
from typer.testing import CliRunner

from engine.campaigns.language import load_campaigns
from engine.cli import app
from engine.config.settings import load_config

# trigger: is on line 6, as in the report of `tigger:`.
CAMPAIGN = """\
name: welcome
description: Greet new customers
type: marketing
topic: news
priority: 10
trigger:
  event: signed_up
steps:
  - template: plain
    subject: "Welcome"
    delay: 10m
"""
STEP = '  - template: plain\n    subject: "Welcome"\n    delay: 10m\n'


def campaign(old: str = "", new: str = "", add: str = "") -> tuple[str, str]:
    assert old in CAMPAIGN
    return "campaigns/welcome.yaml", CAMPAIGN.replace(old, new, 1) + add


def config(old: str = "", new: str = "", add: str = "") -> tuple[str, str]:
    assert old in CONFIG
    return "config.yaml", CONFIG.replace(old, new, 1) + add


# Each mistake: (file, text) and the exact lines of `lifecycle validate`, without the file's name.
MISTAKES = {
    "unknown_key_on_its_own_line": (
        campaign("trigger:", "tigger:"),
        ["6:1: unknown key 'tigger': did you mean 'trigger'?"],
    ),
    "unknown_key_under_a_step": (
        campaign("    delay: 10m", "    dealy: 10m"),
        ["11:5: unknown key 'dealy' under steps: did you mean 'delay'?"],
    ),
    "unknown_operator": (
        campaign(add="audience:\n  - {attribute: plan, equal: pro}\n"),
        ["13:23: unknown key 'equal' under audience: did you mean 'equals'?"],
    ),
    "step_key_at_the_top": (
        campaign(add="delay: 3d\n"),
        ["12:1: unknown key 'delay': 'delay' belongs to a step: indent it under an item of steps:"],
    ),
    "delay_indented_under_subject": (
        campaign('    subject: "Welcome"\n    delay: 10m', '    subject:\n      en: "Welcome"\n      delay: 10m'),
        [
            "12:7: steps.subject: 'delay' is not a locale: is it indented under subject: by mistake? It belongs to "
            "the step"
        ],
    ),
    "subject_without_the_default_locale": (
        campaign('    subject: "Welcome"', '    subject:\n      ar: "أهلاً"'),
        [
            "10:5: steps.subject: the default locale 'en' is missing: add `en: ...`, the subject for every "
            "customer whose own locale has none"
        ],
    ),
    "subject_in_a_locale_not_configured": (
        campaign('    subject: "Welcome"', '    subject:\n      en: "Welcome"\n      fr: "Bienvenue"'),
        ["12:7: steps.subject: 'fr' is not one of the locales in config.yaml (locales: en, ar)"],
    ),
    "subject_empty": (
        campaign('subject: "Welcome"', 'subject: ""'),
        ["10:14: steps.subject is empty: write the subject line"],
    ),
    "subject_locale_left_blank": (
        campaign('    subject: "Welcome"', "    subject:\n      en: Welcome\n      ar:"),
        ["12:10: steps.subject.ar is empty: write a value after the colon"],
    ),
    "subject_jinja_unquoted": (
        campaign('subject: "Welcome"', "subject: {{ customer.first_name }}"),
        ['10:15: a value that starts with { or [ must be in quotes (like "{{ name }}")'],
    ),
    "colon_in_an_unquoted_value": (
        campaign('subject: "Welcome"', "subject: Welcome: friend"),
        [
            "10:21: invalid YAML: a value holds ': ': put the whole value in quotes (mapping values are not "
            "allowed here)"
        ],
    ),
    "tab_indent": (
        campaign("    delay: 10m", "\tdelay: 10m"),
        ["11:1: invalid YAML: a tab: indent with spaces, not tabs (found character '\\t' that cannot start any token)"],
    ),
    "recipient_two_addresses": (
        campaign(add="recipient: a@shop.example, b@shop.example\n"),
        [
            "12:12: recipient: 'a@shop.example, b@shop.example' is not one email address (The part after the "
            "@-sign contains invalid characters: ',', '@', SPACE): write one, like support@example.com"
        ],
    ),
    "recipient_with_a_name": (
        campaign(add="recipient: Support <support@shop.example>\n"),
        [
            "12:12: recipient: 'Support <support@shop.example>' is not one email address (A display name and angle "
            "brackets around the email address are not permitted here): write one, like support@example.com"
        ],
    ),
    "template_misspelt": (
        campaign("template: plain", "template: plian"),
        ["9:15: template 'plian' does not exist: there is no templates/emails/plian.mjml: did you mean 'plain'?"],
    ),
    "template_with_extension": (
        campaign("template: plain", "template: plain.mjml"),
        ["9:15: steps.template: write the template's name without .mjml: template: plain"],
    ),
    "duration_in_words": (
        campaign("delay: 10m", "delay: 3 days"),
        ["11:12: steps.delay: '3 days' is not a duration: write 3d"],
    ),
    "duration_unknown_unit": (
        campaign("delay: 10m", "delay: 3q"),
        ["11:12: steps.delay: '3q' is not a duration: write a number and a unit, like 30s, 10m, 4h, 7d or 2w"],
    ),
    "duration_without_unit": (
        campaign(add="audience:\n  - {event: purchase, within: 30}\n"),
        ["13:31: audience.within: '30' has no unit: write it like 30d (days), 30h (hours) or 30m (minutes)"],
    ),
    "delay_negative": (
        campaign("delay: 10m", "delay: -1d"),
        ["11:12: steps.delay: '-1d' is negative: a wait can only go forward"],
    ),
    "expire_after_zero": (
        campaign(add="expire_after: 0d\n"),
        ["12:15: expire_after: must be longer than 0: write one like 7d"],
    ),
    "expire_after_shorter_than_a_tick": (
        campaign(add="expire_after: 10s\n"),
        [
            "12:15: expire_after: '10s' is shorter than the scheduler's interval (1m): a due step could expire "
            "before a tick sends it"
        ],
    ),
    "time_of_day_25": (
        campaign(add='send_window: {start: "09:00", end: "25:00"}\n'),
        ['12:36: send_window.end: \'25:00\' is not a time of day: write it as "HH:MM", like "09:00"'],
    ),
    "time_of_day_unquoted": (
        campaign(add="send_window: {start: 09:00, end: 25:00}\n"),
        ['12:34: send_window.end: \'25:00\' is not a time of day: write it as "HH:MM", like "09:00"'],
    ),
    "send_window_empty": (
        campaign(add='send_window: {start: "09:00", end: "09:00"}\n'),
        ["12:1: send_window: start and end are the same time, so the window never opens: make them differ"],
    ),
    "cron_misspelt_day": (
        campaign("  event: signed_up", '  schedule: "0 9 * * MOON"'),
        ["7:13: trigger.schedule: '0 9 * * MOON' is not a cron expression (like \"0 9 * * MON\")"],
    ),
    "at_not_a_date": (
        campaign("  event: signed_up", "  at: tomorrow"),
        ["7:7: trigger.at: 'tomorrow' is not a date and time: write it like 2026-12-01T09:00:00Z"],
    ),
    "topic_not_declared": (
        campaign("topic: news", "topic: newz"),
        ["4:8: topic 'newz' is not declared under topics: in config.yaml: did you mean 'news'?"],
    ),
    "marketing_without_topic": (
        campaign("topic: news\n", ""),
        ["1:1: topic: a marketing campaign needs a `topic:` (customers unsubscribe by topic)"],
    ),
    "subscribed_topic_not_declared": (
        campaign(add="audience:\n  - subscribed: gossip\n"),
        ["13:5: audience: topic 'gossip' is not declared under topics: in config.yaml (declared: news, offers)"],
    ),
    "type_misspelt": (
        campaign("type: marketing", "type: marketting"),
        ["3:7: type: 'marketting' is not one of marketing, transactional: did you mean 'marketing'?"],
    ),
    "reentry_unknown": (
        campaign(add="reentry: sometimes\n"),
        ["12:10: reentry: 'sometimes' is not never, always or a duration like 30d"],
    ),
    "holdout_over_100": (
        campaign(add="holdout: 150%\n"),
        ["12:10: holdout: '150%' is not a share between 0% and 100%: write one like 10%"],
    ),
    "holdout_as_a_fraction": (
        campaign(add="holdout: 0.1\n"),
        ["12:10: holdout: '0.1' is ambiguous: write 10% for that share, or 0.1% if you mean it"],
    ),
    "holdout_in_words": (
        campaign(add="holdout: ten\n"),
        ["12:10: holdout: 'ten' is not a share: write a percentage like 10%"],
    ),
    "template_and_variants": (
        campaign(
            "    delay: 10m",
            "    delay: 10m\n    variants:\n      - {template: plain, subject: A}\n      - {template: plain, "
            "subject: B}",
        ),
        ["9:5: steps: a step has either `variants:` or `template:` and `subject:`, not both"],
    ),
    "variant_weights_not_positive": (
        campaign(
            STEP,
            "  - variants:\n      - {template: plain, subject: A, weight: 0}\n      - {template: plain, subject: "
            "B, weight: -1}\n",
        ),
        [
            "10:47: steps.variants.weight: '0' must be more than 0",
            "11:47: steps.variants.weight: '-1' must be more than 0",
        ],
    ),
    "one_variant": (
        campaign(STEP, "  - variants:\n      - {template: plain, subject: A}\n"),
        ["9:5: steps: `variants:` needs at least two variants"],
    ),
    "variants_with_the_same_name": (
        campaign(STEP, "  - variants:\n      - {template: plain, subject: A}\n      - {template: plain, subject: B}\n"),
        [
            "9:5: steps: two variants are both called 'plain', so the report could not tell them apart: give each a "
            "different `name:`"
        ],
    ),
    "any_of_nothing": (
        campaign(add="audience:\n  - any: []\n"),
        ["13:5: audience.any: the list is empty: it needs at least one item"],
    ),
    "step_without_subject": (
        campaign('    subject: "Welcome"\n', ""),
        ["9:5: steps: a step needs `template:` and `subject:` (or `variants:`)"],
    ),
    "priority_in_words": (
        campaign("priority: 10", "priority: high"),
        ["5:11: priority: 'high' is not a whole number: write one like 10"],
    ),
    "exit_without_event": (
        campaign(add="exit:\n  - where: {total: 5}\n"),
        ["13:5: 'exit.event' is required: the event that ends the sequence, like - event: purchase"],
    ),
    "exit_not_a_list": (
        campaign(add="exit: purchase\n"),
        ["12:7: exit takes a list: [a, b], or one item per line starting with '- '"],
    ),
    "goal_without_within": (
        campaign(add="goal: {event: purchase}\n"),
        ["12:1: 'goal.within' is required: how long after a send a conversion counts, like within: 7d"],
    ),
    "condition_of_two_kinds": (
        campaign(add="audience:\n  - {stage: loyal, risk: red}\n"),
        [
            "13:5: audience: a condition names exactly one of attribute, event, stage, risk, subscribed, any, not "
            "(found stage, risk)"
        ],
    ),
    "condition_with_two_operators": (
        campaign(add="audience:\n  - {attribute: plan, equals: pro, in: [pro]}\n"),
        [
            "13:5: audience: an attribute condition takes exactly one operator (found equals, in): one of equals, "
            "not_equals, in, not_in, gt, gte, lt, lte, exists, within_last, within_next"
        ],
    ),
    "condition_without_operator": (
        campaign(add="audience:\n  - attribute: plan\n"),
        [
            "13:5: audience: an attribute condition takes exactly one operator (found none): one of equals, "
            "not_equals, in, not_in, gt, gte, lt, lte, exists, within_last, within_next"
        ],
    ),
    "operator_in_without_a_list": (
        campaign(add="audience:\n  - {attribute: plan, in: pro}\n"),
        ["13:27: audience.in takes a list: [a, b], or one item per line starting with '- '"],
    ),
    "operator_equals_with_a_list": (
        campaign(add="audience:\n  - {attribute: plan, equals: [pro, business]}\n"),
        ["13:23: audience.equals takes one value: for a choice of several, use `in: [a, b]`"],
    ),
    "at_least_negative": (
        campaign(add="audience:\n  - {event: purchase, at_least: -1}\n"),
        ["13:33: audience.at_least: '-1' must be at least 0"],
    ),
    "history_without_event": (
        campaign(add="audience:\n  - {attribute: plan, exists: true, within: 7d}\n"),
        ["13:5: audience: at_least, at_most, within and where go with `event:`"],
    ),
    "stage_misspelt": (
        campaign(add="audience:\n  - stage: loyl\n"),
        ["13:12: audience.stage: 'loyl' is not one of prospect, current, loyal, lost: did you mean 'loyal'?"],
    ),
    "risk_unknown": (
        campaign(add="audience:\n  - risk: amber\n"),
        ["13:11: audience.risk: 'amber' is not one of green, yellow, red"],
    ),
    "audience_not_a_list": (
        campaign(add="audience:\n  stage: loyal\n"),
        ["12:1: audience takes a list: [a, b], or one item per line starting with '- '"],
    ),
    "where_on_a_schedule": (
        campaign("  event: signed_up", '  schedule: "0 9 * * MON"\n  where: {plan: pro}'),
        ["8:3: trigger.where is only for an `event:` trigger: it filters the event's properties"],
    ),
    "two_trigger_kinds": (
        campaign("  event: signed_up", '  event: signed_up\n  schedule: "0 9 * * MON"'),
        ["6:1: trigger: a trigger has exactly one of event, inactivity, date, schedule, at (found event, schedule)"],
    ),
    "trigger_as_a_word": (
        campaign("trigger:\n  event: signed_up", "trigger: signed_up"),
        ["6:10: trigger takes keys under it (event, inactivity, date, schedule, at, where), not 'signed_up'"],
    ),
    "inactivity_without_for": (
        campaign("  event: signed_up", "  inactivity:\n    event: visited"),
        ["7:3: 'trigger.inactivity.for' is required: how long without the event, like for: 30d"],
    ),
    "date_without_attribute": (
        campaign("  event: signed_up", "  date:\n    offset: -14d"),
        [
            "7:3: 'trigger.date.attribute' is required: the customer attribute that holds the date, like "
            "attribute: birthday"
        ],
    ),
    "steps_not_a_list": (
        campaign(STEP, '  template: plain\n  subject: "Welcome"\n'),
        ["8:1: steps takes a list: [a, b], or one item per line starting with '- '"],
    ),
    "steps_empty": (
        campaign("steps:\n" + STEP, "steps: []\n"),
        ["8:1: steps: the list is empty: it needs at least one item"],
    ),
    "name_with_spaces": (
        campaign("name: welcome", "name: Welcome Email"),
        ["1:7: name: 'Welcome Email' may hold only letters, digits, _ and -: like welcome_email"],
    ),
    "duplicate_key": (
        campaign(add="priority: 20\n"),
        ["12:1: the key 'priority' appears twice in the same place: keep one"],
    ),
    "empty_file": (
        ("campaigns/welcome.yaml", ""),
        ["1:1: the file is empty: it should hold a campaign: keys like name, trigger and steps"],
    ),
    "file_is_a_list": (
        ("campaigns/welcome.yaml", "- name: welcome\n- trigger: signed_up\n"),
        ["1:1: the file holds a list; it should hold a campaign: keys like name, trigger and steps"],
    ),
    "file_is_a_value": (
        ("campaigns/welcome.yaml", "welcome\n"),
        ["1:1: the file holds a single value; it should hold a campaign: keys like name, trigger and steps"],
    ),
    "config_backend_null": (
        config("backend: file", "backend: null"),
        ["7:12: sender.backend: write 'null' in quotes: unquoted null is YAML's empty value"],
    ),
    "config_value_left_blank": (
        config("backend: file", "backend:"),
        ["7:11: sender.backend is empty: write a value after the colon"],
    ),
    "config_norway": (
        config("locales: [en, ar]", "locales: [en, no]"),
        ["5:15: locales: write 'no' in quotes: unquoted, YAML reads no as false"],
    ),
    "config_timezone_city": (
        config("timezone: UTC", "timezone: London"),
        ["4:11: timezone: 'London' is not an IANA timezone: did you mean Europe/London?"],
    ),
    "config_timezone_misspelt": (
        config("timezone: UTC", "timezone: Europe/Londn"),
        ["4:11: timezone: 'Europe/Londn' is not an IANA timezone: did you mean Europe/London?"],
    ),
    "config_from_as_text": (
        config("from: {email: hello@shop.example, name: Shop}", "from: hello@shop.example"),
        ["2:7: from takes keys under it (email, name), not 'hello@shop.example'"],
    ),
    "config_from_with_a_name": (
        config("email: hello@shop.example", "email: Shop <hello@shop.example>"),
        [
            "2:15: from.email: 'Shop <hello@shop.example>' is not one email address (A display name and angle "
            "brackets around the email address are not permitted here): write one, like support@example.com"
        ],
    ),
    "config_reply_to_not_an_address": (
        config(add="reply_to: support\n"),
        [
            "15:11: reply_to: 'support' is not one email address (An email address must have an @-sign): write "
            "one, like support@example.com"
        ],
    ),
    "config_public_url_without_scheme": (
        config(add="public_url: shop.example\n"),
        ["15:13: public_url: 'shop.example' must start with http:// or https://: links in emails point here"],
    ),
    "config_interval_zero": (
        config("interval: 60s", "interval: 0s"),
        ["10:13: scheduler.interval: must be longer than 0: write one like 7d"],
    ),
    "config_batch_size_zero": (
        config("batch_size: 100", "batch_size: 0"),
        ["11:15: scheduler.batch_size: '0' must be more than 0"],
    ),
    "config_cap_per_week_in_words": (
        config(add="limits:\n  marketing: {max: 3, per: week}\n"),
        ["16:28: limits.marketing.per: 'week' is not a duration: write 1w"],
    ),
    "config_topics_as_a_list": (
        config("topics:\n  news: {title: News}\n  offers: {title: Offers}\n", "topics: [news, offers]\n"),
        ["12:1: topics takes keys under it (key: value), not a list"],
    ),
    "config_topic_default_misspelt": (
        config("offers: {title: Offers}", "offers: {title: Offers, default: subscribe}"),
        [
            "14:36: topics.offers.default: 'subscribe' is not one of subscribed, unsubscribed: did you mean "
            "'subscribed'?"
        ],
    ),
    "config_quiet_hours_empty": (
        config(add="quiet_hours: {start: '21:00', end: '21:00'}\n"),
        ["15:1: quiet_hours: start and end are the same time, so the window never opens: make them differ"],
    ),
    "config_locales_as_a_word": (
        config("locales: [en, ar]", "locales: en"),
        ["5:10: locales takes a list: [a, b], or one item per line starting with '- '"],
    ),
    "config_from_missing": (
        config("from: {email: hello@shop.example, name: Shop}\n", ""),
        ["1:1: 'from' is required: the sender, like from: {email: hello@example.com, name: Shop}"],
    ),
    "config_unknown_nested_key": (
        config("  batch_size: 100", "  batchsize: 100"),
        ["11:3: unknown key 'batchsize' under scheduler: did you mean 'batch_size'?"],
    ),
    "config_not_true_or_false": (
        config(add="double_opt_in: maybe\n"),
        ["15:16: double_opt_in: 'maybe' is not true or false: write one of them"],
    ),
    "config_port_in_words": (
        config("  file: {directory: outbox}", "  file: {directory: outbox}\n  smtp: {port: smtp}"),
        ["9:16: sender.smtp.port: 'smtp' is not a whole number: write one like 10"],
    ),
    "config_two_documents": (
        config(add="---\nfoo: 1\n"),
        ["15:1: invalid YAML: a second document (---): keep one document per file (but found another document)"],
    ),
}


@pytest.mark.parametrize("case", list(MISTAKES))
def test_each_mistake_is_reported_on_its_line(project, case):
    (file, text), expected = MISTAKES[case]
    (project.root / "config.yaml").write_text(CONFIG)
    (project.root / file).write_text(text)
    result = project.cli("validate", expect=1)
    assert problems(project, result.output) == [f"{file}:{line}" for line in expected]


def problems(project, output: str) -> list[str]:
    """The output's lines, with the project's folder taken off the config file's path."""
    return [line.replace(f"{project.root}/", "") for line in output.splitlines() if _problem(line)]


def test_the_table_starts_from_valid_files(project):
    """The control for every case: CAMPAIGN and CONFIG as written pass."""
    (project.root / "config.yaml").write_text(CONFIG)
    (project.root / "campaigns" / "welcome.yaml").write_text(CAMPAIGN)
    (project.root / "campaigns" / "receipt.yaml").write_text(RECEIPT)
    assert project.cli("validate").output.splitlines()[-1].startswith("ok: config, 2 campaigns")


def test_the_table_is_at_least_forty_mistakes():
    assert len(MISTAKES) >= 40


def test_a_command_that_runs_campaigns_reports_the_same_lines(project):
    """Not only `validate`: `tick` loads the same files and stops on the same located problems."""
    file, text = campaign("trigger:", "tigger:")
    (project.root / "config.yaml").write_text(CONFIG)
    (project.root / file).write_text(text)
    result = project.cli("tick", "--now", "2026-03-01T10:05:00Z", expect=1)
    assert problems(project, result.output) == [f"{file}:6:1: unknown key 'tigger': did you mean 'trigger'?"]


# -- aliases -----------------------------------------------------------------------------------

BILLION_LAUGHS = """a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


@pytest.mark.parametrize("file", ["config.yaml", "campaigns/welcome.yaml"])
def test_billion_laughs_is_refused_before_anything_is_expanded(project, file):
    """A few hundred bytes that would expand to 9**9 strings: one located line, at once."""
    (project.root / file).write_text(BILLION_LAUGHS)
    result = project.cli("validate", expect=1)
    assert problems(project, result.output) == [
        f"{file}:2:8: YAML aliases (*a) are not allowed: write the value out in full"
    ]


def test_a_recursive_alias_is_refused(project):
    (project.root / "campaigns" / "welcome.yaml").write_text(CAMPAIGN + "audience: &loop [*loop]\n")
    result = project.cli("validate", expect=1)
    assert problems(project, result.output) == [
        "campaigns/welcome.yaml:12:18: YAML aliases (*loop) are not allowed: write the value out in full"
    ]


def test_a_merge_key_is_an_alias_too(project):
    text = "defaults: &defaults {delay: 1d}\n" + CAMPAIGN.replace("    delay: 10m", "    <<: *defaults")
    (project.root / "campaigns" / "welcome.yaml").write_text(text)
    result = project.cli("validate", expect=1)
    assert problems(project, result.output) == [
        "campaigns/welcome.yaml:12:9: YAML aliases (*defaults) are not allowed: write the value out in full"
    ]


# -- files that are not YAML text -------------------------------------------------------------


def test_a_file_that_is_not_utf8_is_one_line_at_the_first_bad_byte(project):
    text = CAMPAIGN.replace("Greet new customers", "Accueillir les nouveaux arrivés")
    (project.root / "campaigns" / "welcome.yaml").write_bytes(text.encode("latin-1"))
    result = project.cli("validate", expect=1)
    assert problems(project, result.output) == [
        "campaigns/welcome.yaml:2:43: the file is not UTF-8 text (byte 0xe9): save it as UTF-8"
    ]


def test_nesting_too_deep_is_one_line(project):
    (project.root / "campaigns" / "welcome.yaml").write_text(CAMPAIGN + "audience: " + "[" * 5000 + "]" * 5000)
    result = project.cli("validate", expect=1)
    assert problems(project, result.output) == ["campaigns/welcome.yaml:1:1: invalid YAML: nested too deeply"]


# -- every problem in every file ---------------------------------------------------------------


def test_every_problem_in_every_file_is_reported(project):
    """Three mistakes in one file, one in another, and a good file between them: all four are
    listed, in file and line order, and the good file is not blamed."""
    (project.root / "config.yaml").write_text(CONFIG)
    project.campaign(
        "a_broken", CAMPAIGN.replace("type: marketing", "type: marketting").replace("10m", "3q") + "x: 1\n"
    )
    project.campaign("b_good", RECEIPT)
    project.campaign("c_broken", CAMPAIGN.replace("name: welcome", "name: other").replace("plain", "plian"))
    result = project.cli("validate", expect=1)
    assert problems(project, result.output) == [
        "campaigns/a_broken.yaml:3:7: type: 'marketting' is not one of marketing, transactional: did you mean "
        "'marketing'?",
        "campaigns/a_broken.yaml:11:12: steps.delay: '3q' is not a duration: write a number and a unit, like 30s, 10m, "
        "4h, 7d or 2w",
        "campaigns/a_broken.yaml:12:1: unknown key 'x' (known keys: name, description, type, topic, priority, trigger, "
        "audience, steps, exit, reentry, send_window, expire_after, goal, holdout, recipient)",
        "campaigns/c_broken.yaml:9:15: template 'plian' does not exist: there is no templates/emails/plian.mjml: "
        "did you mean 'plain'?",
    ]


def test_a_broken_yaml_file_does_not_hide_another(project):
    project.campaign("a_syntax", CAMPAIGN.replace('"Welcome"', '"Welcome'))
    project.campaign("b_alias", "a: &x 1\nb: *x\n")
    project.campaign("c_dup", CAMPAIGN.replace("name: welcome", "name: c") + "priority: 1\ntopic: news\n")
    result = project.cli("validate", expect=1)
    assert [line.split(": ")[0] for line in problems(project, result.output)] == [
        "campaigns/a_syntax.yaml:12:1",
        "campaigns/b_alias.yaml:2:4",
        "campaigns/c_dup.yaml:12:1",
        "campaigns/c_dup.yaml:13:1",
    ]


def test_a_campaign_knows_where_each_of_its_values_was_written(project):
    """For problems found after loading (a subject that does not render in one locale): the
    campaign points at the line of that value, and at line 1 for what the file does not write."""
    project.campaign(
        "welcome", CAMPAIGN.replace('    subject: "Welcome"', '    subject:\n      en: Hi\n      ar: "أهلاً"')
    )
    (welcome,) = load_campaigns(load_config(project.root / "config.yaml"))
    assert str(welcome.problem(("steps", 0, "subject", "ar"), "x")) == "campaigns/welcome.yaml:12:11: x"
    assert str(welcome.problem(("steps", 0, "subject"), "x")) == "campaigns/welcome.yaml:10:5: x"
    assert str(welcome.problem(("exit",), "x")) == "campaigns/welcome.yaml:1:1: x"


# -- the signing secret ------------------------------------------------------------------------


def _validate(config: Path) -> list[str]:
    result = CliRunner().invoke(app, ["validate", "--config", str(config)])
    assert result.exit_code == 1, result.output
    return [line.replace(f"{config.parent}/", "") for line in result.output.splitlines() if _problem(line)]


def _problem(line: str) -> bool:
    """A problem line, not validate's note that nothing is declared (tests/test_templates_validation.py)."""
    return bool(line.strip()) and not line.startswith("note: ")


def test_a_missing_secret_points_at_the_config_file_that_was_loaded(project, monkeypatch):
    """`--config shop.yaml` names shop.yaml and its secret_key_env line, not ./config.yaml."""
    monkeypatch.delenv("SHOP_SECRET", raising=False)
    other = project.root / "shop.yaml"
    other.write_text(CONFIG + "secret_key_env: SHOP_SECRET\n")
    assert _validate(other) == [
        "shop.yaml:15:17: secret_key_env: the environment variable SHOP_SECRET is not set; it holds the key that "
        "signs links in emails"
    ]


def test_a_missing_default_secret_points_at_the_first_line_of_that_file(project, monkeypatch):
    monkeypatch.delenv("LIFECYCLE_SECRET")
    other = project.root / "shop.yaml"
    other.write_text("# the shop's settings\n" + CONFIG)
    assert _validate(other) == [
        "shop.yaml:1:1: secret_key_env: the environment variable LIFECYCLE_SECRET is not set; it holds the key that "
        "signs links in emails"
    ]
