"""A throwaway project (config.yaml, campaigns/, templates/emails/, a SQLite file) driven through
the `lifecycle` command line, as marketers and operators drive it."""

from __future__ import annotations

import json
import os
import textwrap
import uuid
from contextlib import contextmanager
from email import message_from_bytes, policy
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from engine.cli import app

REPO = Path(__file__).resolve().parent.parent

LAYOUT = """<mjml><mj-body><mj-section><mj-column><mj-text>
{{% block content %}}{{% endblock %}}
<a href="{{{{ links.unsubscribe }}}}">Unsubscribe</a> <a href="{{{{ links.preferences }}}}">Preferences</a>
{{{{ brand.address }}}}
</mj-text></mj-column></mj-section></mj-body></mjml>"""

BASE_CONFIG = {
    "database": "sqlite:///store.db",
    "from": {"email": "hello@shop.example", "name": "Shop"},
    "brand": {"name": "Shop", "address": "1 Test Street", "url": "https://shop.example"},
    "public_url": "http://localhost:8000",
    "timezone": "UTC",
    "locales": ["en", "ar"],
    "sender": {"backend": "file", "file": {"directory": "outbox"}},
    "topics": {"news": {"title": {"en": "News", "ar": "الأخبار"}}, "offers": {"title": "Offers"}},
}


POSTGRES_URL = os.environ.get("LIFECYCLE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


class Project:
    def __init__(self, root: Path, database: str = "sqlite:///store.db"):
        self.root = root
        self.database = database
        self.db = create_engine(self.url, pool_pre_ping=True)
        (root / "campaigns").mkdir()
        (root / "templates" / "emails").mkdir(parents=True)
        self.config(**{})
        self.template("plain", "Hello {{ customer.first_name }}, step {{ step.number }}.")

    def config(self, **overrides) -> None:
        data = {**BASE_CONFIG, "database": self.database, **overrides}
        (self.root / "config.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))

    def campaign(self, name: str, text: str) -> None:
        (self.root / "campaigns" / f"{name}.yaml").write_text(textwrap.dedent(text))

    def template(self, name: str, body: str, layout: str = LAYOUT) -> None:
        source = "{% extends '_layout.mjml' %}{% block content %}" + body + "{% endblock %}"
        (self.root / "templates" / "emails" / "_layout.mjml").write_text(layout.format())
        (self.root / "templates" / "emails" / f"{name}.mjml").write_text(source)

    def cli(self, *args: str, expect: int | None = 0):
        result = CliRunner().invoke(app, [*args, "--config", str(self.root / "config.yaml")])
        if expect is not None:
            assert result.exit_code == expect, (result.output, result.exception)
        return result

    def jsonl(self, name: str, records: list[dict]) -> Path:
        path = self.root / name
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        return path

    def customers(self, *records: dict) -> None:
        self.cli("import", "customers", str(self.jsonl("customers.jsonl", list(records))))

    def events(self, *records: dict) -> None:
        self.cli("import", "events", str(self.jsonl("events.jsonl", list(records))))

    def tick(self, now: str, *extra: str) -> dict:
        return json.loads(self.cli("tick", "--now", now, "--json", *extra).stdout)["campaigns"]

    @property
    def url(self) -> str:
        return self.database.replace("sqlite:///", f"sqlite:///{self.root}/", 1)

    def query(self, sql: str, **params) -> list[tuple]:
        """Read (or, in a test's arrangement, change) the store directly, on SQLite or PostgreSQL."""
        with self.db.begin() as connection:
            result = connection.execute(text(sql), params)
            return [tuple(row) for row in result] if result.returns_rows else []

    def sends(self, campaign: str | None = None) -> list[tuple]:
        """(campaign, customer id, step, status, reason) for every send, in id order."""
        rows = self.query("""SELECT s.campaign, c.external_id, s.step, s.status, s.reason FROM send s
                             JOIN customer c ON c.id = s.customer_id ORDER BY s.id""")
        return [r for r in rows if campaign is None or r[0] == campaign]

    def sent(self, campaign: str | None = None) -> list[tuple[str, int]]:
        """(customer id, step) of the sends that went out, in the order they went."""
        rows = self.query("""SELECT s.campaign, c.external_id, s.step FROM send s JOIN customer c
                             ON c.id = s.customer_id WHERE s.status = 'sent' ORDER BY s.sent_at, s.id""")
        return [(r[1], r[2]) for r in rows if campaign is None or r[0] == campaign]

    def outbox(self) -> list:
        folder = self.root / "outbox"
        # the sends' messages, `<send id>.eml`; not test sends nor alerts to the operator
        files = sorted((p for p in folder.glob("*.eml") if p.stem.isdigit()), key=lambda p: int(p.stem))
        return [message_from_bytes(p.read_bytes(), policy=policy.default) for p in files]


@pytest.fixture(autouse=True)
def insecure_public_url(monkeypatch):
    """Test projects link to http://localhost, which `validate` refuses for marketing mail unless the
    environment allows it (the contract's escape hatch); processes a test starts inherit it.
    tests/test_hygiene.py takes it away to show the rule itself."""
    monkeypatch.setenv("LIFECYCLE_INSECURE_PUBLIC_URL", "1")


@pytest.fixture
def project(tmp_path, monkeypatch) -> Project:
    """A project on the embedded default, SQLite."""
    monkeypatch.setenv("LIFECYCLE_SECRET", "test-secret")
    monkeypatch.delenv("LIFECYCLE_CONFIG", raising=False)
    return Project(tmp_path)


POSTGRES_SKIP = "PostgreSQL tests run when LIFECYCLE_TEST_POSTGRES is set"


def postgres_enabled() -> bool:
    return bool(os.environ.get("LIFECYCLE_TEST_POSTGRES"))


@contextmanager
def postgres_schema(tmp_path: Path):
    """A Project on a schema of its own in the PostgreSQL test database, dropped afterwards."""
    if not postgres_enabled():
        pytest.skip(POSTGRES_SKIP)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    project = Project(tmp_path, f"{POSTGRES_URL}?options=-csearch_path%3D{schema}")
    try:
        yield project
    finally:
        project.db.dispose()
        with admin.connect() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_project(request, tmp_path, monkeypatch):
    """The same project on SQLite and, when LIFECYCLE_TEST_POSTGRES is set, on PostgreSQL."""
    monkeypatch.setenv("LIFECYCLE_SECRET", "test-secret")
    monkeypatch.delenv("LIFECYCLE_CONFIG", raising=False)
    if request.param == "sqlite":
        yield Project(tmp_path)
        return
    with postgres_schema(tmp_path) as project:
        yield project


@pytest.fixture
def postgres_project(tmp_path, monkeypatch):
    """A project on PostgreSQL only: for what only a shared server can show."""
    monkeypatch.setenv("LIFECYCLE_SECRET", "test-secret")
    monkeypatch.delenv("LIFECYCLE_CONFIG", raising=False)
    with postgres_schema(tmp_path) as project:
        yield project


def customer(cid: str, **fields) -> dict:
    return {
        "id": cid,
        "email": f"{cid}@example.com",
        "first_name": cid.title(),
        "created_at": "2026-01-01T00:00:00Z",
        **fields,
    }
