"""A throw-away PostgreSQL server for tests: initdb in a temporary directory, UNIX socket only.

The server runs as an unprivileged user (PostgreSQL refuses to run as root:
``nobody`` when the tests run as root), listens on no TCP port
(``listen_addresses = ''``), only on a socket in its own directory, trusts
local connections as user ``farm``, and is stopped and removed by ``stop()``.
Uses the server binaries of Debian's ``postgresql`` package (found on PATH or
in /usr/lib/postgresql/*/bin).
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import shutil
import subprocess
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

from farm.errors import FarmError

log = logging.getLogger(__name__)

USER = "farm"
"""The server's superuser (initdb -U), trusted on the socket."""


def find_bindir() -> Path | None:
    """Directory holding initdb and pg_ctl (PATH first, then the newest Debian version)."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(os.path.realpath(initdb)).parent
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """One private PostgreSQL cluster: ``start()``, ``url()``, ``create_database()``, ``stop()``."""

    def __init__(self, bindir: Path | None = None, run_as: str = "nobody") -> None:
        """Records where the binaries are; nothing runs before start()."""
        self.bindir = bindir or find_bindir()
        self.run_as = run_as if os.geteuid() == 0 else None
        self.root: Path | None = None
        self._started = False
        self._dbs = 0

    @property
    def socket_dir(self) -> Path:
        """The directory of the server's UNIX socket (libpq's ``host``)."""
        if self.root is None:
            raise FarmError("the PostgreSQL server is not started")
        return self.root / "sock"

    def _run(self, *args: str) -> None:
        assert self.bindir is not None
        user: dict[str, Any] = {}
        if self.run_as is not None:
            pw = pwd.getpwnam(self.run_as)
            user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        done = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=120,
            cwd="/",
            **user,
        )
        if done.returncode != 0:
            raise FarmError(
                f"{args[0]} failed ({done.returncode}): {(done.stderr or done.stdout).strip()}"
            )

    def start(self) -> PostgresServer:
        """initdb a fresh cluster in a temporary directory and start it (rolled back on error)."""
        if self.bindir is None:
            raise FarmError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        # /tmp when another user runs the server ($TMPDIR may be private), and a short path:
        # a UNIX socket's path must fit in 107 bytes
        base = "/tmp" if self.run_as is not None and os.path.isdir("/tmp") else None
        self.root = Path(tempfile.mkdtemp(prefix="farm-pg-", dir=base))
        try:
            (self.root / "sock").mkdir()
            if self.run_as is not None:
                pw = pwd.getpwnam(self.run_as)
                for p in (self.root, self.root / "sock"):
                    os.chown(p, pw.pw_uid, pw.pw_gid)
            data = self.root / "data"
            self._run("initdb", "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8")
            with (data / "postgresql.conf").open("a") as conf:
                conf.write(
                    "\nlisten_addresses = ''\n"
                    f"unix_socket_directories = '{self.socket_dir}'\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                )
            self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(data),
                      "-l", str(self.root / "server.log"))  # fmt: skip
            self._started = True
        except BaseException:
            self.stop()
            raise
        log.info("PostgreSQL test server in %s", self.root)
        return self

    def restart(self) -> None:
        """Restart the server (fast): open connections are cut, as by a database failover."""
        if self.root is None or not self._started:
            raise FarmError("the PostgreSQL server is not started")
        data = str(self.root / "data")
        self._run("pg_ctl", "restart", "-w", "-m", "fast", "-D", data,
                  "-l", str(self.root / "server.log"))  # fmt: skip

    def url(self, dbname: str = "postgres") -> str:
        """libpq URL of database ``dbname`` on the socket (``postgresql:///db?host=...``)."""
        query = urllib.parse.urlencode({"host": str(self.socket_dir), "user": USER})
        return f"postgresql:///{dbname}?{query}"

    def create_database(self) -> str:
        """Create a new empty database and return its URL (needs psycopg)."""
        import psycopg

        self._dbs += 1
        name = f"farm_test_{self._dbs}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log_text(self) -> str:
        """The server's log so far (for failure messages)."""
        try:
            return (self.root / "server.log").read_text() if self.root else ""
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server (fast, no checkpoint wait) and remove its directory; idempotent."""
        if self.root is None:
            return
        try:
            if self._started:
                self._run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(self.root / "data"))
        finally:
            self._started = False
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
