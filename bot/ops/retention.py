"""The retention limits, applied on a schedule: stored turns older than `access.retention_days` (if set), and
inbox rows of answered messages older than `inbox.keep_days`, or than the retention limit if shorter (always:
the inbox would grow without end).

Each run that deletes turns leaves an audit row (actor `system:retention`), like the admin commands do. A
failed run is logged and retried at the next interval: the bot keeps answering either way.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from bot.config import AccessConfig, Config
from storage import AuditRecord, HistoryStore

logger = logging.getLogger(__name__)

ACTOR = "system:retention"


async def purge_expired(store: HistoryStore, settings: AccessConfig, now: datetime | None = None) -> int:
    """Delete the turns older than the retention limit; return how many. Does nothing when it is off."""
    if not settings.retention_days:
        return 0
    cutoff = (now or datetime.now(UTC)) - timedelta(days=settings.retention_days)
    audit = AuditRecord(ACTOR, "retention", f"before {cutoff.isoformat(timespec='seconds')}")
    return await store.delete_turns_before(cutoff, audit=audit)


async def prune_inbox(store: HistoryStore, config: Config, now: datetime | None = None) -> int:
    """Delete the inbox rows of answered (or given-up) messages older than `inbox.keep_days`, or than the
    retention limit if that is shorter (a row holds the message's text until it goes); return how many."""
    days = min(config.inbox.keep_days, config.access.retention_days or config.inbox.keep_days)
    return await store.delete_inbox_before((now or datetime.now(UTC)) - timedelta(days=days))


async def run_retention(store: HistoryStore, config: Config) -> None:
    """Apply the retention limits now and then every `access.retention_check_minutes`, until cancelled."""
    minutes = config.access.retention_check_minutes
    while True:
        try:
            deleted = await purge_expired(store, config.access)
            if deleted:
                days = config.access.retention_days
                logger.info("retention: deleted %d turns older than %g days", deleted, days)
            pruned = await prune_inbox(store, config)
            if pruned:
                logger.info("inbox: deleted %d rows of answered messages", pruned)
        except Exception:
            logger.exception("retention run failed; retrying in %g minutes", minutes)
        await asyncio.sleep(minutes * 60)
