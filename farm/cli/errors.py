"""Exit codes of the ``farm`` command and the one place errors become them.

Exit 0 ok, 1 failure, 2 bad input (:class:`~farm.errors.ConfigError`), 130
interrupted. Every command reports an error with :func:`fail` so that
``farm -d`` shows the traceback everywhere.
"""

from __future__ import annotations

import sys
import traceback
from typing import NoReturn

import click

from farm.errors import ConfigError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def debug_enabled() -> bool:
    """True when ``farm -d`` asked for full tracebacks."""
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    return bool(root is not None and isinstance(root.obj, dict) and root.obj.get("debug"))


def exit_code(exc: BaseException) -> int:
    """The exit code of an error: 2 for bad input (ConfigError), 1 for anything else."""
    return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED


def fail(exc: BaseException) -> NoReturn:
    """Print ``exc`` as one clear line (its traceback too with ``-d``) and exit 2 or 1."""
    if debug_enabled():
        traceback.print_exception(exc, file=sys.stderr)
    click.secho(f"farm: error: {exc}", fg="red", err=True)
    raise SystemExit(exit_code(exc))


def usage_error(exc: click.UsageError) -> NoReturn:
    """A command line click rejected, as one ``farm: error: ...`` line like any error, exit 2."""
    where = exc.ctx.command_path if exc.ctx is not None else "farm"
    message = exc.format_message().rstrip(".")
    click.secho(f"farm: error: {message} (see {where} --help)", fg="red", err=True)
    raise SystemExit(EXIT_USAGE)


def internal_error(exc: Exception) -> NoReturn:
    """A bug escaped a command: one line (re-raised with ``-d`` for the traceback), exit 1."""
    if debug_enabled():
        raise exc
    click.secho(
        f"farm: internal error: {type(exc).__name__}: {exc} (farm -d shows the traceback)",
        fg="red",
        err=True,
    )
    raise SystemExit(EXIT_FAILED) from None
