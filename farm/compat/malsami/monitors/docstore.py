"""Documents in farm's own results database: MongoMonitor's store when no MongoDB is at hand.

``MongoMonitor("sqlite:///results.db")`` or ``MongoMonitor("postgresql://...")``
writes the documents a MongoDB would get into a ``documents`` table beside
farm's results tables (one JSON document a row, with its database and
collection names), through farm's SqliteMonitor/PostgresMonitor connection
handling: several distributors, on one host (SQLite, WAL) or many
(PostgreSQL), share one store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from farm.monitors.postgres import SCHEMA_LOCK, PostgresMonitor
from farm.monitors.sqlite import SqliteMonitor
from farm.monitors.sqlstore import SqlStoreMonitor

#: ``documents`` table; {pk}/{real} are filled with the database's types
DOCUMENTS = """CREATE TABLE IF NOT EXISTS documents (
    id         {pk},
    db         TEXT NOT NULL,
    collection TEXT NOT NULL,
    document   TEXT NOT NULL,
    stored_at  {real} NOT NULL
)"""


def store_for(uri: str) -> SqlStoreMonitor[Any] | None:
    """farm's store for ``sqlite:///PATH`` or a ``postgresql://`` URL; None for other URIs.

    ``sqlite:///results.db`` is relative to the working directory and
    ``sqlite:////abs/results.db`` absolute (SQLAlchemy's convention).
    """
    if uri.startswith("sqlite:///"):
        return SqliteMonitor(uri[len("sqlite:///") :])
    if uri.startswith(("postgresql://", "postgres://")):
        return PostgresMonitor(uri)
    return None


class DocumentStore:
    """Inserts JSON documents into the ``documents`` table of one farm results database."""

    def __init__(self, store: SqlStoreMonitor[Any]) -> None:
        self.store = store
        self._ready: object = None  # the connection the table was created on

    def __repr__(self) -> str:
        return f"DocumentStore({self.store!r})"

    def _create(self, conn: Any) -> None:
        types = self.store.SCHEMA_TYPES
        if isinstance(self.store, PostgresMonitor):  # two farms starting at once: no race
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        conn.execute(DOCUMENTS.format(pk=types["pk"], real=types["real"]))
        self._ready = conn

    def insert(self, db: str, collection: str, documents: Iterable[Any], about: Any) -> int:
        """Insert ``documents`` in one transaction; ``about`` names the set in errors."""
        rows = [json.dumps(doc, default=str) for doc in documents]
        sql = "INSERT INTO documents (db, collection, document, stored_at) VALUES (?, ?, ?, ?)"
        with self.store._transaction("store documents", about) as conn:
            if self._ready is not conn:
                self._create(conn)
            now = time.time()
            for row in rows:
                self.store._run(conn, sql, (db, collection, row, now))
        return len(rows)

    def find(self, db: str, collection: str) -> list[Any]:
        """Every document of ``collection``, oldest first (for users and tests)."""
        sql = "SELECT document FROM documents WHERE db = ? AND collection = ? ORDER BY id"
        with self.store._transaction("read documents", collection) as conn:
            if self._ready is not conn:
                self._create(conn)
            return [json.loads(r[0]) for r in self.store._run(conn, sql, (db, collection))]

    def close(self) -> None:
        self.store.close()
        self._ready = None


__all__ = ["DOCUMENTS", "DocumentStore", "store_for"]
