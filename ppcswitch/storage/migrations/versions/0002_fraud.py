"""Fraud and call quality: block/allow lists, campaign settings, per-call signals, alerts.

Revision ID: 0002_fraud
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_fraud"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "fraud_list",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("pattern", sa.String(20), nullable=False),
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=True),
        sa.Column("note", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("kind", "pattern", "campaign_id", name="uq_fraud_list_entry"),
    )
    op.create_table(
        "campaign_fraud",
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("challenge", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("record", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("block_score", sa.Integer(), nullable=True),
    )
    op.create_table(
        "call_signals",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("linkedid", sa.String(150), nullable=False, unique=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("caller", sa.String(64), nullable=False, server_default=""),
        sa.Column("publisher_id", sa.Integer()),
        sa.Column("campaign_id", sa.Integer()),
        sa.Column("buyer_id", sa.Integer()),
        sa.Column("connected", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("score", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("flagged", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("flags", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("explanation", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("attestation", sa.String(1), nullable=False, server_default=""),
        sa.Column("near_threshold", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("caller_talk_ms", sa.Integer()),
        sa.Column("buyer_talk_ms", sa.Integer()),
        sa.Column("challenge", sa.String(8), nullable=False, server_default=""),
        sa.Column("recording", sa.String(300), nullable=False, server_default=""),
    )
    op.create_index("ix_call_signals_started_at", "call_signals", ["started_at"])
    op.create_index("ix_call_signals_publisher_id", "call_signals", ["publisher_id"])
    op.create_table(
        "fraud_alerts",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("bad", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("threshold_permille", sa.Integer(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("acknowledged", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_fraud_alerts_at", "fraud_alerts", ["at"])


def downgrade() -> None:
    op.drop_table("fraud_alerts")
    op.drop_table("call_signals")
    op.drop_table("campaign_fraud")
    op.drop_table("fraud_list")
