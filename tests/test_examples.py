"""The examples the repository ships (config.yaml, campaigns/, templates/emails/) work end to end
on the demo store: they validate, preview in English and Arabic, and every campaign sends."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from croniter import croniter
from typer.testing import CliRunner

from engine.cli import app
from engine.config.durations import parse_duration

REPO = Path(__file__).resolve().parent.parent
NOW = "2026-11-23T12:00:00Z"
ARABIC = re.compile(r"[\u0600-\u06FF]")
CONFIG = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
CAMPAIGNS = {}
for _path in sorted((REPO / "campaigns").glob("*.yaml")):
    _data = yaml.safe_load(_path.read_text(encoding="utf-8"))
    CAMPAIGNS[_data.get("name", _path.stem)] = _data
STEPS = [(name, number) for name, data in CAMPAIGNS.items() for number in range(1, len(data["steps"]) + 1)]
MARKETING = {name for name, data in CAMPAIGNS.items() if data.get("type", "marketing") == "marketing"}


class Example:
    """A copy of the shipped example project in a temporary folder, driven through the CLI."""

    def __init__(self, root: Path):
        self.root = root
        shutil.copytree(REPO / "campaigns", root / "campaigns")
        shutil.copytree(REPO / "templates", root / "templates")
        config = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
        config["database"] = f"sqlite:///{root / 'store.db'}"
        config["sender"]["file"]["directory"] = str(root / "outbox")
        (root / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")

    def cli(self, *args: str, expect: int | None = 0):
        env = {"LIFECYCLE_SECRET": "example-secret", "LIFECYCLE_CONFIG": None}
        result = CliRunner().invoke(app, [*args, "--config", str(self.root / "config.yaml")], env=env)
        if expect is not None:
            assert result.exit_code == expect, (result.output, result.exception)
        return result

    def tick(self, now: str, *extra: str) -> dict:
        return json.loads(self.cli("tick", "--now", now, "--json", *extra).stdout)

    def query(self, sql: str, *params):
        with sqlite3.connect(self.root / "store.db") as db:
            return db.execute(sql, params).fetchall()

    def eml_files(self) -> list[Path]:
        folder = self.root / "outbox"
        return sorted(folder.glob("*.eml")) if folder.exists() else []


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Example:
    """One demo store for the read-only tests (validate, preview)."""
    example = Example(tmp_path_factory.mktemp("example"))
    example.cli("demo", "--now", NOW)
    return example


@pytest.fixture
def fresh(tmp_path) -> Example:
    example = Example(tmp_path)
    example.cli("demo", "--now", NOW)
    return example


def test_examples_cover_every_trigger_kind_and_type():
    triggers = {name: next(iter(data["trigger"])) for name, data in CAMPAIGNS.items()}
    assert set(triggers.values()) >= {"event", "inactivity", "date", "schedule"}
    assert {"en", "ar"} <= set(CONFIG["locales"])
    assert MARKETING and set(CAMPAIGNS) - MARKETING  # both types ship


def test_examples_validate(demo):
    result = demo.cli("validate")
    assert f"{len(CAMPAIGNS)} campaigns" in result.output


def test_demo_loads_a_store_in_both_locales(demo):
    locales = dict(demo.query("SELECT locale, count(*) FROM customer GROUP BY locale"))
    assert locales.get("en", 0) > 0 and locales.get("ar", 0) > 0
    assert demo.query("SELECT count(*) FROM event")[0][0] > locales["en"]


def _customer_in(example: Example, locale: str, campaign: str | None = None) -> str:
    """A customer of the demo store in `locale`; for a campaign, one its trigger would pick: with
    the trigger event, or with the trigger's date attribute."""
    sql, params = "SELECT external_id FROM customer c WHERE locale = ?", [locale]
    trigger = CAMPAIGNS[campaign]["trigger"] if campaign else {}
    if "event" in trigger:
        sql += " AND EXISTS (SELECT 1 FROM event e WHERE e.customer_id = c.id AND e.name = ?)"
        params.append(trigger["event"])
    if "date" in trigger:
        sql += " AND json_extract(c.attributes, '$.' || ?) IS NOT NULL"
        params.append(trigger["date"]["attribute"])
    rows = example.query(sql + " ORDER BY id LIMIT 1", *params)
    assert rows, f"the demo store has no customer in {locale} for {campaign}"
    return rows[0][0]


def _customer_without(example: Example, locale: str, campaign: str) -> str:
    """A customer in `locale` whom the campaign's trigger would never pick."""
    trigger = CAMPAIGNS[campaign]["trigger"]
    if "event" in trigger:
        sql = "NOT EXISTS (SELECT 1 FROM event e WHERE e.customer_id = c.id AND e.name = ?)"
        param = trigger["event"]
    else:
        sql, param = "json_extract(c.attributes, '$.' || ?) IS NULL", trigger["date"]["attribute"]
    rows = example.query(
        f"SELECT external_id FROM customer c WHERE locale = ? AND {sql} ORDER BY id LIMIT 1", locale, param
    )
    assert rows
    return rows[0][0]


def _parts(message) -> dict[str, str]:
    return {
        part.get_content_type(): part.get_content()
        for part in message.walk()
        if part.get_content_type() in ("text/plain", "text/html")
    }


@pytest.mark.parametrize("locale", ["en", "ar"])
@pytest.mark.parametrize("campaign, step", STEPS, ids=[f"{c}-{s}" for c, s in STEPS])
def test_preview_every_step_in_both_languages(demo, tmp_path, campaign, step, locale):
    out = tmp_path / f"{campaign}-{step}-{locale}.eml"
    demo.cli(
        "preview",
        campaign,
        "--customer",
        _customer_in(demo, locale, campaign),
        "--step",
        str(step),
        "--locale",
        locale,
        "--out",
        str(out),
    )
    message = message_from_bytes(out.read_bytes(), policy=policy.default)
    assert message.get_content_type() == "multipart/alternative"
    parts = _parts(message)
    assert set(parts) == {"text/plain", "text/html"}
    assert parts["text/plain"].strip()
    html = parts["text/html"]
    rtl = 'dir="rtl"' in html or "direction:rtl" in html.replace(" ", "")
    if locale == "ar":
        assert rtl
        assert ARABIC.search(html)
        assert ARABIC.search(parts["text/plain"])
        assert ARABIC.search(str(message["Subject"]))
    else:
        assert not rtl
        assert not ARABIC.search(str(message["Subject"]))
    assert "{{" not in html and "{%" not in html  # no Jinja left unrendered
    assert "<mj-" not in html  # MJML was compiled


def test_preview_for_a_customer_without_the_date_attribute_is_a_clear_error(demo, tmp_path):
    """reward_reminder shows customer.points_expire_at|date; a customer without that attribute
    gets one clear located line naming it, not a crash."""
    out = tmp_path / "reward.eml"
    result = demo.cli(
        "preview",
        "reward_reminder",
        "--customer",
        _customer_without(demo, "ar", "reward_reminder"),
        "--locale",
        "ar",
        "--out",
        str(out),
        expect=1,
    )
    assert isinstance(result.exception, SystemExit), result.exception
    assert "points_expire_at" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize("locale", ["en", "ar"])
def test_preview_for_a_customer_without_the_trigger_event_renders(demo, tmp_path, locale):
    out = tmp_path / "alert.eml"
    demo.cli(
        "preview",
        "feedback_alert",
        "--customer",
        _customer_without(demo, locale, "feedback_alert"),
        "--locale",
        locale,
        "--out",
        str(out),
    )
    message = message_from_bytes(out.read_bytes(), policy=policy.default)
    assert set(_parts(message)) == {"text/plain", "text/html"}


def _sent(report: dict) -> dict[str, int]:
    return {name: counts.get("sent", 0) for name, counts in report["campaigns"].items()}


def _fired_recently(campaign: dict, now: datetime) -> bool:
    """Whether a schedule trigger has a firing still within its expire_after at `now`."""
    trigger = campaign["trigger"]
    earliest = now - parse_duration(campaign.get("expire_after", "3d"))
    if "at" in trigger:
        return earliest <= _at(trigger) <= now
    zone = ZoneInfo(CONFIG.get("timezone", "UTC"))
    last = croniter(trigger["schedule"], now.astimezone(zone) + timedelta(seconds=1)).get_prev(datetime)
    return last.astimezone(UTC) >= earliest


def _at(trigger: dict) -> datetime:
    at = trigger["at"] if isinstance(trigger["at"], datetime) else datetime.fromisoformat(str(trigger["at"]))
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _next_firing(campaign: dict, now: datetime) -> datetime:
    if "at" in campaign["trigger"]:
        return _at(campaign["trigger"])
    zone = ZoneInfo(CONFIG.get("timezone", "UTC"))
    return croniter(campaign["trigger"]["schedule"], now.astimezone(zone)).get_next(datetime).astimezone(UTC)


def test_every_example_campaign_sends_and_only_once(tmp_path):
    example = Example(tmp_path)
    example.cli("demo", "--now", NOW)
    now = datetime.fromisoformat(NOW.replace("Z", "+00:00"))
    first = _sent(example.tick(NOW))
    assert set(first) == set(CAMPAIGNS)
    waiting = []
    for name, data in CAMPAIGNS.items():
        if first[name] >= 1:
            continue
        # Only a calendar broadcast that does not fire at NOW may send nothing now.
        assert "schedule" in data["trigger"] or "at" in data["trigger"], f"{name} sent nothing at {NOW}"
        assert not _fired_recently(data, now), f"{name} fired within its expire_after but sent nothing"
        waiting.append(name)

    files = example.eml_files()
    assert len(files) == sum(first.values())
    again = _sent(example.tick(NOW))
    assert sum(again.values()) == 0, again
    assert len(example.eml_files()) == len(files)

    # The broadcasts that did not fire at NOW send at their next firing.
    for name in sorted(waiting, key=lambda n: _next_firing(CAMPAIGNS[n], now)):
        moment = _next_firing(CAMPAIGNS[name], now)
        later = _sent(example.tick(moment.isoformat()))
        assert later[name] >= 1, f"{name} sent nothing at its firing {moment.isoformat()}"

    messages = [(path, message_from_bytes(path.read_bytes(), policy=policy.default)) for path in example.eml_files()]
    campaigns_seen = {str(m["X-Lifecycle-Campaign"]) for _, m in messages}
    assert campaigns_seen == set(CAMPAIGNS)
    stored = dict(example.query("SELECT id, campaign FROM send WHERE status = 'sent'"))
    assert len(stored) == len(messages)
    message_ids = set()
    for path, message in messages:
        for header in (
            "From",
            "To",
            "Subject",
            "Date",
            "Message-ID",
            "MIME-Version",
            "X-Lifecycle-Campaign",
            "X-Lifecycle-Send-Id",
        ):
            assert message[header], f"{path.name} has no {header}"
        send_id = int(str(message["X-Lifecycle-Send-Id"]))
        assert path.stem == str(send_id)
        campaign = str(message["X-Lifecycle-Campaign"])
        assert stored[send_id] == campaign
        message_ids.add(str(message["Message-ID"]))
        parts = _parts(message)
        assert set(parts) == {"text/plain", "text/html"}, path.name
        if campaign in MARKETING:
            assert re.fullmatch(r"<https?://\S+>", str(message["List-Unsubscribe"])), path.name
            assert str(message["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
            assert CONFIG["brand"]["address"] in parts["text/html"], path.name
    assert len(message_ids) == len(messages)


def test_dry_run_reports_and_changes_nothing(fresh):
    report = fresh.tick(NOW, "--dry-run")
    assert report["dry_run"] is True
    would_send = [p for p in report["planned"] if p["action"] == "send"]
    assert would_send
    assert {p["campaign"] for p in would_send} <= set(CAMPAIGNS)
    assert all(p["email"] and p["customer"] for p in would_send)
    assert fresh.query("SELECT count(*) FROM send") == [(0,)]
    assert fresh.query("SELECT count(*) FROM entry") == [(0,)]
    assert fresh.eml_files() == []

    text = fresh.cli("tick", "--now", NOW, "--dry-run").output
    assert "would send" in text
    assert fresh.query("SELECT count(*) FROM send") == [(0,)]
    assert fresh.eml_files() == []

    # What the dry run said is what a real tick then does.
    real = _sent(fresh.tick(NOW))
    planned = {name: counts.get("sent", 0) for name, counts in report["campaigns"].items()}
    assert real == planned
    assert len(fresh.eml_files()) == len(would_send)
