"""Database tables. Money is integer cents (BigInteger), times are aware UTC datetimes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger, Boolean, CheckConstraint, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint,
)
from sqlalchemy import false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ppcswitch.storage.schema import Base, BigId, UTCDateTime, utcnow  # noqa: F401 (re-exported)


class Campaign(Base):
    __tablename__ = "campaigns"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Publisher(Base):
    __tablename__ = "publishers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    payout_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Buyer(Base):
    __tablename__ = "buyers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    destination: Mapped[str] = mapped_column(String(300))  # sip:user@host[:port] or pjsip:ENDPOINT
    ring_timeout: Mapped[int] = mapped_column(Integer, default=30)
    concurrency_cap: Mapped[int | None] = mapped_column(Integer, nullable=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    min_duration: Mapped[int] = mapped_column(Integer, default=60)
    revenue_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CampaignBuyer(Base):
    __tablename__ = "campaign_buyers"
    __table_args__ = (UniqueConstraint("campaign_id", "buyer_id", name="uq_campaign_buyers_pair"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    buyer_id: Mapped[int] = mapped_column(ForeignKey("buyers.id", ondelete="CASCADE"), index=True)
    priority: Mapped[int] = mapped_column(Integer, default=1)


class TrackingNumber(Base):
    __tablename__ = "tracking_numbers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)  # E.164
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    publisher_id: Mapped[int] = mapped_column(ForeignKey("publishers.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Ask the caller for a publisher code before routing (a shared number; migration 0002_publisher_codes).
    ask_publisher_code: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Paused: calls to the number are refused ("number_paused") until resumed (migration 0010_breakdowns).
    paused: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class ConfigVersion(Base):
    """One row; its counter is bumped by every configuration write, in the same transaction."""

    __tablename__ = "config_version"
    __table_args__ = (CheckConstraint("id = 1", name="ck_config_version_single_row"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)


class Call(Base):
    """One finished call (ppcswitch.calls.CallRecord).

    campaign/publisher/buyer ids carry no foreign keys on purpose: a call record
    must always be storable, even if its buyer was deleted meanwhile, and
    history must survive configuration changes.
    """

    __tablename__ = "calls"
    __table_args__ = (
        Index("ix_calls_started_at", "started_at"),
        Index("ix_calls_campaign_id", "campaign_id"),
        Index("ix_calls_publisher_id", "publisher_id"),
        Index("ix_calls_buyer_id", "buyer_id"),
        # The call log's "caller starts with" filter (migration 0002_web).
        Index("ix_calls_caller", "caller", postgresql_ops={"caller": "text_pattern_ops"}),
        Index("ix_calls_publisher_sub_id", "publisher_id", "sub_id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    linkedid: Mapped[str] = mapped_column(String(150), unique=True)  # Asterisk linkedid (AST_MAX_UNIQUEID)
    tracking_number: Mapped[str] = mapped_column(String)
    caller: Mapped[str] = mapped_column(String)
    caller_valid: Mapped[bool] = mapped_column(Boolean)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String)
    publisher_id: Mapped[int | None] = mapped_column(Integer)
    campaign_id: Mapped[int | None] = mapped_column(Integer)
    buyer_id: Mapped[int | None] = mapped_column(Integer)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    connected_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    hangup_cause: Mapped[int | None] = mapped_column(Integer)
    hangup_cause_text: Mapped[str] = mapped_column(String, default="")
    reject_reason: Mapped[str] = mapped_column(String, default="")
    billable: Mapped[bool] = mapped_column(Boolean, default=False)
    billing_reasons: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of strings
    revenue_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    payout_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    quality_score: Mapped[int | None] = mapped_column(Integer, nullable=True)  # fraud/quality score (0002_billing)
    # Attribution (0002_attribution): the visitor's / publisher's traffic source; attribution is JSON.
    sub_id: Mapped[str] = mapped_column(String(64), default="", server_default="")
    # The caller's state as routing saw it (ZIP keyed in, else area code); '' unknown, NULL: settled
    # before 0010_breakdowns recorded it.
    caller_state: Mapped[str | None] = mapped_column(String(2), nullable=True)
    click_id: Mapped[str] = mapped_column(String(128), default="", server_default="")
    attribution: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
    attempts: Mapped[list[CallAttempt]] = relationship(
        order_by="CallAttempt.seq", lazy="raise", cascade="all, delete-orphan", passive_deletes=True)


class CallAttempt(Base):
    __tablename__ = "call_attempts"
    __table_args__ = (UniqueConstraint("call_id", "seq", name="uq_call_attempts_call_seq"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    call_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("calls.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    buyer_id: Mapped[int | None] = mapped_column(Integer)
    dial_status: Mapped[str] = mapped_column(String, default="")
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# Feature tables live in their own modules; importing them here puts them in Base.metadata.
from ppcswitch.storage import models_routing  # noqa: E402,F401
from ppcswitch.storage import models_billing  # noqa: E402,F401
from ppcswitch.storage import models_attribution  # noqa: E402,F401
from ppcswitch.storage import models_fraud  # noqa: E402,F401
from ppcswitch.storage import models_web  # noqa: E402,F401
from ppcswitch.storage import models_recovery  # noqa: E402,F401
from ppcswitch.storage import models_codes  # noqa: E402,F401
from ppcswitch.storage import models_intelligence  # noqa: E402,F401
from ppcswitch.storage import models_portal  # noqa: E402,F401
from ppcswitch.storage import models_cluster  # noqa: E402,F401
from ppcswitch.storage import models_breakdowns  # noqa: E402,F401
