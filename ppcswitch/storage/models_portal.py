"""Partner portals (migration 0008_portal): invites, what each partner may see, buyers' disputes.

A partner user (web_users.role `publisher` or `buyer`) belongs to one publisher or
buyer (web_users.publisher_id / buyer_id). Operators invite them with a one-time link
whose token is stored only as a SHA-256 digest.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ppcswitch.storage.schema import Base, BigId, UTCDateTime, utcnow

CALLER_DISPLAY = ("full", "last4", "hidden")
DISPUTE_REASONS = {
    "not_a_customer": "Not a customer (wrong number, solicitor, robocall)",
    "out_of_area": "Caller outside the area bought",
    "duplicate": "Repeat caller already paid for",
    "poor_quality": "Poor audio or dropped call",
    "other": "Other (explain in the note)",
}
DISPUTE_STATES = ("pending", "accepted", "rejected")


class PartnerAccess(Base):
    """What the operator lets one partner see and do (no row: the defaults of the columns)."""

    __tablename__ = "portal_access"
    __table_args__ = (UniqueConstraint("party", "party_id", name="uq_portal_access_party"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    party: Mapped[str] = mapped_column(String(16))  # publisher | buyer
    party_id: Mapped[int] = mapped_column(Integer)
    caller_display: Mapped[str] = mapped_column(String(8), default="last4")  # one of CALLER_DISPLAY
    show_buyer_name: Mapped[bool] = mapped_column(Boolean, default=False)  # to a publisher
    allow_pause: Mapped[bool] = mapped_column(Boolean, default=True)  # a buyer pausing/resuming itself


class Invite(Base):
    """A one-time link for a partner user to set their password (token digest only)."""

    __tablename__ = "web_invites"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("web_users.id", ondelete="CASCADE"), index=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Dispute(Base):
    """A buyer's dispute of one billable call: pending until an operator accepts or rejects it."""

    __tablename__ = "portal_disputes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[int] = mapped_column(BigInteger, unique=True)  # one dispute per call
    linkedid: Mapped[str] = mapped_column(String(150))
    buyer_id: Mapped[int] = mapped_column(Integer, index=True)
    reason_code: Mapped[str] = mapped_column(String(32))  # a key of DISPUTE_REASONS
    note: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(16), default="pending")  # one of DISPUTE_STATES
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_by: Mapped[str] = mapped_column(String(64), default="")
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decision_note: Mapped[str] = mapped_column(Text, default="")
    reversed_cents: Mapped[int] = mapped_column(BigInteger, default=0)  # revenue reversed on acceptance


__all__ = ["PartnerAccess", "Invite", "Dispute", "BigId"]
