"""send outcomes and report indexes

Each send gets a bit per outcome of its provider events (`outcomes`) and the time of each outcome's
first event (`delivered_at`, ...), filled here from the deliveries already stored; and the indexes
the report reads from instead of the tables.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 16:30:00.000000
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# As engine/store/tables.py has it at this revision: an outcome's bit is 1 << its position here.
OUTCOME_KINDS = {
    "delivered": ("delivered",),
    "opened": ("open",),
    "clicked": ("click",),
    "bounced": ("bounce", "dropped"),
    "complained": ("spamreport",),
    "unsubscribed": ("unsubscribe",),
}


def backfill_sql() -> str:
    """One UPDATE … FROM over the deliveries grouped by send (SQLite 3.33+ and PostgreSQL)."""
    firsts = ", ".join(
        f"min(CASE WHEN kind IN ({', '.join(repr(k) for k in kinds)}) THEN at END) AS {outcome}_at"
        for outcome, kinds in OUTCOME_KINDS.items()
    )
    mask = " + ".join(
        f"CASE WHEN f.{outcome}_at IS NULL THEN 0 ELSE {1 << i} END" for i, outcome in enumerate(OUTCOME_KINDS)
    )
    columns = ", ".join(f"{outcome}_at = f.{outcome}_at" for outcome in OUTCOME_KINDS)
    return (
        f"UPDATE send SET outcomes = {mask}, {columns} "
        f"FROM (SELECT send_id, {firsts} FROM delivery GROUP BY send_id) AS f WHERE f.send_id = send.id"
    )


def upgrade() -> None:
    # Plain operations, not batch ones: SQLite adds columns and indexes in place, and copying the
    # send table (what batch mode may choose) would be slow on a large store and trip its foreign keys.
    op.add_column("send", sa.Column("outcomes", sa.Integer(), server_default=sa.text("0"), nullable=False))
    for outcome in OUTCOME_KINDS:
        op.add_column("send", sa.Column(f"{outcome}_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    op.execute(backfill_sql())
    op.create_index(
        "ix_send_figures", "send", ["status", "campaign", "step", "variant", "outcomes", "reason"], unique=False
    )
    op.create_index("ix_send_status_sent", "send", ["status", "sent_at"], unique=False)
    for outcome in OUTCOME_KINDS:
        present = sa.text(f"{outcome}_at IS NOT NULL")
        op.create_index(
            f"ix_send_{outcome}_at",
            "send",
            [f"{outcome}_at"],
            unique=False,
            sqlite_where=present,
            postgresql_where=present,
        )
    op.create_index("ix_entry_campaign_held", "entry", ["campaign", "held_out", "entered_at"], unique=False)
    op.create_index("ix_entry_customer_entered", "entry", ["customer_id", "entered_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_entry_customer_entered", table_name="entry")
    op.drop_index("ix_entry_campaign_held", table_name="entry")
    for outcome in OUTCOME_KINDS:
        op.drop_index(f"ix_send_{outcome}_at", table_name="send")
    op.drop_index("ix_send_status_sent", table_name="send")
    op.drop_index("ix_send_figures", table_name="send")
    for outcome in reversed(OUTCOME_KINDS):
        op.drop_column("send", f"{outcome}_at")
    op.drop_column("send", "outcomes")
