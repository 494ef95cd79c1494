"""Repeated log lines are rate-limited with a later summary; other lines pass."""

from __future__ import annotations

import logging
from pathlib import Path

from farm.core.logfile import attach_log_file
from farm.logfilter import RepeatFilter, rate_limit


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(msg: str, *args: object, name: str = "farm.core.slot.qemu1") -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_same_line_beyond_burst_is_dropped_then_summarised() -> None:
    clock = _Clock()
    flt = RepeatFilter(burst=3, window=10.0, clock=clock)
    passed = [flt.filter(_record("boot failed: %s", "TypeError")) for _ in range(1000)]
    assert passed.count(True) == 3
    clock.now = 10.5
    rec = _record("boot failed: %s", "TypeError")
    assert flt.filter(rec)
    assert rec.getMessage() == "(suppressed 997 similar lines) boot failed: TypeError"


def test_different_messages_and_loggers_are_counted_apart() -> None:
    flt = RepeatFilter(burst=2, window=10.0, clock=_Clock())
    for i in range(50):
        assert flt.filter(_record("set %d finished", i))
    for name in ("farm.a", "farm.b", "farm.c"):
        assert flt.filter(_record("same", name=name)) and flt.filter(_record("same", name=name))
    assert not flt.filter(_record("same", name="farm.a"))


def test_distinct_keys_are_bounded() -> None:
    flt = RepeatFilter(burst=1, window=1e9, clock=_Clock())
    for i in range(20_000):
        flt.filter(_record(f"line {i}"))
    assert len(flt._counts) <= 4096


def test_rate_limit_is_idempotent() -> None:
    handler = logging.NullHandler()
    rate_limit(handler)
    rate_limit(handler)
    assert sum(isinstance(f, RepeatFilter) for f in handler.filters) == 1


def test_log_file_of_a_failure_loop_stays_small(tmp_path: Path) -> None:
    path = tmp_path / "distributor.log"
    attach_log_file(path)
    child = logging.getLogger("farm.core.slot.qemu9")
    farm_log = logging.getLogger("farm")
    handler = next(h for h in farm_log.handlers if getattr(h, "baseFilename", None) == str(path))
    flt = next(f for f in handler.filters if isinstance(f, RepeatFilter))
    flt._clock = _Clock()  # a slow (loaded) host must not open a new window meanwhile
    try:
        for _ in range(20_000):
            child.error("boot failed: TypeError: %s", "expected str, got int")
    finally:
        farm_log.removeHandler(handler)
        handler.close()
    assert path.stat().st_size < 10_000
    assert path.read_text().count("boot failed") == 20
