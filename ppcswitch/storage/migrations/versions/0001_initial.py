"""Initial schema: network configuration, calls and attempts, config_version.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("created_at", Time, nullable=False),
    )
    op.create_table(
        "publishers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("payout_cents", sa.BigInteger(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("created_at", Time, nullable=False),
    )
    op.create_table(
        "buyers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("destination", sa.String(300), nullable=False),
        sa.Column("ring_timeout", sa.Integer(), nullable=False),
        sa.Column("concurrency_cap", sa.Integer(), nullable=True),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("min_duration", sa.Integer(), nullable=False),
        sa.Column("revenue_cents", sa.BigInteger(), nullable=False),
        sa.Column("created_at", Time, nullable=False),
    )
    op.create_table(
        "campaign_buyers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False),
        sa.Column("buyer_id", sa.Integer(), sa.ForeignKey("buyers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.UniqueConstraint("campaign_id", "buyer_id", name="uq_campaign_buyers_pair"),
    )
    op.create_index("ix_campaign_buyers_buyer_id", "campaign_buyers", ["buyer_id"])
    op.create_table(
        "tracking_numbers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("number", sa.String(32), nullable=False, unique=True),
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False),
        sa.Column("publisher_id", sa.Integer(), sa.ForeignKey("publishers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", Time, nullable=False),
    )
    op.create_index("ix_tracking_numbers_campaign_id", "tracking_numbers", ["campaign_id"])
    op.create_index("ix_tracking_numbers_publisher_id", "tracking_numbers", ["publisher_id"])
    op.create_table(
        "config_version",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_config_version_single_row"),
    )
    op.execute("INSERT INTO config_version (id, version) VALUES (1, 0)")
    op.create_table(
        "calls",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("linkedid", sa.String(150), nullable=False, unique=True),
        sa.Column("tracking_number", sa.String(), nullable=False),
        sa.Column("caller", sa.String(), nullable=False),
        sa.Column("caller_valid", sa.Boolean(), nullable=False),
        sa.Column("started_at", Time, nullable=False),
        sa.Column("ended_at", Time, nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("publisher_id", sa.Integer(), nullable=True),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("buyer_id", sa.Integer(), nullable=True),
        sa.Column("answered_at", Time, nullable=True),
        sa.Column("connected_ms", sa.BigInteger(), nullable=False),
        sa.Column("hangup_cause", sa.Integer(), nullable=True),
        sa.Column("hangup_cause_text", sa.String(), nullable=False),
        sa.Column("reject_reason", sa.String(), nullable=False),
        sa.Column("billable", sa.Boolean(), nullable=False),
        sa.Column("billing_reasons", sa.Text(), nullable=False),
        sa.Column("revenue_cents", sa.BigInteger(), nullable=False),
        sa.Column("payout_cents", sa.BigInteger(), nullable=False),
    )
    for col in ("started_at", "campaign_id", "publisher_id", "buyer_id"):
        op.create_index(f"ix_calls_{col}", "calls", [col])
    op.create_table(
        "call_attempts",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("call_id", sa.BigInteger(), sa.ForeignKey("calls.id", ondelete="CASCADE"), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("buyer_id", sa.Integer(), nullable=True),
        sa.Column("dial_status", sa.String(), nullable=False),
        sa.Column("started_at", Time, nullable=True),
        sa.Column("answered_at", Time, nullable=True),
        sa.Column("ended_at", Time, nullable=True),
        sa.UniqueConstraint("call_id", "seq", name="uq_call_attempts_call_seq"),
    )


def downgrade() -> None:
    for table in ("call_attempts", "calls", "config_version", "tracking_numbers", "campaign_buyers",
                  "buyers", "publishers", "campaigns"):
        op.drop_table(table)
