"""Calls by sub-ID and by the caller's state: calls.caller_state (NULL for calls settled before:
their state was not recorded) and the daily totals table breakdown_daily, filled from the calls;
tracking_numbers.paused (a number can be paused and resumed, alone or in bulk).

Revision ID: 0010_breakdowns
Revises: 0009_cluster_reservations
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_breakdowns"
down_revision = "0009_cluster_reservations"
branch_labels = None
depends_on = None

COUNTS = ("calls", "connected", "billable", "disputed", "revenue_cents", "payout_cents")


def upgrade() -> None:
    op.add_column("calls", sa.Column("caller_state", sa.String(2), nullable=True))
    op.add_column("tracking_numbers", sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "breakdown_daily",
        sa.Column("day_start", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("facet", sa.String(8), primary_key=True),
        sa.Column("publisher_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("value", sa.String(64), primary_key=True),
        *(sa.Column(c, sa.BigInteger(), nullable=False) for c in COUNTS),
    )
    # Calls settled so far, summed as ppcswitch.billing.breakdowns keeps them (state: unknown).
    day = ("substr(c.started_at, 1, 10) || ' 00:00:00.000000'" if op.get_bind().dialect.name == "sqlite"
           else "date_trunc('day', c.started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'")
    sums = ("count(*), sum(CASE WHEN c.buyer_id IS NOT NULL AND c.connected_ms > 0 THEN 1 ELSE 0 END), "
            "sum(CASE WHEN c.billable AND r.id IS NULL THEN 1 ELSE 0 END), "
            "sum(CASE WHEN r.id IS NOT NULL THEN 1 ELSE 0 END), "
            "sum(c.revenue_cents + coalesce(r.amount_cents, 0)), sum(c.payout_cents + coalesce(p.amount_cents, 0))")
    joins = ("FROM calls c LEFT JOIN ledger_entries r ON r.call_id = c.id AND r.kind = 'dispute' AND "
             "r.account = 'receivable' LEFT JOIN ledger_entries p ON p.call_id = c.id AND p.kind = 'dispute' "
             "AND p.account = 'payable'")
    cols = "day_start, facet, publisher_id, value, " + ", ".join(COUNTS)
    op.execute(f"INSERT INTO breakdown_daily ({cols}) SELECT {day}, 'sub_id', coalesce(c.publisher_id, 0), "
               f"coalesce(c.sub_id, ''), {sums} {joins} GROUP BY 1, 3, 4")
    op.execute(f"INSERT INTO breakdown_daily ({cols}) SELECT {day}, 'state', 0, '', {sums} {joins} GROUP BY 1")


def downgrade() -> None:
    with op.batch_alter_table("tracking_numbers") as batch:
        batch.drop_column("paused")
    op.drop_table("breakdown_daily")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("caller_state")
