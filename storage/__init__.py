"""History persistence behind a narrow interface; SQLAlchemy lives only in this package."""

from storage.history_store import (
    AuditEntry,
    AuditRecord,
    HistoryStore,
    NewTurn,
    Role,
    SqlHistoryStore,
    StoredTurn,
    open_store,
)

__all__ = [
    "AuditEntry",
    "AuditRecord",
    "HistoryStore",
    "NewTurn",
    "Role",
    "SqlHistoryStore",
    "StoredTurn",
    "open_store",
]
