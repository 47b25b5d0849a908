"""fewer send indexes

Every index on `send` is rewritten when a send changes status, three times for each message
(claimed, sent, and the tallies' triggers' own writes aside). Two were never read on their own:
`ix_send_campaign_status` is the start of `ix_send_campaign_sent`, and every query on a status
reads `ix_send_status_sent` or `ix_send_figures` rather than `ix_send_status_next`. The entries
not yet given their first send are the only ones `ix_entry_unscheduled` is read for, so it keeps
only those.

A send is now claimed as its message goes to the sender: a send an earlier version claimed but
never handed over (stopped mid-batch) waits again, its try given back.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 15:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

NOT_HANDED = "claimed, not yet handed to the sender"  # the reason an earlier version gave such a claim
# as each database is asked: SQLAlchemy writes False as 0 for SQLite, which uses the index only then
UNSCHEDULED = {"sqlite": "scheduled = 0", "postgresql": "scheduled = false"}


def upgrade() -> None:
    op.execute(
        sa.text(
            "UPDATE send SET status = 'scheduled', reason = NULL, attempts = attempts - 1, sent_at = NULL, "
            "claimed_by = NULL WHERE status = 'sending' AND reason = :reason"
        ).bindparams(reason=NOT_HANDED)
    )
    op.drop_index("ix_send_campaign_status", table_name="send")
    op.drop_index("ix_send_status_next", table_name="send")
    op.drop_index("ix_entry_unscheduled", table_name="entry")
    op.create_index(
        "ix_entry_unscheduled",
        "entry",
        ["scheduled"],
        sqlite_where=sa.text(UNSCHEDULED["sqlite"]),
        postgresql_where=sa.text(UNSCHEDULED["postgresql"]),
    )


def downgrade() -> None:
    op.drop_index("ix_entry_unscheduled", table_name="entry")
    op.create_index("ix_entry_unscheduled", "entry", ["scheduled"])
    op.create_index("ix_send_status_next", "send", ["status", "next_attempt_at"])
    op.create_index("ix_send_campaign_status", "send", ["campaign", "status"])
