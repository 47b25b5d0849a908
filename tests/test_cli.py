"""The command line as an operator meets it: `--config` on either side of the command, customers' text printed
as text (never Rich markup, never a terminal control sequence), previews that say what they fell back to,
test sends that neither overwrite each other nor carry a live link, and a tick whose lines agree with its
table and say why sends failed."""

from __future__ import annotations

import json
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from conftest import customer
from typer.testing import CliRunner

from engine.cli import app
from engine.config.settings import load_config
from engine.insights.table import printable
from engine.mail.links import Links
from engine.mail.message import OutgoingEmail
from engine.senders.base import Sender, SendResult

NOW = "2026-03-01T10:00:00Z"
NEWS = """\
topic: news
trigger: {event: signed_up}
steps: [{template: plain, subject: "Hello {{ customer.first_name }}"}]
"""
# A name that is Rich markup, a terminal escape that clears the screen, a bidi override, and Arabic.
HOSTILE = "[/oops] [bold red]x\x1b[2J\x07\u202eعربي"
SHOWN = "[/oops] [bold red]x[2Jعربي"  # what is left of the escape is harmless text
# In a header (To's name, Subject) each control character is already a space (engine/mail/message.py).
IN_HEADER = "[/oops] [bold red]x [2J \u202eعربي"
SHOWN_FROM_HEADER = "[/oops] [bold red]x [2J عربي"


class RefusingSender(Sender):
    """Refuses every message for good, with the recipient's name in the reason, as some providers do."""

    name = "refusing"

    def deliver(self, emails: list[OutgoingEmail]) -> list[SendResult]:
        return [SendResult(e.send_id, ok=False, error=f"550 rejected {e.to_name}") for e in emails]


def run(*args: str, expect: int = 0):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == expect, (result.output, result.exception)
    return result


def no_controls(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text


@pytest.mark.parametrize(
    "command",
    [
        ["validate"],
        ["db", "upgrade"],
        ["tick", "--now", NOW, "--json"],
        ["report", "--now", NOW, "--format", "json"],
        ["suppress", "gone@example.com"],
    ],
)
def test_config_before_or_after_the_command_means_the_same(project, command):
    config = str(project.root / "config.yaml")
    after = run(*command, "--config", config).stdout
    before = run("--config", config, *command).stdout
    if command[0] == "suppress":  # the second one finds it done: the same store was used
        assert (after, before) == (
            "gone@example.com suppressed (manual)\n",
            "gone@example.com was already suppressed\n",
        )
    elif command[0] == "db":  # the same store: the second finds it upgraded
        assert after.startswith("schema at revision ") and before == after.split(" (was")[0].strip() + "\n"
    elif command[0] in ("tick", "report"):
        assert json.loads(before)["campaigns"] == json.loads(after)["campaigns"]
    else:
        assert before == after and before.strip()


def test_config_before_a_sub_command_reaches_it(project, tmp_path):
    config = str(project.root / "config.yaml")
    people = project.jsonl("people.jsonl", [customer("ann")])
    assert run("--config", config, "import", "customers", str(people)).stdout == "customers: 1 stored\n"


def test_two_different_configs_are_bad_usage(project, tmp_path):
    result = run("--config", str(project.root / "config.yaml"), "validate", "--config", "other.yaml", expect=2)
    assert "given twice" in result.output


def test_a_missing_config_named_before_the_command_is_reported(tmp_path, monkeypatch):
    monkeypatch.delenv("LIFECYCLE_CONFIG", raising=False)
    result = run("--config", str(tmp_path / "nope.yaml"), "validate", expect=1)
    assert "nope.yaml:1:1: no such config file" in result.output


def test_printable_keeps_text_and_drops_what_a_terminal_would_act_on():
    assert printable(HOSTILE) == SHOWN
    assert printable("a\tb\nc\r") == "a b c"
    assert printable("a\tb\nc", multiline=True) == "a\tb\nc"
    assert printable("مرحبا\u200f 1") == "مرحبا\u200f 1"  # right-to-left mark: Arabic's own, kept


def hostile_store(project) -> None:
    project.campaign("news", NEWS)
    project.customers(
        customer("ann", first_name=HOSTILE),
        customer("[/id]", first_name=HOSTILE, email="id@example.com"),  # no event since January: on the red list
    )
    project.events({"customer": "ann", "event": "signed_up", "at": "2026-03-01T09:00:00Z"})


def test_report_shows_a_hostile_name_as_written(project, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    hostile_store(project)
    output = project.cli("report", "--now", NOW).stdout
    no_controls(output)
    red = output[output.index("red risk") :].splitlines()
    assert any(line.split()[:5] == ["[/id]", "id@example.com", "[/oops]", "[bold", "red]x[2Jعربي"] for line in red)


def test_preview_prints_a_hostile_name_as_text(project):
    hostile_store(project)
    output = project.cli("preview", "news", "--customer", "ann").stdout
    no_controls(output)
    assert output.startswith(f"Subject: Hello {SHOWN_FROM_HEADER}\nTo: ann@example.com\n\n")
    assert f"Hello {SHOWN}, step 1." in output


def test_tick_lines_agree_with_the_table_and_failures_say_why(project, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    hostile_store(project)
    project.events({"customer": "[/id]", "event": "signed_up", "at": "2026-03-01T09:00:00Z"})
    project.cli("suppress", "id@example.com")
    dry = project.cli("tick", "--now", NOW, "--dry-run").stdout
    no_controls(dry)
    row = next(line for line in dry.splitlines() if line.strip("│ ").startswith("news"))
    assert [cell.strip() for cell in row.split("│")[1:-1]] == ["news", "2", "1", "skipped:suppressed 1"]
    assert dry.count("would send: news step 1 -> ann@example.com") == 1
    assert dry.count("would skip: news step 1 -> id@example.com suppressed") == 1

    project.config(sender={"backend": "test_cli:RefusingSender"})
    real = project.cli("tick", "--now", NOW).stdout
    no_controls(real)
    assert f"failed: news step 1: 1 send, customer ann: 550 rejected {SHOWN_FROM_HEADER}" in real
    assert project.sends("news") == [
        ("news", "ann", 1, "failed", f"550 rejected {IN_HEADER}"),
        ("news", "[/id]", 1, "skipped", "suppressed"),
    ]


def test_preview_of_an_unknown_customer_lists_some_ids(project):
    project.campaign("news", NEWS)
    project.customers(*(customer(name) for name in ("ann", "bo", "cy", "di", "ed", "fay")))
    result = project.cli("preview", "news", "--customer", "anne", expect=1)
    assert result.output == "no customer 'anne'; some ids: ann, bo, cy, di, ed\n"


def test_preview_in_an_empty_store_says_so(project):
    project.campaign("news", NEWS)
    assert project.cli("preview", "news", "--customer", "x", expect=1).output == (
        "no customer 'x'; the store has no customers yet\n"
    )


def test_preview_warns_when_it_falls_back(project):
    project.campaign(
        "thanks",
        """\
        type: transactional
        trigger: {event: purchase}
        steps: [{template: plain, subject: {en: "Thanks {{ event.properties.total }}"}}]
        """,
    )
    project.customers(customer("ann", locale="ar"))
    result = project.cli("preview", "thanks", "--customer", "ann")
    assert result.stderr.splitlines() == [
        "warning: customer 'ann' never had a 'purchase' event: sample event data",
        "warning: no plain.ar.mjml: plain.mjml (en)",
        "warning: the subject has no 'ar' text: the 'en' one",
    ]
    assert result.stdout.startswith("Subject: Thanks ")
    assert project.cli("preview", "thanks", "--customer", "ann", "--locale", "fr").stderr.splitlines()[1:] == [
        "warning: locale 'fr' is not one of locales (en, ar): en"
    ]
    project.template("plain.ar", "مرحبا")
    project.events({"customer": "ann", "event": "purchase", "at": NOW, "properties": {"total": 5}})
    quiet = project.cli("preview", "thanks", "--customer", "ann")
    assert quiet.stderr.splitlines() == ["warning: the subject has no 'ar' text: the 'en' one"]
    assert quiet.stdout.startswith("Subject: Thanks 5\n")


def outbox_tests(project) -> list[Path]:
    return sorted((project.root / "outbox").glob("test-*.eml"))


def test_send_test_uses_a_sample_customer_and_never_overwrites(project):
    project.campaign("news", NEWS)
    project.customers(customer("ann"))
    for _ in range(3):
        project.cli("send-test", "news", "--to", "qa@shop.example")
    files = outbox_tests(project)
    assert len(files) == 3 and not (project.root / "outbox" / "0.eml").exists()
    message = message_from_bytes(files[0].read_bytes(), policy=policy.default)
    assert str(message["To"]) == "qa@shop.example"
    assert str(message["Subject"]) == "Hello Sample"
    assert_dead_link(project, message)


def test_send_test_for_a_named_customer_carries_no_live_link(project):
    project.campaign("news", NEWS)
    project.customers(customer("ann"))
    project.cli("send-test", "news", "--to", "qa@shop.example", "--customer", "ann")
    (file,) = outbox_tests(project)
    message = message_from_bytes(file.read_bytes(), policy=policy.default)
    assert str(message["Subject"]) == "Hello Ann"
    assert_dead_link(project, message)
    # a real send still gets its send id as its file name
    project.events({"customer": "ann", "event": "signed_up", "at": "2026-03-01T09:00:00Z"})
    project.tick(NOW)
    assert [p.name for p in (project.root / "outbox").glob("[0-9]*.eml")] == ["1.eml"]


def assert_dead_link(project, message) -> None:
    """The unsubscribe link is signed for no customer of the store: a click there changes nothing."""
    token = str(message["List-Unsubscribe"]).strip("<>").rsplit("/", 1)[1]
    customer_id, topic = Links(load_config(project.root / "config.yaml")).read("unsubscribe", token)
    assert topic == "news"
    assert project.query("SELECT count(*) FROM customer WHERE id = :id", id=customer_id) == [(0,)]
