"""One head again, caps and budgets of campaigns and publishers, unique-caller windows in seconds.

Every 0002_* migration branched from 0001; this merges them (and 0003) into one head, so
`alembic heads` names one revision and later migrations have one parent.

Revision ID: 0004_limits
Revises: 0002_attribution, 0002_fraud, 0002_publisher_codes, 0002_recovery, 0002_routing, 0002_web,
    0003_billing_daily
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_limits"
down_revision = ("0002_attribution", "0002_fraud", "0002_publisher_codes", "0002_recovery", "0002_routing",
                 "0002_web", "0003_billing_daily")
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "routing_limits",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=True),
        sa.Column("publisher_id", sa.Integer(), sa.ForeignKey("publishers.id", ondelete="CASCADE"), nullable=True),
        sa.Column("rules", sa.Text(), nullable=False, server_default="{}"),
        sa.UniqueConstraint("campaign_id", "publisher_id", name="uq_routing_limits_scope"),
    )
    with op.batch_alter_table("billing_rules") as batch:
        batch.add_column(sa.Column("unique_window", sa.Integer(), nullable=True))
    # Windows set in days before: the same window in seconds.
    op.execute("UPDATE billing_rules SET unique_window = unique_days * 86400 WHERE unique_days IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("billing_rules") as batch:
        batch.drop_column("unique_window")
    op.drop_table("routing_limits")
