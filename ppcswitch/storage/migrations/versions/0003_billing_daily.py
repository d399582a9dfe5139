"""Billing: daily (UTC) rollups next to the 15-minute ones, so long reports read few rows.

Revision ID: 0003_billing_daily
Revises: 0002_billing
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_billing_daily"
down_revision = "0002_billing"
branch_labels = None
depends_on = None

COUNTS = ("calls", "connected", "billable", "paid", "connected_ms", "receivable_cents", "payable_cents")


def upgrade() -> None:
    op.create_table(
        "billing_daily",
        sa.Column("day_start", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("campaign_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("buyer_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("publisher_id", sa.Integer(), primary_key=True, autoincrement=False),
        *(sa.Column(c, sa.BigInteger(), nullable=False) for c in COUNTS),
    )
    # Databases already billing at 0002: fill the days from the 15-minute rollups.
    day = ("substr(bucket_start, 1, 10) || ' 00:00:00.000000'" if op.get_bind().dialect.name == "sqlite"
           else "date_trunc('day', bucket_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'")
    sums = ", ".join(f"sum({c})" for c in COUNTS)
    op.execute(f"INSERT INTO billing_daily (day_start, campaign_id, buyer_id, publisher_id, {', '.join(COUNTS)}) "
               f"SELECT {day}, campaign_id, buyer_id, publisher_id, {sums} FROM billing_rollups "
               f"GROUP BY 1, campaign_id, buyer_id, publisher_id")


def downgrade() -> None:
    op.drop_table("billing_daily")
