"""Fraud and call quality tables (migration 0002_fraud): lists, campaign settings, per-call signals, alerts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ppcswitch.storage.schema import Base, BigId, UTCDateTime, utcnow


class FraudListEntry(Base):
    """A caller number or prefix blocked or allowed on the whole network (campaign_id NULL) or one campaign."""

    __tablename__ = "fraud_list"
    __table_args__ = (UniqueConstraint("kind", "pattern", "campaign_id", name="uq_fraud_list_entry"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # block | allow
    pattern: Mapped[str] = mapped_column(String(20))  # E.164 prefix or 'anonymous'
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=True)
    note: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CampaignFraud(Base):
    """A campaign's fraud and quality settings (no row: all off)."""

    __tablename__ = "campaign_fraud"
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    challenge: Mapped[bool] = mapped_column(Boolean, default=False)  # press-1 before the buyer rings
    record: Mapped[bool] = mapped_column(Boolean, default=False)  # MixMonitor, stereo
    block_score: Mapped[int | None] = mapped_column(Integer, nullable=True)  # pre-routing score that refuses the call


class CallSignals(Base):
    """What fraud checks found on one call: its score, explanation and raw facts (talk time, attestation...)."""

    __tablename__ = "call_signals"
    __table_args__ = (Index("ix_call_signals_started_at", "started_at"),
                      Index("ix_call_signals_publisher_id", "publisher_id"))
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    linkedid: Mapped[str] = mapped_column(String(150), unique=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    caller: Mapped[str] = mapped_column(String(64), default="")
    publisher_id: Mapped[int | None] = mapped_column(Integer)
    campaign_id: Mapped[int | None] = mapped_column(Integer)
    buyer_id: Mapped[int | None] = mapped_column(Integer)
    connected: Mapped[bool] = mapped_column(Boolean, default=False)
    score: Mapped[int] = mapped_column(Integer, default=0)
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)  # score >= fraud.flag_score
    flags: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of signal names
    explanation: Mapped[str] = mapped_column(Text, default="[]")  # JSON [{"signal", "points", "detail"}]
    attestation: Mapped[str] = mapped_column(String(1), default="")  # A, B, C or '' (none)
    near_threshold: Mapped[bool] = mapped_column(Boolean, default=False)
    caller_talk_ms: Mapped[int | None] = mapped_column(Integer)  # None: talk detection not running
    buyer_talk_ms: Mapped[int | None] = mapped_column(Integer)
    challenge: Mapped[str] = mapped_column(String(8), default="")  # passed | failed | '' (not asked)
    recording: Mapped[str] = mapped_column(String(300), default="")  # file name in recording.directory


class FraudAlert(Base):
    """An alert raised (and what was done about it)."""

    __tablename__ = "fraud_alerts"
    __table_args__ = (Index("ix_fraud_alerts_at", "at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))  # publisher_flagged_rate | buyer_unanswered_rate
    subject_id: Mapped[int] = mapped_column(Integer)
    bad: Mapped[int] = mapped_column(Integer)
    total: Mapped[int] = mapped_column(Integer)
    threshold_permille: Mapped[int] = mapped_column(Integer)  # threshold x 1000 (no floats stored)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    acknowledged: Mapped[bool] = mapped_column(Boolean, default=False)
