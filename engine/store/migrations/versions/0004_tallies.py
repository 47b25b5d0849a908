"""send and entry tallies, kept by triggers; a covering index for last activity

The report's campaign figures count sends by (campaign, step, variant, status, outcomes, skip
reason) and entries by (campaign, held out). Counting the rows took a pass over every send; these
tables hold the counts instead (engine/store/tallies.py). The database keeps them itself, so that no write
path can forget them: a trigger on every insert, update and delete of a send or an entry appends a
change (+1 for the key a row enters, -1 for the key it leaves) to `*_tally_change`, which the tick
folds into `*_tally` from time to time. An append never waits for another writer, where counters
updated in place by each write would make concurrent PostgreSQL transactions queue (and deadlock)
on the same counter rows; on SQLite it also cost less than an update in place.

The tallies are filled here from the rows already stored.

The index on events (customer, time) also carries the name, so that a customer's facts (last
activity, purchases) are read from the index alone.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 15:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def send_key(row: str) -> str:
    """The tally key of a send (row NEW, OLD or send): no variant is '', and only a skip keeps its reason."""
    return (
        f"{row}.campaign, {row}.step, coalesce({row}.variant, ''), {row}.status, {row}.outcomes, "
        f"CASE WHEN {row}.status = 'skipped' THEN coalesce({row}.reason, '') ELSE '' END"
    )


def entry_key(row: str) -> str:
    return f"{row}.campaign, {row}.held_out"


TALLIES = {  # tally: (counted table, count column, key columns, key of a row)
    "send_tally": ("send", "sends", ("campaign", "step", "variant", "status", "outcomes", "reason"), send_key),
    "entry_tally": ("entry", "entries", ("campaign", "held_out"), entry_key),
}
KEY_TYPES = {
    "campaign": sa.String(length=100),
    "step": sa.Integer(),
    "variant": sa.String(),
    "status": sa.String(length=20),
    "outcomes": sa.Integer(),
    "reason": sa.String(),
    "held_out": sa.Boolean(),
}


def append(tally: str, row: str, change: int) -> str:
    _, _, key, key_of = TALLIES[tally]
    return f"INSERT INTO {tally}_change ({', '.join(key)}, change) VALUES ({key_of(row)}, {change})"


def moved(tally: str, differ: str) -> str:
    """An update that moves the row to another key (`differ` is the dialect's IS NOT)."""
    _, _, key, _ = TALLIES[tally]
    return " OR ".join(
        f"OLD.{column} {differ} NEW.{column}"
        if column != "reason"
        else f"(OLD.status = 'skipped' OR NEW.status = 'skipped') AND OLD.reason {differ} NEW.reason"
        for column in key
    )


def sqlite_triggers(tally: str) -> list[str]:
    table, _, key, _ = TALLIES[tally]
    return [
        f"CREATE TRIGGER {tally}_insert AFTER INSERT ON {table} BEGIN {append(tally, 'NEW', 1)}; END",
        f"CREATE TRIGGER {tally}_update AFTER UPDATE OF {', '.join(key)} ON {table} WHEN {moved(tally, 'IS NOT')} "
        f"BEGIN {append(tally, 'OLD', -1)}; {append(tally, 'NEW', 1)}; END",
        f"CREATE TRIGGER {tally}_delete AFTER DELETE ON {table} BEGIN {append(tally, 'OLD', -1)}; END",
    ]


def postgresql_triggers(tally: str) -> list[str]:
    table, _, key, _ = TALLIES[tally]
    run = f"FOR EACH ROW EXECUTE FUNCTION {tally}_count()"
    return [
        f"CREATE FUNCTION {tally}_count() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF TG_OP <> 'INSERT' THEN {append(tally, 'OLD', -1)}; END IF; "
        f"IF TG_OP <> 'DELETE' THEN {append(tally, 'NEW', 1)}; END IF; "
        f"RETURN NULL; END $$",
        f"CREATE TRIGGER {tally}_insert AFTER INSERT ON {table} {run}",
        f"CREATE TRIGGER {tally}_update AFTER UPDATE OF {', '.join(key)} ON {table} "
        f"FOR EACH ROW WHEN ({moved(tally, 'IS DISTINCT FROM')}) EXECUTE FUNCTION {tally}_count()",
        f"CREATE TRIGGER {tally}_delete AFTER DELETE ON {table} {run}",
    ]


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for tally, (table, count, key, key_of) in TALLIES.items():
        op.create_table(
            tally,
            *(sa.Column(column, KEY_TYPES[column], nullable=False) for column in key),
            sa.Column(count, sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint(*key),
            sqlite_with_rowid=False,
        )
        op.create_table(
            f"{tally}_change",
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
            *(sa.Column(column, KEY_TYPES[column], nullable=False) for column in key),
            sa.Column("change", sa.Integer(), nullable=False),
        )
        op.execute(
            f"INSERT INTO {tally} ({', '.join(key)}, {count}) "
            f"SELECT {key_of(table)}, count(*) FROM {table} GROUP BY {key_of(table)}"
        )
        for statement in (postgresql_triggers if postgresql else sqlite_triggers)(tally):
            op.execute(statement)
    op.create_index("ix_event_customer_at_name", "event", ["customer_id", "at", "name"], unique=False)
    op.drop_index("ix_event_customer_at", table_name="event")


def downgrade() -> None:
    op.create_index("ix_event_customer_at", "event", ["customer_id", "at"], unique=False)
    op.drop_index("ix_event_customer_at_name", table_name="event")
    postgresql = op.get_bind().dialect.name == "postgresql"
    for tally, (table, _, _, _) in TALLIES.items():
        for event in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER {tally}_{event}" + (f" ON {table}" if postgresql else ""))
        if postgresql:
            op.execute(f"DROP FUNCTION {tally}_count()")
        op.drop_table(f"{tally}_change")
        op.drop_table(tally)
