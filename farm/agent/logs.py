"""The agent's logging, set up after the first handshake rather than before it.

Importing ``logging`` (which imports traceback, tokenize, textwrap, string ...)
costs about a tenth of a second in a TCG guest, on the way from boot to the
first handshake. So the agent's modules log through :func:`get_logger`; the
agent's main calls :func:`hold` before anything logs, and :func:`release`
(logging to stderr, see ``FORMAT``) runs once the first client has
authenticated, or the accept loop is idle, or the agent stops. Records made
meanwhile are kept, with their time, and then written in order: the output is
the same, written a moment later.

Without :func:`hold` (the agent's modules used as a library, e.g. in tests),
every call goes straight to ``logging.getLogger(name)``.
"""

from __future__ import annotations

import sys
import threading
import time

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is slow to import in a TCG guest
if TYPE_CHECKING:
    from typing import Any

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40  # logging's levels
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: records kept while holding: (time, logger name, level, msg, args, exc_info)
_held: list[tuple[float, str, int, str, tuple[object, ...], Any]] | None = None
_level = "INFO"
_lock = threading.RLock()


def hold(level: str = "INFO") -> None:
    """Keep records from now on; :func:`release` then logs to stderr at ``level`` (a name)."""
    global _held, _level
    with _lock:
        if _held is None:
            _held, _level = [], level


def release() -> None:
    """If holding: configure ``logging`` (stderr), write the kept records, stop holding."""
    global _held
    if _held is None:
        return
    import logging

    with _lock:  # records made meanwhile wait for the lock, so the order is kept
        if _held is None:
            return
        logging.basicConfig(
            level=getattr(logging, str(_level).upper(), logging.INFO),
            stream=sys.stderr,
            format=FORMAT,
        )
        for created, name, level, msg, args, exc_info in _held:
            logger = logging.getLogger(name)
            if logger.isEnabledFor(level):
                record = logger.makeRecord(name, level, "(held)", 0, msg, args, exc_info)
                record.created = created
                record.msecs = int((created - int(created)) * 1000) + 0.0
                logger.handle(record)
        _held = None


class Logger:
    """The part of ``logging.Logger`` the agent uses; see the module docstring."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def debug(self, msg: str, *args: object) -> None:
        """Log at DEBUG level."""
        self._log(DEBUG, msg, args)

    def info(self, msg: str, *args: object) -> None:
        """Log at INFO level."""
        self._log(INFO, msg, args)

    def warning(self, msg: str, *args: object) -> None:
        """Log at WARNING level."""
        self._log(WARNING, msg, args)

    def error(self, msg: str, *args: object) -> None:
        """Log at ERROR level."""
        self._log(ERROR, msg, args)

    def exception(self, msg: str, *args: object) -> None:
        """Log at ERROR level with the exception being handled."""
        self._log(ERROR, msg, args, True)

    def _log(self, level: int, msg: str, args: tuple[object, ...], exc_info: bool = False) -> None:
        if _held is not None:
            with _lock:
                if _held is not None:
                    info = sys.exc_info() if exc_info else None
                    _held.append((time.time(), self.name, level, msg, args, info))
                    return
        import logging

        # stacklevel 3: the record names the caller of info() & co., not this module
        logging.getLogger(self.name).log(level, msg, *args, exc_info=exc_info, stacklevel=3)


def get_logger(name: str) -> Logger:
    """The agent's stand-in for ``logging.getLogger(name)``."""
    return Logger(name)
