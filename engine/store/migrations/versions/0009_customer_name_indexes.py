"""customer name indexes

Indexes on the lower-cased names, (first name, last name) and last name, so that a search for the
start of a name ("ann", "lee", "ann le") reads a range of an index over every customer
(engine/customers/search.py) instead of only the newest.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 12:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_customer_name_lower": ["lower(first_name)", "lower(last_name)"],
    "ix_customer_last_name_lower": ["lower(last_name)"],
}


def upgrade() -> None:
    for name, expressions in INDEXES.items():
        op.create_index(name, "customer", [sa.text(e) for e in expressions])


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="customer")
