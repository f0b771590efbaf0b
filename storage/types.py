"""The storage interface the rest of the bot sees: turn and audit types and the `HistoryStore` protocol.

It imports no database driver, so the core can depend on it; `storage.history_store` implements it with
SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class Role(StrEnum):
    USER = "user"
    BOT = "bot"


@dataclass(frozen=True, slots=True)
class NewTurn:
    role: Role
    author_id: str
    text: str


@dataclass(frozen=True, slots=True)
class StoredTurn:
    role: Role
    author_id: str
    text: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """Who did what to which data; stored with the deletion it describes, in the same transaction (or alone,
    `record_audit`, for an event that deletes nothing)."""

    actor: str
    action: str
    target: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: datetime
    actor: str
    action: str
    target: str
    detail: str


class InboxState(StrEnum):
    RECEIVED = "received"  # taken on, not answered yet
    ANSWERED = "answered"  # a reply (or a notice) was posted
    FAILED = "failed"  # nothing could be posted, or no reply could be generated
    EXPIRED = "expired"  # still unanswered at a start long after it arrived: too late to answer


@dataclass(frozen=True, slots=True)
class InboxEntry:
    """A message in the inbox: `message` is the adapter's JSON of the message and of where to answer it."""

    id: int
    platform: str
    platform_id: str
    channel_key: str
    author_id: str
    message: str
    state: InboxState
    received_at: datetime
    reply_ids: tuple[str, ...] = ()


class HistoryStore(Protocol):
    """What the engine needs from persistence, and nothing more."""

    async def recent_turns(self, channel_key: str, limit: int) -> list[StoredTurn]:
        """The channel's last `limit` turns, oldest first."""

    async def append_turns(self, channel_key: str, turns: Sequence[NewTurn]) -> None:
        """Store `turns` in one transaction: all of them or none."""

    async def reset_channel(self, channel_key: str, audit: AuditRecord | None = None) -> int:
        """Delete the channel's history (and record `audit`); return how many turns were deleted. What people
        wrote is blanked in the channel's answered inbox rows too."""

    async def delete_user_turns(
        self, platform: str, author_id: str, audit: AuditRecord | None = None, within: str | None = None
    ) -> int:
        """Delete a user's turns in every `platform` conversation, and the bot's replies to them.

        `within`, a conversation-key prefix (`discord:<guild>`), limits it to the conversations under that
        prefix, whole `:`-separated parts only; None means the whole platform. What the user wrote is blanked
        in their answered inbox rows there too."""

    async def delete_turns_before(self, cutoff: datetime, audit: AuditRecord | None = None) -> int:
        """Delete every turn stored before `cutoff`; `audit` is recorded only if something was deleted."""

    async def delete_inbox_before(self, cutoff: datetime) -> int:
        """Delete the inbox rows received before `cutoff` that are answered, failed or expired; return how
        many."""

    async def record_audit(self, audit: AuditRecord) -> None:
        """Add one audit log entry on its own (an event that deletes nothing, such as a filtered reply)."""

    async def audit_entries(self, limit: int = 100) -> list[AuditEntry]:
        """The latest audit log entries, newest first."""

    async def count_turns(self, channel_key: str) -> int: ...

    async def total_turns(self) -> int:
        """Stored turns in every channel (the operator's `dialobot_history_rows` metric)."""

    async def claim_event(self, event_key: str) -> bool:
        """Record a platform event id; False if it was already recorded (a re-delivery)."""

    async def check(self) -> None:
        """The health probe: raise, with a one-line reason, unless the database can be read and written."""

    async def receive(
        self, platform: str, platform_id: str, channel_key: str, author_id: str, message: str
    ) -> int | None:
        """Write a message to the inbox as `received`; its inbox id, or None if that platform message is
        there already (a re-delivery)."""

    async def finish(
        self,
        inbox_id: int,
        state: InboxState,
        reply_ids: Sequence[str] = (),
        channel_key: str = "",
        turns: Sequence[NewTurn] = (),
    ) -> None:
        """Mark an inbox message answered, failed or expired, and store `turns` under `channel_key`, all in
        one transaction: history and the inbox never disagree about whether it was answered."""

    async def unanswered(self, platform: str) -> list[InboxEntry]:
        """The platform's inbox messages still `received`, oldest first."""

    async def inbox_entries(self, limit: int = 100) -> list[InboxEntry]:
        """The latest inbox messages, newest first."""

    async def received_since(self, platform: str, since: datetime) -> list[InboxEntry]:
        """The platform's inbox messages received at or after `since`, in any state, oldest first."""

    async def close(self) -> None: ...
