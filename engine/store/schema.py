"""Schema creation and migration through Alembic (`lifecycle db upgrade`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

MIGRATIONS = Path(__file__).parent / "migrations"


def _alembic_config(connection: Connection | None) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config(None)).get_current_head()
    assert head is not None, "the package ships its migrations"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str | None = None) -> tuple[str | None, str]:
    """Bring the schema to `revision` (the newest when None); returns (before, after)."""
    before = current_revision(engine)
    target = revision or head_revision()
    if before != target:
        with engine.begin() as connection:
            command.upgrade(_alembic_config(connection), target)
    return before, target


def ensure_schema(engine: Engine) -> None:
    """Other commands create the schema on first use, so `db upgrade` is never a forgotten step."""
    if current_revision(engine) != head_revision():
        upgrade(engine)


def open_store(url: str) -> Engine:
    """The store at `url`, with its schema brought up to date."""
    from engine.store.dialect import make_engine

    engine = make_engine(url)
    ensure_schema(engine)
    return engine
