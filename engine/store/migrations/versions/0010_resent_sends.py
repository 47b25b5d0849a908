"""resent sends: when an operator resent a send whose outcome was unknown

Revision ID: 0010
Revises: 0004
Create Date: 2026-12-03 08:20:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0010"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a plain ADD COLUMN: a batch (table copy) on SQLite would drop the tally triggers of 0004
    op.add_column("send", sa.Column("resent_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))


def downgrade() -> None:
    op.drop_column("send", "resent_at")
