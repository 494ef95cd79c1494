"""Small helpers shared by tests of several tiers."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` on the SQLite database ``db`` (results.db, journal.db), closed after."""
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()
