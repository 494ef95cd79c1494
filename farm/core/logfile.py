"""The ``log_file`` setting: attach a log file only when told, or when nobody else logs.

``log_file = "auto"`` (default): attach ``<log_dir>/distributor.log`` to the
``farm`` logger only if the application configured no logging (the root logger
has no handlers), so ``dist = Distributor()`` in a plain Python shell keeps
writing log/distributor.log; ``true``: always that file; a path: always that
file; ``""`` or ``false``: never.
"""

from __future__ import annotations

import logging
from pathlib import Path

from farm.logfilter import rate_limit

_attached: set[Path] = set()

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def log_file_for(setting: str | bool, log_dir: Path) -> Path | None:
    """The file the ``log_file`` setting asks for now, or None."""
    if setting is False or setting == "":
        return None
    if setting is True:
        return Path(log_dir) / "distributor.log"
    if setting == "auto":
        return None if logging.getLogger().handlers else Path(log_dir) / "distributor.log"
    return Path(setting)


def attach_log_file(path: Path) -> None:
    """Attach a file handler to the 'farm' logger once per path (tail -f log/distributor.log)."""
    path = Path(path).resolve()
    if path in _attached:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(FORMAT))
    rate_limit(handler)  # a failure loop must not fill the disk
    farm_log = logging.getLogger("farm")
    farm_log.addHandler(handler)
    if farm_log.level == logging.NOTSET or farm_log.level > logging.INFO:
        farm_log.setLevel(logging.INFO)
    _attached.add(path)
