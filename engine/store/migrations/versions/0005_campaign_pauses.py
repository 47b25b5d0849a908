"""campaign pauses, and the index of a campaign's latest sends

`campaign_pause` holds the campaigns whose sending is held, by an operator (`lifecycle pause`) or by
the deliverability guard (engine/delivery/guard.py). The guard reads each campaign's latest sends
that went out, newest first, from `ix_send_campaign_sent`: a bounded walk of an index at every tick
rather than a sort of all the campaign's sends.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 08:00:00.000000
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaign_pause",
        sa.Column("campaign", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("paused_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("paused_by", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("figures", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        sa.Column("alerted_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("resumed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("campaign"),
    )
    op.create_index("ix_send_campaign_sent", "send", ["campaign", "status", "sent_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_send_campaign_sent", table_name="send")
    op.drop_table("campaign_pause")
