"""Recovery state (ppcswitch.recovery): one row, the controller's last heartbeat through the writer."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer
from sqlalchemy.orm import Mapped, mapped_column

from ppcswitch.storage.models import Base, UTCDateTime


class RecoveryState(Base):
    __tablename__ = "recovery_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    # Written through the single writer: every record submitted before it is stored.
    alive_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)  # that run's start: it saw no call before it
