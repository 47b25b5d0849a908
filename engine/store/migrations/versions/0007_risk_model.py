"""predicted churn risk: trained models and each customer's latest score

`risk_model` keeps each run of `lifecycle risk train`: the rule thresholds calibrated from the
store's gaps between purchases, the backtested figures and the signed model. `customer_risk` holds
each customer's latest probability and colour, so that `{risk: red}` stays one SQL expression
under `risk.model: predicted`.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 08:00:00.000000
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "risk_model",
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("trained_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("data_until", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("horizon_seconds", sa.Integer(), nullable=False),
        sa.Column("yellow_seconds", sa.Integer(), nullable=True),
        sa.Column("red_seconds", sa.Integer(), nullable=True),
        sa.Column("metrics", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("model", sa.LargeBinary(), nullable=True),
        sa.Column("signature", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.PrimaryKeyConstraint("version"),
    )
    op.create_table(
        "customer_risk",
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("colour", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("scored_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customer.id"]),
        sa.PrimaryKeyConstraint("customer_id"),
    )


def downgrade() -> None:
    op.drop_table("customer_risk")
    op.drop_table("risk_model")
