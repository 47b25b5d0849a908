"""resent sends and evaluation watermarks

`send.resent_at`: when an operator resent a send whose outcome was unknown. `watermark`: the last
instant each campaign was evaluated up to, so evaluation after an outage starts where it stopped.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 08:20:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a plain ADD COLUMN: a batch (table copy) on SQLite would drop the tally triggers of 0004
    op.add_column("send", sa.Column("resent_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    op.create_table(
        "watermark",
        sa.Column("campaign", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("evaluated_until", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("campaign"),
    )


def downgrade() -> None:
    op.drop_table("watermark")
    op.drop_column("send", "resent_at")
