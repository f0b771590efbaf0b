"""The retention limit: stored turns older than `access.retention_days` are deleted on a schedule.

Each run that deletes something leaves an audit row (actor `system:retention`), like the admin commands do.
A failed run is logged and retried at the next interval: the bot keeps answering either way.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from bot.config import AccessConfig
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


async def run_retention(store: HistoryStore, settings: AccessConfig) -> None:
    """Apply the retention limit now and then every `retention_check_minutes`, until cancelled."""
    while True:
        try:
            deleted = await purge_expired(store, settings)
            if deleted:
                days = settings.retention_days
                logger.info("retention: deleted %d turns older than %g days", deleted, days)
        except Exception:
            logger.exception("retention run failed; retrying in %g minutes", settings.retention_check_minutes)
        await asyncio.sleep(settings.retention_check_minutes * 60)
