"""send and entry tallies, kept by triggers; a covering index for last activity

The report's campaign figures count sends by (campaign, step, variant, status, outcomes, skip
reason) and entries by (campaign, held out). Counting the rows took a pass over every send; these
tables hold the counts, kept by the database itself on every insert, update and delete, so that
no write path can forget them (engine/tallies.py). Filled here from the rows already stored.

On PostgreSQL each server process (`writer`, its backend pid) counts in rows of its own, so that
concurrent transactions never wait on, nor deadlock over, a shared counter row; on SQLite, with its
single writer, `writer` is always 0.

The index on events (customer, time) also carries the name, so that a customer's facts (last
activity, purchases) are read from the index alone.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 15:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

SEND_KEY = ("campaign", "step", "variant", "status", "outcomes", "reason")
ENTRY_KEY = ("campaign", "held_out")


def send_key(row: str) -> str:
    """The tally key of a send row (NEW or OLD): no variant is '', and only a skip keeps its reason."""
    return (f"{row}.campaign, {row}.step, coalesce({row}.variant, ''), {row}.status, {row}.outcomes, "
            f"CASE WHEN {row}.status = 'skipped' THEN coalesce({row}.reason, '') ELSE '' END")


def entry_key(row: str) -> str:
    return f"{row}.campaign, {row}.held_out"


TALLIES = {  # table: (counted table, count column, key columns, key of a row)
    "send_tally": ("send", "sends", SEND_KEY, send_key),
    "entry_tally": ("entry", "entries", ENTRY_KEY, entry_key),
}


def add(tally: str, row: str, delta: int, writer: str) -> str:
    """Add `delta` to the count of `row`'s key in `writer`'s rows."""
    _, count, key, key_of = TALLIES[tally]
    columns = ", ".join(key)
    return (f"INSERT INTO {tally} ({columns}, writer, {count}) VALUES ({key_of(row)}, {writer}, {delta}) "
            f"ON CONFLICT ({columns}, writer) DO UPDATE SET {count} = {tally}.{count} + excluded.{count}")


def changed(tally: str) -> str:
    """An update that moves the row to another key."""
    _, _, key, _ = TALLIES[tally]
    return " OR ".join(f"OLD.{column} IS NOT NEW.{column}" if column != "reason" else
                       "(OLD.status = 'skipped' OR NEW.status = 'skipped') AND OLD.reason IS NOT NEW.reason"
                       for column in key)


def sqlite_triggers(tally: str) -> list[str]:
    table, _, key, _ = TALLIES[tally]
    return [
        f"CREATE TRIGGER {tally}_insert AFTER INSERT ON {table} BEGIN {add(tally, 'NEW', 1, '0')}; END",
        f"CREATE TRIGGER {tally}_update AFTER UPDATE OF {', '.join(key)} ON {table} WHEN {changed(tally)} "
        f"BEGIN {add(tally, 'OLD', -1, '0')}; {add(tally, 'NEW', 1, '0')}; END",
        f"CREATE TRIGGER {tally}_delete AFTER DELETE ON {table} BEGIN {add(tally, 'OLD', -1, '0')}; END",
    ]


def postgresql_triggers(tally: str) -> list[str]:
    table, _, key, _ = TALLIES[tally]
    writer = "pg_backend_pid()"
    function = (f"CREATE FUNCTION {tally}_count() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF TG_OP <> 'INSERT' THEN {add(tally, 'OLD', -1, writer)}; END IF; "
                f"IF TG_OP <> 'DELETE' THEN {add(tally, 'NEW', 1, writer)}; END IF; "
                f"RETURN NULL; END $$")
    run = f"EXECUTE FUNCTION {tally}_count()"
    changed_sql = changed(tally).replace(" IS NOT ", " IS DISTINCT FROM ")
    return [
        function,
        f"CREATE TRIGGER {tally}_insert AFTER INSERT ON {table} FOR EACH ROW {run}",
        f"CREATE TRIGGER {tally}_update AFTER UPDATE OF {', '.join(key)} ON {table} "
        f"FOR EACH ROW WHEN ({changed_sql}) {run}",
        f"CREATE TRIGGER {tally}_delete AFTER DELETE ON {table} FOR EACH ROW {run}",
    ]


def upgrade() -> None:
    op.create_table(
        'send_tally',
        sa.Column('campaign', sa.String(length=100), nullable=False),
        sa.Column('step', sa.Integer(), nullable=False),
        sa.Column('variant', sa.String(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('outcomes', sa.Integer(), nullable=False),
        sa.Column('reason', sa.String(), nullable=False),
        sa.Column('writer', sa.Integer(), nullable=False),
        sa.Column('sends', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*SEND_KEY, 'writer'),
    )
    op.create_table(
        'entry_tally',
        sa.Column('campaign', sa.String(length=100), nullable=False),
        sa.Column('held_out', sa.Boolean(), nullable=False),
        sa.Column('writer', sa.Integer(), nullable=False),
        sa.Column('entries', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*ENTRY_KEY, 'writer'),
    )
    for tally, (table, count, key, key_of) in TALLIES.items():
        op.execute(f"INSERT INTO {tally} ({', '.join(key)}, writer, {count}) "
                   f"SELECT {key_of(table)}, 0, count(*) FROM {table} GROUP BY {key_of(table)}")
        dialect = op.get_bind().dialect.name
        for statement in (postgresql_triggers if dialect == "postgresql" else sqlite_triggers)(tally):
            op.execute(statement)
    op.create_index('ix_event_customer_at_name', 'event', ['customer_id', 'at', 'name'], unique=False)
    op.drop_index('ix_event_customer_at', table_name='event')


def downgrade() -> None:
    op.create_index('ix_event_customer_at', 'event', ['customer_id', 'at'], unique=False)
    op.drop_index('ix_event_customer_at_name', table_name='event')
    postgresql = op.get_bind().dialect.name == "postgresql"
    for tally, (table, _, _, _) in TALLIES.items():
        for event in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER {tally}_{event}" + (f" ON {table}" if postgresql else ""))
        if postgresql:
            op.execute(f"DROP FUNCTION {tally}_count()")
        op.drop_table(tally)
