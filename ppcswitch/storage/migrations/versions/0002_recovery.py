"""Recovery: when the controller last wrote its records (calls ending later are recovered from Asterisk's CDRs).

Revision ID: 0002_recovery
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_recovery"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recovery_state",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("alive_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("recovery_state")
