"""The store of record: every job's committed state (SQLite here; PostgreSQL behind the same seam later)."""
