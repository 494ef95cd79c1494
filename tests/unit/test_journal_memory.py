"""The journal's memory stays bounded over a long campaign (soak: its page cache was half the
distributor's RSS growth)."""

from __future__ import annotations

from pathlib import Path

from farm.core.journal import CACHE_KIB, Journal


def test_journal_page_cache_is_capped(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    try:
        (cache,) = journal._db.execute("PRAGMA cache_size").fetchone()
    finally:
        journal.close()
    assert cache == -CACHE_KIB and CACHE_KIB <= 512  # KiB, not SQLite's default 2 MiB
