"""Calls in flight of every controller of a cluster, by caller (ppcswitch.routing.shared): a caller's
calls on different nodes are settled in the order they started, so the call that started first is
the original for the unique-caller billing rules, whichever node ends its call first. And the last
delivery of a caller to a buyer with a routing duplicate rule (cluster_delivered), so the rule
holds whichever node a repeat call lands on.

Revision ID: 0012_cluster_calls
Revises: 0011_portal_tasks
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_cluster_calls"
down_revision = "0011_portal_tasks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cluster_calls",
        sa.Column("linkedid", sa.String(150), primary_key=True),
        sa.Column("node", sa.String(64), nullable=False),
        sa.Column("caller", sa.String(64), nullable=False),
        sa.Column("arrived", sa.Float(), nullable=False),
        sa.Column("started", sa.Float(), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_cluster_calls_caller", "cluster_calls", ["caller"])
    op.create_table(
        "cluster_delivered",
        sa.Column("scope", sa.String(64), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cluster_delivered")
    op.drop_index("ix_cluster_calls_caller", "cluster_calls")
    op.drop_table("cluster_calls")
