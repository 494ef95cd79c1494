"""The ``cyclictest`` pkg: Debian rt-tests' cyclictest, the standard latency measurement.

A job runs ``cyclictest -q -m -l LOOPS -i INTERVAL -p PRIORITY -t THREADS`` (the
guest image ships it, farm/image/initrd.py). Config (every key optional):

===========  =======  ====================================================
key          default  meaning
===========  =======  ====================================================
loops        1000     wake-ups per measuring thread (``-l``)
interval_us  1000     their period in microseconds (``-i``)
priority     80       their SCHED_FIFO priority, 0 = SCHED_OTHER (``-p``)
threads      1        measuring threads (``-t``)
===========  =======  ====================================================

With ``-q`` cyclictest prints one summary line per thread when it ends
(``T: 0 ( 123) P:80 I:1000 C:   1000 Min:  3 Act:  5 Avg:  4 Max:  20``).
:func:`summary` turns them into ``{"min", "avg", "max"}`` in microseconds (over
all threads: least minimum, mean average, greatest maximum) plus ``threads``
and ``loops``; the job's exit event carries it as extra ``latency_us`` and, for
a plain EXIT, as its detail. Stand-alone (stdlib only): the host's task model
checks configs with :func:`check_config`.
"""

from __future__ import annotations

import os
import re

PKG = "cyclictest"
#: where the program is looked for when it is not on PATH
DEFAULT_PATHS = ("/usr/bin/cyclictest", "/usr/sbin/cyclictest", "/usr/local/bin/cyclictest")

#: key -> (flag, default, minimum, maximum)
SCHEMA: dict[str, tuple[str, int, int, int]] = {
    "loops": ("-l", 1000, 1, 100_000_000),
    "interval_us": ("-i", 1000, 10, 10_000_000),
    "priority": ("-p", 80, 0, 99),
    "threads": ("-t", 1, 1, 64),
}

_LINE = re.compile(
    r"^T:\s*\d+.*?C:\s*(\d+).*?Min:\s*(\d+).*?Avg:\s*(\d+(?:\.\d+)?).*?Max:\s*(\d+)", re.M
)


def check_config(config: object) -> str | None:
    """Why ``config`` is unusable (naming the key), or None if fine."""
    if not isinstance(config, dict):
        return "config must be an object"
    for key, value in config.items():
        if key not in SCHEMA:
            return f"config.{key} is unknown for cyclictest (known: {', '.join(SCHEMA)})"
        _, _, low, high = SCHEMA[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"config.{key} must be an integer, got {value!r}"
        if isinstance(value, float) and not value.is_integer():
            return f"config.{key} must be an integer, got {value!r}"
        if not low <= value <= high:
            return f"config.{key}={value!r} is outside [{low}, {high}]"
    return None


def program() -> str:
    """Path of cyclictest (PATH first); raise OSError if there is none."""
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    candidates = [os.path.join(d, PKG) for d in dirs] + list(DEFAULT_PATHS)
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(f"cyclictest not found (PATH, {', '.join(DEFAULT_PATHS)})")


def argv(config: dict[str, object]) -> list[str]:
    """The command line for ``config`` (checked already)."""
    out = [program(), "-q", "-m"]
    for key, (flag, default, _, _) in SCHEMA.items():
        value = config.get(key, default)
        assert isinstance(value, int | float)
        out += [flag, str(int(value))]
    return out


def summary(output: str) -> dict[str, float] | None:
    """Latency figures (microseconds) of cyclictest's summary lines, or None if none."""
    rows = [tuple(float(x) for x in m.groups()) for m in _LINE.finditer(output)]
    if not rows:
        return None
    return {
        "min": min(r[1] for r in rows),
        "avg": round(sum(r[2] for r in rows) / len(rows), 3),
        "max": max(r[3] for r in rows),
        "threads": len(rows),
        "loops": sum(r[0] for r in rows),
    }


def describe(figures: dict[str, float]) -> str:
    """One line for an event's detail."""
    return (
        f"latency min/avg/max {figures['min']:g}/{figures['avg']:g}/{figures['max']:g} us"
        f" ({figures['loops']:g} loops, {figures['threads']:g} threads)"
    )
