"""Call intelligence: transcripts (and the transcription queue), phrase rules; the AI score and
dispositions as billing facts (billing_decisions) and rule fields (billing_rules).

It follows 0004_limits (one head there; it alters the billing tables 0004_limits changed too).

Revision ID: 0005_intelligence
Revises: 0004_limits
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_intelligence"
down_revision = "0004_limits"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "transcripts",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("linkedid", sa.String(150), nullable=False, unique=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("campaign_id", sa.Integer()),
        sa.Column("publisher_id", sa.Integer()),
        sa.Column("recording", sa.String(300), nullable=False, server_default=""),
        sa.Column("status", sa.String(8), nullable=False, server_default="pending"),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_try_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("error", sa.String(300), nullable=False, server_default=""),
        sa.Column("engine", sa.String(100), nullable=False, server_default=""),
        sa.Column("transcribed_at", sa.DateTime(timezone=True)),
        sa.Column("segments", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("text", sa.Text(), nullable=False, server_default=""),
        sa.Column("redactions", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("audio_ms", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("cpu_ms", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("caller_speech_ms", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("buyer_speech_ms", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("dispositions", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("ai_score", sa.Integer()),
        sa.Column("score_reasons", sa.Text(), nullable=False, server_default="[]"),
    )
    op.create_index("ix_transcripts_status", "transcripts", ["status", "next_try_at"])
    op.create_index("ix_transcripts_started_at", "transcripts", ["started_at"])
    op.create_table(
        "phrase_rules",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("campaign_id", sa.Integer()),
        sa.Column("disposition", sa.String(40), nullable=False),
        sa.Column("phrase", sa.String(200), nullable=False),
        sa.Column("side", sa.String(8), nullable=False, server_default="any"),
        sa.Column("enabled", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("campaign_id", "disposition", "phrase", "side", name="uq_phrase_rule"),
    )
    with op.batch_alter_table("billing_rules") as batch:
        batch.add_column(sa.Column("min_ai_score", sa.Integer()))
        batch.add_column(sa.Column("deny_dispositions", sa.Text()))
    with op.batch_alter_table("billing_decisions") as batch:
        batch.add_column(sa.Column("ai_score", sa.Integer()))
        batch.add_column(sa.Column("dispositions", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("billing_decisions") as batch:
        batch.drop_column("dispositions")
        batch.drop_column("ai_score")
    with op.batch_alter_table("billing_rules") as batch:
        batch.drop_column("deny_dispositions")
        batch.drop_column("min_ai_score")
    op.drop_table("phrase_rules")
    op.drop_index("ix_transcripts_started_at", "transcripts")
    op.drop_index("ix_transcripts_status", "transcripts")
    op.drop_table("transcripts")
