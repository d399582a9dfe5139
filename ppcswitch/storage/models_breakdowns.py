"""Daily totals of calls by sub-ID and by the caller's state (migration 0010_breakdowns).

One table, two kinds of rows: facet "sub_id" (publisher_id + value = the sub-ID, '' for none) and
facet "state" (publisher_id 0, value = the caller's two-letter state, '' when unknown). Each row sums
the calls started in one UTC day, kept in the settling transaction (ppcswitch.billing.breakdowns).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ppcswitch.storage.schema import Base, UTCDateTime


class BreakdownDaily(Base):
    __tablename__ = "breakdown_daily"
    day_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)  # 00:00 UTC
    facet: Mapped[str] = mapped_column(String(8), primary_key=True)  # sub_id | state
    publisher_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    value: Mapped[str] = mapped_column(String(64), primary_key=True)
    calls: Mapped[int] = mapped_column(BigInteger, default=0)
    connected: Mapped[int] = mapped_column(BigInteger, default=0)
    billable: Mapped[int] = mapped_column(BigInteger, default=0)  # buyer side, disputed calls no longer
    disputed: Mapped[int] = mapped_column(BigInteger, default=0)
    revenue_cents: Mapped[int] = mapped_column(BigInteger, default=0)  # the calls' revenue, disputes taken back
    payout_cents: Mapped[int] = mapped_column(BigInteger, default=0)  # the calls' payout, disputes taken back
