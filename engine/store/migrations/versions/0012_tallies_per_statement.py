"""tallies per statement on PostgreSQL

The tallies' triggers (migration 0004) ran once for each row on PostgreSQL: a function call and
one or two appended changes for every send claimed, sent or inserted, which a million-customer
broadcast pays some five million times. Here they run once per statement and append one change
per key the statement moved rows into or out of, summed from the statement's transition tables
(every old row -1, every new row +1, so a row whose key stayed the same adds nothing). SQLite has
no statement triggers: its triggers stay as they are.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 16:00:00
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def send_key(row: str) -> str:
    """As migration 0004's: no variant is '', and only a skip keeps its reason."""
    return (
        f"{row}.campaign, {row}.step, coalesce({row}.variant, ''), {row}.status, {row}.outcomes, "
        f"CASE WHEN {row}.status = 'skipped' THEN coalesce({row}.reason, '') ELSE '' END"
    )


def entry_key(row: str) -> str:
    return f"{row}.campaign, {row}.held_out"


TALLIES = {  # tally: (counted table, key columns, key of a row)
    "send_tally": ("send", ("campaign", "step", "variant", "status", "outcomes", "reason"), send_key),
    "entry_tally": ("entry", ("campaign", "held_out"), entry_key),
}
SIDES = {"insert": (("new_rows", 1),), "update": (("old_rows", -1), ("new_rows", 1)), "delete": (("old_rows", -1),)}
TRANSITIONS = {
    "insert": "NEW TABLE AS new_rows",
    "update": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "delete": "OLD TABLE AS old_rows",
}


def summed(tally: str, event: str) -> str:
    """The statement's changes to the tally, one row per key that moved."""
    _, key, key_of = TALLIES[tally]
    columns = ", ".join(key)
    rows = " UNION ALL ".join(f"SELECT {key_of('r')}, {sign} FROM {name} r" for name, sign in SIDES[event])
    return (
        f"INSERT INTO {tally}_change ({columns}, change) SELECT {columns}, sum(change) "
        f"FROM ({rows}) AS moved ({columns}, change) GROUP BY {columns} HAVING sum(change) <> 0"
    )


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for tally, (table, _, _) in TALLIES.items():
        for event in SIDES:
            op.execute(f"DROP TRIGGER {tally}_{event} ON {table}")
            op.execute(
                f"CREATE FUNCTION {tally}_{event}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"{summed(tally, event)}; RETURN NULL; END $$"
            )
            op.execute(
                f"CREATE TRIGGER {tally}_{event} AFTER {event.upper()} ON {table} "
                f"REFERENCING {TRANSITIONS[event]} FOR EACH STATEMENT EXECUTE FUNCTION {tally}_{event}()"
            )
        op.execute(f"DROP FUNCTION {tally}_count()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for tally, (table, key, key_of) in TALLIES.items():
        for event in SIDES:
            op.execute(f"DROP TRIGGER {tally}_{event} ON {table}")
            op.execute(f"DROP FUNCTION {tally}_{event}()")
        append = f"INSERT INTO {tally}_change ({', '.join(key)}, change) VALUES"
        op.execute(
            f"CREATE FUNCTION {tally}_count() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF TG_OP <> 'INSERT' THEN {append} ({key_of('OLD')}, -1); END IF; "
            f"IF TG_OP <> 'DELETE' THEN {append} ({key_of('NEW')}, 1); END IF; "
            f"RETURN NULL; END $$"
        )
        moved = " OR ".join(
            f"OLD.{c} IS DISTINCT FROM NEW.{c}"
            if c != "reason"
            else "(OLD.status = 'skipped' OR NEW.status = 'skipped') AND OLD.reason IS DISTINCT FROM NEW.reason"
            for c in key
        )
        run = f"FOR EACH ROW EXECUTE FUNCTION {tally}_count()"
        op.execute(f"CREATE TRIGGER {tally}_insert AFTER INSERT ON {table} {run}")
        op.execute(
            f"CREATE TRIGGER {tally}_update AFTER UPDATE OF {', '.join(key)} ON {table} "
            f"FOR EACH ROW WHEN ({moved}) EXECUTE FUNCTION {tally}_count()"
        )
        op.execute(f"CREATE TRIGGER {tally}_delete AFTER DELETE ON {table} {run}")
