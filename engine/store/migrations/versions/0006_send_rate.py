"""the sender's pace, shared by every daemon: `send_rate`

One row a sender (engine/delivery/ratelimit.py): the next free slot of `sender.rate.per_second` on
the wall clock, and the pause the provider asked for when it said to slow down.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 08:00:00.000000
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "send_rate",
        sa.Column("sender", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("next_free", sa.Float(), nullable=False),
        sa.Column("paused_until", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("throttles", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("sender"),
    )


def downgrade() -> None:
    op.drop_table("send_rate")
