"""History persistence behind a narrow interface; SQLAlchemy lives only in this package.

`storage.types` (the interface) is light; the SQL implementation is imported only when it is first used, so
importing the interface from here never loads SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from storage.types import (
    AuditEntry,
    AuditRecord,
    HistoryStore,
    InboxEntry,
    InboxState,
    NewTurn,
    Role,
    StoredTurn,
)

if TYPE_CHECKING:
    from storage.history_store import SqlHistoryStore, open_store

__all__ = [
    "AuditEntry",
    "AuditRecord",
    "HistoryStore",
    "InboxEntry",
    "InboxState",
    "NewTurn",
    "Role",
    "SqlHistoryStore",
    "StoredTurn",
    "open_store",
]


def __getattr__(name: str) -> Any:
    if name in ("SqlHistoryStore", "open_store"):
        from storage import history_store

        return getattr(history_store, name)
    raise AttributeError(f"module 'storage' has no attribute {name!r}")
