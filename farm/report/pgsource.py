"""The PostgreSQL source of ``farm report``: a PostgresMonitor database, read-only.

``farm report postgresql://user@host/db`` (or a libpq ``key=value`` string
such as ``host=/run/pg dbname=farm``) reads the same tables as an SQLite
results.db; the connection is a read-only transaction, so a report never
writes to the shared database. Needs psycopg (``pip install 'farm[postgres]'``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from farm.errors import ConfigError
from farm.extras import require
from farm.monitors.postgres import redact

SCHEMES = ("postgresql://", "postgres://")


def is_postgres(source: str) -> bool:
    """True for a PostgreSQL URL or a libpq ``key=value`` connection string."""
    return source.startswith(SCHEMES) or ("=" in source and "dbname" in source)


def describe(source: str) -> str:
    """The connection string without its password."""
    return redact(source)


def dbname(source: str) -> str:
    """The database's name (for the report's title)."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        return str(conninfo_to_dict(source).get("dbname") or "postgres")
    except Exception:
        return "postgres"


def errors() -> tuple[type[BaseException], ...]:
    """psycopg's root error class, or none when psycopg is not installed."""
    try:
        import psycopg
    except ImportError:
        return ()
    return (psycopg.Error,)


def connect(source: str, required: Iterable[str]) -> Any:
    """A read-only psycopg connection to ``source`` holding the ``required`` tables."""
    psycopg = require("psycopg", "postgres", "farm report of a PostgreSQL database")
    try:
        conn = psycopg.connect(source, connect_timeout=10, application_name="farm report")
        conn.read_only = True
        names = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema()"
            )
        }
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())  # libpq's messages span lines: one line here
        raise ConfigError(f"cannot read {describe(source)}: {reason}") from exc
    missing = set(required) - names
    if missing:
        conn.close()
        raise ConfigError(
            f"{describe(source)} is not a farm results database "
            f"(no table {', '.join(sorted(missing))})"
        )
    return conn
