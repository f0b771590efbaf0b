"""The database tables: one row per stored chat turn, the inbox of messages the bot took on (one row per
platform message, with what became of it), the platform event ids answered before the inbox existed, and
the audit log of destructive actions (who deleted what, when)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime, Index, Integer, String, Text, UniqueConstraint
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


class InboxRow(Base):
    """A message the bot decided to answer, written before anything else is done with it.

    Unique on (platform, platform_id): a re-delivered message finds its row and is not answered again.
    `state` moves from `received` to `answered` (with the ids of the reply messages actually posted),
    `failed` or `expired`; a row still `received` at start-up was never answered, and is answered then.
    """

    __tablename__ = "inbox"
    __table_args__ = (
        UniqueConstraint("platform", "platform_id", name="uq_inbox_platform_id"),
        Index("ix_inbox_state_id", "state", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(String(32))
    platform_id: Mapped[str] = mapped_column(String(255))
    """The platform's id of the message (Discord message id, Slack `<team>:<channel>:<ts>`); generated for
    the console."""
    channel_key: Mapped[str] = mapped_column(String(255))
    author_id: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    """The normalized message as JSON, and where to answer it (`route`), for answering it after a restart."""
    state: Mapped[str] = mapped_column(String(16))
    reply_ids: Mapped[str] = mapped_column(Text, default="")
    """Space-separated ids of the reply messages posted."""
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
