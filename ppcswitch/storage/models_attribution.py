"""Attribution tables (migration 0002_attribution): number pools, postback targets, the postback outbox."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from ppcswitch.storage.schema import Base, BigId, UTCDateTime, utcnow


class NumberPool(Base):
    """Numbers of one campaign/publisher leased to visitors for per-visitor attribution."""

    __tablename__ = "number_pools"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    publisher_id: Mapped[int] = mapped_column(ForeignKey("publishers.id", ondelete="CASCADE"))
    public_key: Mapped[str] = mapped_column(String(64), unique=True)  # the landing page's key (public)
    lease_seconds: Mapped[int] = mapped_column(Integer)
    shortages: Mapped[int] = mapped_column(BigInteger, default=0)  # leases that had to reuse a live one
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PoolNumber(Base):
    __tablename__ = "pool_numbers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("number_pools.id", ondelete="CASCADE"), index=True)
    tracking_number_id: Mapped[int] = mapped_column(ForeignKey("tracking_numbers.id", ondelete="CASCADE"),
                                                    unique=True)


class PostbackTarget(Base):
    """A publisher's postback URL template or a buyer's webhook, with its HMAC secret."""

    __tablename__ = "postback_targets"
    __table_args__ = (UniqueConstraint("kind", "owner_id", name="uq_postback_targets_owner"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # publisher | buyer
    owner_id: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(200))
    # Saved by the publisher from its portal (0011_portal_tasks): its notifications then show the
    # caller and the buyer only as the operator lets that publisher see them.
    partner_managed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class PostbackOutbox(Base):
    """One notification to deliver; written in the same transaction as the call's billing decision."""

    __tablename__ = "postback_outbox"
    __table_args__ = (UniqueConstraint("linkedid", "event", "kind", "owner_id", name="uq_postback_outbox_once"),
                      Index("ix_postback_outbox_due", "status", "next_attempt_at"))
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    linkedid: Mapped[str] = mapped_column(String(150), index=True)
    event: Mapped[str] = mapped_column(String(32))  # billed | reversed
    kind: Mapped[str] = mapped_column(String(16))
    owner_id: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(String(4000))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PostbackAttempt(Base):
    """The delivery log: one row per HTTP attempt."""

    __tablename__ = "postback_attempts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    outbox_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("postback_outbox.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str] = mapped_column(String(300), default="")
    ms: Mapped[int] = mapped_column(Integer, default=0)
