"""Recovery state per node: several controllers (one per Asterisk node) on one database each keep their
own heartbeat; the single box's row becomes node ''.

Revision ID: 0007_recovery_nodes
Revises: 0006_web_zones_merge
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_recovery_nodes"
down_revision = "0006_web_zones_merge"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recovery_nodes",
        sa.Column("node", sa.String(64), primary_key=True),
        sa.Column("alive_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.execute("INSERT INTO recovery_nodes (node, alive_at, started_at) "
               "SELECT '', alive_at, started_at FROM recovery_state WHERE id = 1")
    op.drop_table("recovery_state")


def downgrade() -> None:
    op.create_table(
        "recovery_state",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("alive_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.execute("INSERT INTO recovery_state (id, alive_at, started_at) "
               "SELECT 1, alive_at, started_at FROM recovery_nodes WHERE node = ''")
    op.drop_table("recovery_nodes")
