"""The database tables: one row per stored chat turn, the platform event ids already answered, and the audit
log of destructive actions (who deleted what, when)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class MessageRow(Base):
    """One turn of a conversation: what a user said or what the bot answered."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_channel_id", "channel_key", "id"),
        Index("ix_messages_author_id", "author_id"),  # `forget me` and `purge` find a user's turns
        Index("ix_messages_created_at", "created_at"),  # the retention limit finds old turns
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    channel_key: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(8))
    author_id: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ProcessedEventRow(Base):
    """A platform event already answered, so that a re-delivery (Slack retries) is not answered twice."""

    __tablename__ = "processed_events"

    event_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditRow(Base):
    """One destructive action: `reset`, `purge`, `forget me`, or the retention limit deleting old turns."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    """`<platform>:<user id>` of who asked, or `system:retention`."""
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(255))
    """What it applied to: a conversation key, a `<platform>:<user id>`, or a cutoff time."""
    detail: Mapped[str] = mapped_column(Text, default="")
