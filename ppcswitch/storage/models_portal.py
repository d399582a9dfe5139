"""Partner portals (migrations 0008_portal, 0011_portal_tasks): invites, what each partner may see and
do, what each campaign shows partners, buyers' disputes, publishers' number requests and the
operator's spare numbers they are filled from.

A partner user (web_users.role `publisher` or `buyer`) belongs to one publisher or
buyer (web_users.publisher_id / buyer_id). Operators invite them with a one-time link
whose token is stored only as a SHA-256 digest.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint, false
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
    # 0011_portal_tasks: a buyer hears its calls' recordings; a publisher asks for numbers (up to
    # number_limit held and asked for; filled from the spare numbers at once when auto_fill_numbers);
    # a buyer edits its own hours (within hours_bound, '' = any) and caps (each at most its max_*).
    recordings: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    number_limit: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    auto_fill_numbers: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    edit_rules: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    hours_bound: Mapped[str] = mapped_column(String(500), default="", server_default="")
    max_concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_cap_hourly: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_cap_daily: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_cap_monthly: Mapped[int | None] = mapped_column(Integer, nullable=True)


class CampaignAccess(Base):
    """What partners see of one campaign's calls; a value set here (not NULL) wins over the
    partner's own setting for that campaign's calls."""

    __tablename__ = "portal_campaign_access"
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    caller_display: Mapped[str | None] = mapped_column(String(8), nullable=True)
    show_buyer_name: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    recordings: Mapped[bool | None] = mapped_column(Boolean, nullable=True)


NUMBER_REQUEST_STATES = ("pending", "filled", "rejected")


class NumberRequest(Base):
    """A publisher asks for `quantity` more tracking numbers in an area code on one of its campaigns."""

    __tablename__ = "portal_number_requests"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    publisher_id: Mapped[int] = mapped_column(Integer, index=True)
    campaign_id: Mapped[int] = mapped_column(Integer)
    area_code: Mapped[str] = mapped_column(String(3))
    quantity: Mapped[int] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(16), default="pending")  # one of NUMBER_REQUEST_STATES
    numbers: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of the E.164 numbers given
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_by: Mapped[str] = mapped_column(String(64), default="")  # "auto" when filled at once
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decision_note: Mapped[str] = mapped_column(Text, default="")


class SpareNumber(Base):
    """A number the operator holds for publishers' requests (not a tracking number until given)."""

    __tablename__ = "portal_spare_numbers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)  # E.164
    added_by: Mapped[str] = mapped_column(String(64))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


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


__all__ = ["PartnerAccess", "CampaignAccess", "Invite", "Dispute", "NumberRequest", "SpareNumber", "BigId"]


# --- what a partner sees: shared by the portals and by notifications a partner set up itself -----

def mask_caller(caller: str, display: str) -> str:
    """A caller number as shown to a partner: in full, '•••' + its last 4 digits, or '' (hidden)."""
    if display == "full":
        return caller or ""
    if display == "hidden" or not caller:
        return ""
    digits = [c for c in caller if c.isdigit()]
    return "•••" + "".join(digits[-4:]) if len(digits) > 4 else "•••"


def partner_view_sync(conn, kind: str, party_id: int, campaign_id: int | None) -> tuple[str, bool]:
    """(caller display, buyer name shown) for one partner on one campaign's calls (sync Connection):
    the campaign's setting where it has one, else the partner's, else the defaults (last 4, hidden)."""
    from sqlalchemy import select

    row = conn.execute(select(PartnerAccess.caller_display, PartnerAccess.show_buyer_name).where(
        PartnerAccess.party == kind, PartnerAccess.party_id == party_id)).first()
    display, show = (row[0], bool(row[1])) if row is not None else ("last4", False)
    if campaign_id:
        over = conn.execute(select(CampaignAccess.caller_display, CampaignAccess.show_buyer_name).where(
            CampaignAccess.campaign_id == campaign_id)).first()
        if over is not None:
            display = over[0] if over[0] is not None else display
            show = bool(over[1]) if over[1] is not None else show
    return display, show


def partner_payload_sync(conn, body: dict, kind: str, party_id: int, campaign_id: int | None) -> dict:
    """A notification body for a target the partner saved itself: the caller as the operator lets it
    see callers, and no buyer id for a publisher that is not shown its buyers."""
    display, show = partner_view_sync(conn, kind, party_id, campaign_id)
    out = dict(body, caller=mask_caller(str(body.get("caller") or ""), display))
    if kind == "publisher" and not show:
        out["buyer_id"] = None
    return out
