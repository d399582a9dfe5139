"""Admin panel and API: users, API tokens, login sessions, audit log.

Revision ID: 0002_web
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_web"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "web_users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(300), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", Time, nullable=False),
    )
    op.create_table(
        "web_api_tokens",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("web_users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("created_at", Time, nullable=False),
    )
    op.create_index("ix_web_api_tokens_user_id", "web_api_tokens", ["user_id"])
    op.create_table(
        "web_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("web_users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("expires_at", Time, nullable=False),
    )
    op.create_index("ix_web_sessions_user_id", "web_sessions", ["user_id"])
    op.create_table(
        "web_audit_log",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("at", Time, nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
    )
    op.create_index("ix_web_audit_log_at", "web_audit_log", ["at"])
    # The call log's "caller starts with" filter: without it a rare caller scans every call.
    # PostgreSQL needs text_pattern_ops for LIKE 'prefix%' to use an index under any collation.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE INDEX ix_calls_caller ON calls (caller text_pattern_ops)")
    else:
        op.create_index("ix_calls_caller", "calls", ["caller"])


def downgrade() -> None:
    op.drop_index("ix_calls_caller", "calls")
    op.drop_table("web_audit_log")
    op.drop_table("web_sessions")
    op.drop_table("web_api_tokens")
    op.drop_table("web_users")
