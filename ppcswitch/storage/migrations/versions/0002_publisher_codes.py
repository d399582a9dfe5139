"""IVR publisher codes: numbers that ask for one, and the codes (publisher, optional sub-ID).

Revision ID: 0002_publisher_codes
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_publisher_codes"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tracking_numbers",
                  sa.Column("ask_publisher_code", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "publisher_codes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("code", sa.String(8), nullable=False, unique=True),
        sa.Column("publisher_id", sa.Integer(), sa.ForeignKey("publishers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("sub_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_publisher_codes_publisher_id", "publisher_codes", ["publisher_id"])


def downgrade() -> None:
    op.drop_table("publisher_codes")
    with op.batch_alter_table("tracking_numbers") as batch:
        batch.drop_column("ask_publisher_code")
