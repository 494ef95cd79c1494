"""``-l``: one timestamped log file per test, beside the config file (as NetJobs did)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from farm.errors import FarmError
from farm.netjobs.report import format_result
from farm.netjobs.runner import TestResult

log = logging.getLogger(__name__)


def log_path(config_path: Path, result: TestResult) -> Path:
    """``<config dir>/<config stem>_<label>_<YYYYmmdd-HHMMSS>.log`` (suffixed if taken)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(result.began_wall))
    base = config_path.parent / f"{config_path.stem}_{result.label}_{stamp}"
    path, n = base.with_name(base.name + ".log"), 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}.log")
    return path


def write_log(config_path: Path, result: TestResult) -> Path:
    """Write the test's report (whole outputs included) to its log file; return the path."""
    path = log_path(Path(config_path), result)
    try:
        path.write_text(format_result(result), encoding="utf-8")
    except OSError as exc:
        raise FarmError(f"cannot write NetJobs log {path}: {exc}") from exc
    log.info("test %s logged to %s", result.label, path)
    return path
