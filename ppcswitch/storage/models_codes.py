"""IVR publisher codes (migration 0002_publisher_codes).

A caller at a tracking number that asks for a publisher code
(tracking_numbers.ask_publisher_code) keys one of these: the call is then that
publisher's (and, for a sub-ID code, that sub-ID's).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ppcswitch.storage.schema import Base, UTCDateTime, utcnow


class PublisherCode(Base):
    __tablename__ = "publisher_codes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(8), unique=True)  # 1 to 8 digits, network-wide
    publisher_id: Mapped[int] = mapped_column(ForeignKey("publishers.id", ondelete="CASCADE"), index=True)
    sub_id: Mapped[str] = mapped_column(String(64), default="", server_default="")  # '' : a publisher code
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
