"""Tables of the admin panel and API: users, API tokens, login sessions, audit log.

Secrets are never stored: passwords as scrypt hashes, session ids and API
tokens as SHA-256 digests (they are long random strings, so a plain digest is
enough and keeps each request's lookup to one indexed read).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ppcswitch.storage.schema import Base, BigId, UTCDateTime, utcnow

ROLES = ("admin", "finance", "noc")  # staff (operator) roles
# Partner roles (ppcswitch.web.portal): a user of one publisher or one buyer, invited by an operator.
PARTNER_ROLES = ("publisher", "buyer")


class User(Base):
    __tablename__ = "web_users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    role: Mapped[str] = mapped_column(String(16))  # one of ROLES or PARTNER_ROLES
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The user's own time zone for the panel (IANA name); None: the account's.
    timezone: Mapped[str | None] = mapped_column(String(64), nullable=True, default=None)
    # A partner user's publisher or buyer (migration 0008_portal); None for staff.
    publisher_id: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    buyer_id: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)


class ApiToken(Base):
    __tablename__ = "web_api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("web_users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, to tell tokens apart in lists
    role: Mapped[str] = mapped_column(String(16))  # the scope: never more than the owner's role
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebSession(Base):
    __tablename__ = "web_sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("web_users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditEntry(Base):
    """Who changed what: one row per successful change from the panel, the API or `ppcswitch user`."""

    __tablename__ = "web_audit_log"
    __table_args__ = (Index("ix_web_audit_log_at", "at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    username: Mapped[str] = mapped_column(String(64))
    via: Mapped[str] = mapped_column(String(16))  # panel, api, cli
    action: Mapped[str] = mapped_column(String(64))  # e.g. buyer.update
    target: Mapped[str] = mapped_column(String(200), default="")
    detail: Mapped[str] = mapped_column(Text, default="")  # JSON of the submitted values (no secrets)


class Setting(Base):
    """Account-wide settings the panel changes (e.g. `timezone`), one row per key."""

    __tablename__ = "web_settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(64), default="")
