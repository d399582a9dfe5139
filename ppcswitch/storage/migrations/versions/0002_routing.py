"""Routing rules, RTB settings, campaign routing options and call routing traces.

Revision ID: 0002_routing
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_routing"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "buyer_rules",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("buyer_id", sa.Integer(), sa.ForeignKey("buyers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=True),
        sa.Column("rules", sa.Text(), nullable=False),
        sa.UniqueConstraint("buyer_id", "campaign_id", name="uq_buyer_rules_pair"),
    )
    op.create_index("ix_buyer_rules_buyer_id", "buyer_rules", ["buyer_id"])
    op.create_table(
        "buyer_rtb",
        sa.Column("buyer_id", sa.Integer(), sa.ForeignKey("buyers.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("ping_url", sa.String(500), nullable=False),
        sa.Column("post_url", sa.String(500), nullable=False),
        sa.Column("timeout_ms", sa.Integer(), nullable=False),
        sa.Column("floor_cents", sa.BigInteger(), nullable=False),
        sa.Column("share_caller", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "campaign_routing",
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("zip_prompt", sa.Boolean(), nullable=False),
        sa.Column("repeat_caller", sa.Boolean(), nullable=False),
        sa.Column("whisper", sa.String(100), nullable=False),
        sa.Column("rtb_budget_ms", sa.Integer(), nullable=False),
    )
    op.create_table(
        "call_routing",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("linkedid", sa.String(150), nullable=False, unique=True),
        sa.Column("trace", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    for table in ("call_routing", "campaign_routing", "buyer_rtb", "buyer_rules"):
        op.drop_table(table)
