"""Alembic migrations for the history database; run by storage.schema_version, shipped with the package."""
