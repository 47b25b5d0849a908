"""due sends index

The sends still waiting (`scheduled` or `deferred`), per campaign and step, in the order they
were due, with when each may be tried: a partial index, so a batch of due sends is read from the
start of a range (engine/delivery/ledger.py `due_sends`) and a sent one leaves it. Before, each batch sorted every
waiting send of the step: a million-customer broadcast sorted a million rows for every 500 it sent.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 13:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

WAITING = "status IN ('scheduled', 'deferred')"


def upgrade() -> None:
    op.create_index(
        "ix_send_due",
        "send",
        ["campaign", "step", "due_at", "id", "next_attempt_at"],
        sqlite_where=sa.text(WAITING),
        postgresql_where=sa.text(WAITING),
    )


def downgrade() -> None:
    op.drop_index("ix_send_due", table_name="send")
