"""Billing: rules, decisions, immutable ledger, closed periods, 15-minute rollups; calls.quality_score.

Revision ID: 0002_billing
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_billing"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("calls", sa.Column("quality_score", sa.Integer(), nullable=True))
    op.create_table(
        "billing_rules",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("side", sa.String(10), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("party_id", sa.Integer(), nullable=False),
        sa.Column("min_duration", sa.Integer()),
        sa.Column("unique_days", sa.Integer()),
        sa.Column("unique_counts_unbillable", sa.Boolean()),
        sa.Column("require_geo", sa.Boolean()),
        sa.Column("quality_threshold", sa.Integer()),
        sa.Column("mode", sa.String(10)),
        sa.Column("flat_cents", sa.BigInteger()),
        sa.Column("tiers", sa.Text()),
        sa.Column("percent_bp", sa.Integer()),
        sa.Column("only_when_buyer_pays", sa.Boolean()),
        sa.Column("updated_at", Time, nullable=False),
        sa.UniqueConstraint("side", "campaign_id", "party_id", name="uq_billing_rules_scope"),
    )
    op.create_table(
        "billing_decisions",
        sa.Column("call_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("linkedid", sa.String(150), nullable=False, unique=True),
        sa.Column("started_at", Time, nullable=False),
        sa.Column("caller", sa.String(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("buyer_id", sa.Integer(), nullable=False),
        sa.Column("publisher_id", sa.Integer(), nullable=False),
        sa.Column("answered", sa.Boolean(), nullable=False),
        sa.Column("connected_ms", sa.BigInteger(), nullable=False),
        sa.Column("geo_match", sa.Boolean()),
        sa.Column("quality_score", sa.Integer()),
        sa.Column("revenue_override_cents", sa.BigInteger()),
        sa.Column("min_duration_override", sa.Integer()),
        sa.Column("rejected_reason", sa.String(), nullable=False),
        sa.Column("revenue_billable", sa.Boolean(), nullable=False),
        sa.Column("payout_billable", sa.Boolean(), nullable=False),
        sa.Column("revenue_cents", sa.BigInteger(), nullable=False),
        sa.Column("payout_cents", sa.BigInteger(), nullable=False),
        sa.Column("revenue_reasons", sa.Text(), nullable=False),
        sa.Column("payout_reasons", sa.Text(), nullable=False),
        sa.Column("payout_depends_on_buyer", sa.Boolean(), nullable=False),
        sa.Column("disputed", sa.Boolean(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
    )
    op.create_index("ix_billing_decisions_buyer_caller", "billing_decisions", ["caller", "buyer_id", "started_at"])
    op.create_index("ix_billing_decisions_publisher_caller", "billing_decisions",
                    ["caller", "publisher_id", "started_at"])
    op.create_index("ix_billing_decisions_started_at", "billing_decisions", ["started_at"])
    op.create_table(
        "ledger_entries",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("key", sa.String(200), nullable=False, unique=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("account", sa.String(20), nullable=False),
        sa.Column("call_id", sa.BigInteger()),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("buyer_id", sa.Integer(), nullable=False),
        sa.Column("publisher_id", sa.Integer(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("booked_at", Time, nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("user", sa.String(100), nullable=False),
    )
    op.create_index("ix_ledger_entries_booked_at", "ledger_entries", ["booked_at"])
    op.create_index("ix_ledger_entries_call_id", "ledger_entries", ["call_id"])
    op.create_table(
        "closed_periods",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("start_at", Time, nullable=False),
        sa.Column("end_at", Time, nullable=False),
        sa.Column("closed_at", Time, nullable=False),
        sa.Column("closed_by", sa.String(100), nullable=False),
    )
    op.create_table(
        "billing_rollups",
        sa.Column("bucket_start", Time, primary_key=True),
        sa.Column("campaign_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("buyer_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("publisher_id", sa.Integer(), primary_key=True, autoincrement=False),
        *(sa.Column(c, sa.BigInteger(), nullable=False) for c in (
            "calls", "connected", "billable", "paid", "connected_ms", "receivable_cents", "payable_cents")),
    )
    # The ledger is append-only: the database itself refuses edits and deletions.
    if op.get_bind().dialect.name == "sqlite":
        for what in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER ledger_entries_no_{what.lower()} BEFORE {what} ON ledger_entries "
                       "BEGIN SELECT RAISE(ABORT, 'ledger entries are immutable: book a correction'); END")
    else:
        op.execute("CREATE FUNCTION ledger_entries_immutable() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                   "RAISE EXCEPTION 'ledger entries are immutable: book a correction'; END $$")
        op.execute("CREATE TRIGGER ledger_entries_immutable BEFORE UPDATE OR DELETE ON ledger_entries "
                   "FOR EACH ROW EXECUTE FUNCTION ledger_entries_immutable()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP TRIGGER IF EXISTS ledger_entries_immutable ON ledger_entries")
        op.execute("DROP FUNCTION IF EXISTS ledger_entries_immutable()")
    for table in ("billing_rollups", "closed_periods", "ledger_entries", "billing_decisions", "billing_rules"):
        op.drop_table(table)
    op.drop_column("calls", "quality_score")
