"""Routing rules, real-time bidding settings and each call's routing trace (migration 0002_routing)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ppcswitch.storage.schema import Base, BigId


class BuyerRules(Base):
    """A buyer's rules (campaign_id NULL) or one campaign link's overrides, as validated JSON."""

    __tablename__ = "buyer_rules"
    __table_args__ = (UniqueConstraint("buyer_id", "campaign_id", name="uq_buyer_rules_pair"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    buyer_id: Mapped[int] = mapped_column(ForeignKey("buyers.id", ondelete="CASCADE"), index=True)
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=True)
    rules: Mapped[str] = mapped_column(Text, default="{}")  # routing.rules.normalize() output


class BuyerRtb(Base):
    """A buyer reached by real-time bidding: where to ping and post."""

    __tablename__ = "buyer_rtb"
    buyer_id: Mapped[int] = mapped_column(ForeignKey("buyers.id", ondelete="CASCADE"), primary_key=True)
    ping_url: Mapped[str] = mapped_column(String(500))
    post_url: Mapped[str] = mapped_column(String(500), default="")
    timeout_ms: Mapped[int] = mapped_column(Integer, default=300)
    floor_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    share_caller: Mapped[bool] = mapped_column(Boolean, default=False)


class CampaignRouting(Base):
    __tablename__ = "campaign_routing"
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    zip_prompt: Mapped[bool] = mapped_column(Boolean, default=False)
    repeat_caller: Mapped[bool] = mapped_column(Boolean, default=False)
    whisper: Mapped[str] = mapped_column(String(100), default="")
    rtb_budget_ms: Mapped[int] = mapped_column(Integer, default=1000)


class CallRouting(Base):
    """The routing trace of one call: candidates, skip reasons, bids, the winner (JSON)."""

    __tablename__ = "call_routing"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    linkedid: Mapped[str] = mapped_column(String(150), unique=True)
    trace: Mapped[str] = mapped_column(Text, default="{}")


class RoutingLimits(Base):
    """Caps and budgets of a whole campaign (publisher_id NULL) or publisher (campaign_id NULL), as
    validated JSON (routing.rules LIMIT_KEYS; migration 0004_limits)."""

    __tablename__ = "routing_limits"
    __table_args__ = (UniqueConstraint("campaign_id", "publisher_id", name="uq_routing_limits_scope"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=True)
    publisher_id: Mapped[int | None] = mapped_column(ForeignKey("publishers.id", ondelete="CASCADE"), nullable=True)
    rules: Mapped[str] = mapped_column(Text, default="{}")
