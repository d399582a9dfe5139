"""Shared reservations of a cluster (ppcswitch.routing.shared): holds of calls in flight of every
controller, counts of the calls they settled, and which calls were counted (once each)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ppcswitch.storage.schema import Base, UTCDateTime


class ClusterHold(Base):
    __tablename__ = "cluster_holds"
    __table_args__ = (Index("ix_cluster_holds_linkedid", "linkedid"), Index("ix_cluster_holds_node", "node"))
    scope: Mapped[str] = mapped_column(String(64), primary_key=True)  # routing.shared.scope_text
    linkedid: Mapped[str] = mapped_column(String(150), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    node: Mapped[str] = mapped_column(String(64))  # cluster.node of the controller that holds it
    money: Mapped[int] = mapped_column(BigInteger)  # cents it may still cost there
    live: Mapped[bool] = mapped_column(Boolean)  # may still connect
    lease_until: Mapped[datetime] = mapped_column(UTCDateTime)  # renewed by its controller while it lives


class ClusterCount(Base):
    __tablename__ = "cluster_counts"
    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    family: Mapped[str] = mapped_column(String(1), primary_key=True)  # '' connected, r routed, b billable, $ cents
    period: Mapped[str] = mapped_column(String(16), primary_key=True)  # h<hour key>, d<day>, m<month>, t
    n: Mapped[int] = mapped_column(BigInteger)


class ClusterSettled(Base):
    __tablename__ = "cluster_settled"
    linkedid: Mapped[str] = mapped_column(String(150), primary_key=True)
    node: Mapped[str] = mapped_column(String(64))


class ClusterCall(Base):
    """A call in flight on some node, until it is settled: a caller's calls settle in the order they
    started across the cluster (routing.shared.SharedReservations.settle_after)."""

    __tablename__ = "cluster_calls"
    __table_args__ = (Index("ix_cluster_calls_caller", "caller"),)
    linkedid: Mapped[str] = mapped_column(String(150), primary_key=True)
    node: Mapped[str] = mapped_column(String(64))
    caller: Mapped[str] = mapped_column(String(64))
    arrived: Mapped[float] = mapped_column(Float)  # epoch the controller routed it
    started: Mapped[float | None] = mapped_column(Float, nullable=True)  # epoch of its record's start, once it ended
    lease_until: Mapped[datetime] = mapped_column(UTCDateTime)


class ClusterDelivered(Base):
    """When any controller last connected a caller to a buyer with a routing duplicate rule."""

    __tablename__ = "cluster_delivered"
    scope: Mapped[str] = mapped_column(String(64), primary_key=True)  # routing.shared.caller_scope
    at: Mapped[datetime] = mapped_column(UTCDateTime)
