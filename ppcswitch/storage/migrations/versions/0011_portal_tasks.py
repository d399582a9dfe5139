"""Partner portals, the partners' own tasks: what the operator lets each partner do and see
(recordings, number requests and their limit, a buyer's own hours and caps within bounds), what
each campaign shows partners, publishers' number requests and the operator's spare numbers, and
postback targets a publisher manages itself.

Revision ID: 0011_portal_tasks
Revises: 0010_breakdowns
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_portal_tasks"
down_revision = "0010_breakdowns"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("portal_access") as batch:
        batch.add_column(sa.Column("recordings", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("number_limit", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("auto_fill_numbers", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("edit_rules", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("hours_bound", sa.String(500), nullable=False, server_default=""))
        batch.add_column(sa.Column("max_concurrency", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_cap_hourly", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_cap_daily", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_cap_monthly", sa.Integer(), nullable=True))
    with op.batch_alter_table("postback_targets") as batch:
        batch.add_column(sa.Column("partner_managed", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "portal_campaign_access",
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("caller_display", sa.String(8), nullable=True),
        sa.Column("show_buyer_name", sa.Boolean(), nullable=True),
        sa.Column("recordings", sa.Boolean(), nullable=True),
    )
    op.create_table(
        "portal_number_requests",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("publisher_id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("area_code", sa.String(3), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("numbers", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(64), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_note", sa.Text(), nullable=False),
    )
    op.create_index("ix_portal_number_requests_publisher_id", "portal_number_requests", ["publisher_id"])
    op.create_table(
        "portal_spare_numbers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("number", sa.String(32), nullable=False, unique=True),
        sa.Column("added_by", sa.String(64), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("portal_spare_numbers")
    op.drop_table("portal_number_requests")
    op.drop_table("portal_campaign_access")
    with op.batch_alter_table("postback_targets") as batch:
        batch.drop_column("partner_managed")
    with op.batch_alter_table("portal_access") as batch:
        for name in ("max_cap_monthly", "max_cap_daily", "max_cap_hourly", "max_concurrency", "hours_bound",
                     "edit_rules", "auto_fill_numbers", "number_limit", "recordings"):
            batch.drop_column(name)
