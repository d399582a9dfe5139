"""Partner portals: partner users bound to a publisher or buyer, invites, access settings, disputes.

Revision ID: 0008_portal
Revises: 0007_recovery_nodes
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_portal"
down_revision = "0007_recovery_nodes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("web_users", sa.Column("publisher_id", sa.Integer(), nullable=True))
    op.add_column("web_users", sa.Column("buyer_id", sa.Integer(), nullable=True))
    op.create_table(
        "portal_access",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("party", sa.String(16), nullable=False),
        sa.Column("party_id", sa.Integer(), nullable=False),
        sa.Column("caller_display", sa.String(8), nullable=False),
        sa.Column("show_buyer_name", sa.Boolean(), nullable=False),
        sa.Column("allow_pause", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("party", "party_id", name="uq_portal_access_party"),
    )
    op.create_table(
        "web_invites",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("web_users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_web_invites_user_id", "web_invites", ["user_id"])
    op.create_table(
        "portal_disputes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("call_id", sa.BigInteger(), nullable=False, unique=True),
        sa.Column("linkedid", sa.String(150), nullable=False),
        sa.Column("buyer_id", sa.Integer(), nullable=False),
        sa.Column("reason_code", sa.String(32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(64), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_note", sa.Text(), nullable=False),
        sa.Column("reversed_cents", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_portal_disputes_buyer_id", "portal_disputes", ["buyer_id"])


def downgrade() -> None:
    op.drop_table("portal_disputes")
    op.drop_table("web_invites")
    op.drop_table("portal_access")
    with op.batch_alter_table("web_users") as batch:
        batch.drop_column("buyer_id")
        batch.drop_column("publisher_id")
