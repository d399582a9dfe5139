"""Billing tables: conversion rules, per-call decisions, the ledger, closed periods, rollups.

Ids of campaigns, buyers and publishers carry no foreign keys (like calls):
money history must survive configuration changes. In rules and rollups 0
stands for "none/any", so the unique keys work (NULLs never conflict).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ppcswitch.storage.schema import Base, BigId, UTCDateTime, utcnow


class BillingRule(Base):
    """Overrides of one side's SideRule; NULL fields inherit from the less specific rule.

    Precedence, least to most specific: built-in defaults (buyer's min_duration and
    revenue, publisher's payout), campaign rule (party_id 0), party rule (campaign_id 0),
    campaign + party rule. party_id is a buyer id on the revenue side, a publisher id on
    the payout side.
    """

    __tablename__ = "billing_rules"
    __table_args__ = (UniqueConstraint("side", "campaign_id", "party_id", name="uq_billing_rules_scope"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    side: Mapped[str] = mapped_column(String(10))  # revenue | payout
    campaign_id: Mapped[int] = mapped_column(Integer, default=0)
    party_id: Mapped[int] = mapped_column(Integer, default=0)
    min_duration: Mapped[int | None] = mapped_column(Integer)
    unique_days: Mapped[int | None] = mapped_column(Integer)
    unique_window: Mapped[int | None] = mapped_column(Integer)  # seconds (0004_limits)
    unique_counts_unbillable: Mapped[bool | None] = mapped_column(Boolean)
    require_geo: Mapped[bool | None] = mapped_column(Boolean)
    quality_threshold: Mapped[int | None] = mapped_column(Integer)
    mode: Mapped[str | None] = mapped_column(String(10))
    flat_cents: Mapped[int | None] = mapped_column(BigInteger)
    tiers: Mapped[str | None] = mapped_column(Text)  # JSON [[min_seconds, cents], ...]
    percent_bp: Mapped[int | None] = mapped_column(Integer)
    only_when_buyer_pays: Mapped[bool | None] = mapped_column(Boolean)
    min_ai_score: Mapped[int | None] = mapped_column(Integer)  # 0005_intelligence
    deny_dispositions: Mapped[str | None] = mapped_column(Text)  # JSON list of disposition names
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BillingDecision(Base):
    """The current billing decision of one call (re-rating replaces it; the ledger keeps history)."""

    __tablename__ = "billing_decisions"
    __table_args__ = (
        Index("ix_billing_decisions_buyer_caller", "caller", "buyer_id", "started_at"),
        Index("ix_billing_decisions_publisher_caller", "caller", "publisher_id", "started_at"),
        Index("ix_billing_decisions_started_at", "started_at"),
    )
    call_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # calls.id
    linkedid: Mapped[str] = mapped_column(String(150), unique=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    caller: Mapped[str] = mapped_column(String)
    campaign_id: Mapped[int] = mapped_column(Integer, default=0)
    buyer_id: Mapped[int] = mapped_column(Integer, default=0)
    publisher_id: Mapped[int] = mapped_column(Integer, default=0)
    answered: Mapped[bool] = mapped_column(Boolean, default=False)
    connected_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    geo_match: Mapped[bool | None] = mapped_column(Boolean)
    quality_score: Mapped[int | None] = mapped_column(Integer)
    ai_score: Mapped[int | None] = mapped_column(Integer)  # from the transcript (0005_intelligence); None: none yet
    dispositions: Mapped[str | None] = mapped_column(Text)  # JSON list, from the transcript; None: none yet
    revenue_override_cents: Mapped[int | None] = mapped_column(BigInteger)
    min_duration_override: Mapped[int | None] = mapped_column(Integer)
    rejected_reason: Mapped[str] = mapped_column(String, default="")
    revenue_billable: Mapped[bool] = mapped_column(Boolean, default=False)
    payout_billable: Mapped[bool] = mapped_column(Boolean, default=False)
    revenue_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    payout_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    revenue_reasons: Mapped[str] = mapped_column(Text, default="[]")  # JSON list
    payout_reasons: Mapped[str] = mapped_column(Text, default="[]")  # JSON list
    payout_depends_on_buyer: Mapped[bool] = mapped_column(Boolean, default=True)
    disputed: Mapped[bool] = mapped_column(Boolean, default=False)
    revision: Mapped[int] = mapped_column(Integer, default=1)  # bumped by each applied re-rating


class LedgerEntry(Base):
    """One immutable money movement. Receivable: the buyer owes us; payable: we owe the publisher.

    Never updated or deleted (database triggers refuse it); corrections are new entries.
    `key` makes each entry unique (e.g. "call:<linkedid>:receivable"), so a replayed call
    cannot book twice.
    """

    __tablename__ = "ledger_entries"
    __table_args__ = (
        Index("ix_ledger_entries_booked_at", "booked_at"),
        Index("ix_ledger_entries_call_id", "call_id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(20))  # call | dispute | adjustment | rerate
    account: Mapped[str] = mapped_column(String(20))  # receivable | payable
    call_id: Mapped[int | None] = mapped_column(BigInteger)
    campaign_id: Mapped[int] = mapped_column(Integer, default=0)
    buyer_id: Mapped[int] = mapped_column(Integer, default=0)
    publisher_id: Mapped[int] = mapped_column(Integer, default=0)
    amount_cents: Mapped[int] = mapped_column(BigInteger)  # signed: corrections are negative
    booked_at: Mapped[datetime] = mapped_column(UTCDateTime)  # the time the amount counts in reports
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    reason: Mapped[str] = mapped_column(Text, default="")
    user: Mapped[str] = mapped_column(String(100), default="")


class ClosedPeriod(Base):
    """[start_at, end_at) is closed: no ledger entry may be booked in it."""

    __tablename__ = "closed_periods"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    start_at: Mapped[datetime] = mapped_column(UTCDateTime)
    end_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_by: Mapped[str] = mapped_column(String(100))


class _Totals:
    """The sums a report needs, per (time slot, campaign, buyer, publisher)."""

    campaign_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    buyer_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    publisher_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    calls: Mapped[int] = mapped_column(BigInteger, default=0)
    connected: Mapped[int] = mapped_column(BigInteger, default=0)
    billable: Mapped[int] = mapped_column(BigInteger, default=0)  # buyer side billable
    paid: Mapped[int] = mapped_column(BigInteger, default=0)  # publisher side billable
    connected_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    receivable_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    payable_cents: Mapped[int] = mapped_column(BigInteger, default=0)


class BillingRollup(_Totals, Base):
    """Totals per 15-minute bucket (every real time-zone offset is a multiple of 15 min), kept
    up to date in the same transaction as the calls and ledger entries they sum."""

    __tablename__ = "billing_rollups"
    bucket_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)


class BillingDaily(_Totals, Base):
    """The same totals per UTC day: a report sums whole UTC days here and only the partial days
    at its edges (a local day in New York or Kolkata) from the 15-minute rollups."""

    __tablename__ = "billing_daily"
    day_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)  # 00:00 UTC
