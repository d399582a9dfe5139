"""Attribution: number pools, attribution on the call record, postback targets and the durable outbox.

Revision ID: 0002_attribution
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_attribution"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("calls", sa.Column("sub_id", sa.String(64), nullable=False, server_default=""))
    op.add_column("calls", sa.Column("click_id", sa.String(128), nullable=False, server_default=""))
    op.add_column("calls", sa.Column("attribution", sa.Text(), nullable=False, server_default="{}"))
    op.create_index("ix_calls_publisher_sub_id", "calls", ["publisher_id", "sub_id"])
    op.create_table(
        "number_pools",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False),
        sa.Column("publisher_id", sa.Integer(), sa.ForeignKey("publishers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("public_key", sa.String(64), nullable=False, unique=True),
        sa.Column("lease_seconds", sa.Integer(), nullable=False),
        sa.Column("shortages", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "pool_numbers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("pool_id", sa.Integer(), sa.ForeignKey("number_pools.id", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("tracking_number_id", sa.Integer(), sa.ForeignKey("tracking_numbers.id", ondelete="CASCADE"),
                  nullable=False, unique=True),
    )
    op.create_table(
        "postback_targets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("secret", sa.String(200), nullable=False),
        sa.UniqueConstraint("kind", "owner_id", name="uq_postback_targets_owner"),
    )
    op.create_table(
        "postback_outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("linkedid", sa.String(150), nullable=False, index=True),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(4000), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(300), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("linkedid", "event", "kind", "owner_id", name="uq_postback_outbox_once"),
    )
    op.create_index("ix_postback_outbox_due", "postback_outbox", ["status", "next_attempt_at"])
    op.create_table(
        "postback_attempts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("outbox_id", sa.BigInteger(), sa.ForeignKey("postback_outbox.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(300), nullable=False, server_default=""),
        sa.Column("ms", sa.Integer(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("postback_attempts")
    op.drop_index("ix_postback_outbox_due", "postback_outbox")
    op.drop_table("postback_outbox")
    op.drop_table("postback_targets")
    op.drop_table("pool_numbers")
    op.drop_table("number_pools")
    op.drop_index("ix_calls_publisher_sub_id", "calls")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("attribution")
        batch.drop_column("click_id")
        batch.drop_column("sub_id")
