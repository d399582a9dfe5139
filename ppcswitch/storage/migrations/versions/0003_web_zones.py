"""Panel time zones: the account's (web_settings) and each user's own (web_users.timezone).

Revision ID: 0003_web_zones
Revises: 0002_web
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_web_zones"
down_revision = "0002_web"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("web_users", sa.Column("timezone", sa.String(64), nullable=True))
    op.create_table(
        "web_settings",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("web_settings")
    with op.batch_alter_table("web_users") as batch:
        batch.drop_column("timezone")
