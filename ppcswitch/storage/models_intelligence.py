"""Call intelligence tables: one transcript row per recorded call (also its place in the
transcription queue), and the phrase rules that set dispositions (migration 0005_intelligence).

Like calls, rows carry campaign/publisher ids without foreign keys: history survives configuration changes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ppcswitch.storage.schema import Base, BigId, UTCDateTime, utcnow

PENDING, RUNNING, DONE, FAILED, SKIPPED = "pending", "running", "done", "failed", "skipped"


class Transcript(Base):
    """A recorded call's transcript. Born `pending` when the call ends (the durable queue: a restart
    loses nothing), `done` with the text, dispositions and AI score, or `failed` / `skipped` with why."""

    __tablename__ = "transcripts"
    __table_args__ = (
        Index("ix_transcripts_status", "status", "next_try_at"),
        Index("ix_transcripts_started_at", "started_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    linkedid: Mapped[str] = mapped_column(String(150), unique=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    campaign_id: Mapped[int | None] = mapped_column(Integer)
    publisher_id: Mapped[int | None] = mapped_column(Integer)
    recording: Mapped[str] = mapped_column(String(300), default="")  # the mixed file's name; legs beside it
    status: Mapped[str] = mapped_column(String(8), default=PENDING)
    enqueued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_try_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(String(300), default="")
    engine: Mapped[str] = mapped_column(String(100), default="")
    transcribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # JSON [{"side": "caller"|"buyer", "start": s, "end": s, "text": "..."}], redacted, in time order
    segments: Mapped[str] = mapped_column(Text, default="[]")
    text: Mapped[str] = mapped_column(Text, default="")  # every line, "caller: ..." / "buyer: ...", for search
    redactions: Mapped[int] = mapped_column(Integer, default=0)
    audio_ms: Mapped[int] = mapped_column(Integer, default=0)  # both legs
    cpu_ms: Mapped[int] = mapped_column(Integer, default=0)
    caller_speech_ms: Mapped[int] = mapped_column(Integer, default=0)
    buyer_speech_ms: Mapped[int] = mapped_column(Integer, default=0)
    dispositions: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of names
    ai_score: Mapped[int | None] = mapped_column(Integer)  # 0-100, higher is a better lead
    score_reasons: Mapped[str] = mapped_column(Text, default="[]")  # JSON [{"reason", "points", "detail"}]


class PhraseRule(Base):
    """A phrase that sets a disposition when said on a call of the campaign (NULL: every campaign).
    Shipped defaults live in ppcswitch.intelligence.rules; rows here add to them (or, with
    enabled = 0 on a default's disposition and phrase, switch one off for the campaign)."""

    __tablename__ = "phrase_rules"
    __table_args__ = (UniqueConstraint("campaign_id", "disposition", "phrase", "side", name="uq_phrase_rule"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int | None] = mapped_column(Integer)
    disposition: Mapped[str] = mapped_column(String(40))
    phrase: Mapped[str] = mapped_column(String(200))
    side: Mapped[str] = mapped_column(String(8), default="any")  # caller | buyer | any
    enabled: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
