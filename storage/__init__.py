"""History persistence behind a narrow interface; SQLAlchemy lives only in this package."""

from storage.history_store import HistoryStore, NewTurn, Role, SqlHistoryStore, StoredTurn, open_store

__all__ = ["HistoryStore", "NewTurn", "Role", "SqlHistoryStore", "StoredTurn", "open_store"]
