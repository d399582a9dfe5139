"""Recovery state (ppcswitch.recovery): one row per node, that controller's last heartbeat through the writer."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from ppcswitch.storage.schema import Base, UTCDateTime


class RecoveryState(Base):
    __tablename__ = "recovery_nodes"
    # cluster.node: '' on a single box; each controller of a cluster keeps its own row, since each
    # recovers its own Asterisk's CDR file.
    node: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Written through the single writer: every record submitted before it is stored.
    alive_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)  # that run's start: it saw no call before it
