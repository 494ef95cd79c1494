"""``Distributor.resume()`` needs the monitor the journal's jobs reported to."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from farm.backend.fake import FakeBackend
from farm.errors import ConfigError

from .test_promises_distributor import Recorder, farm, session_class, sets


def test_resume_without_a_monitor_is_refused_not_silently_unreported(tmp_path: Path) -> None:
    reached, go = threading.Event(), threading.Event()

    def hold(variant: Any, params: tuple[Any, ...]) -> None:
        if variant.index == 1:
            reached.set()
            go.wait(5)

    backend = FakeBackend()
    dist, _ = farm(tmp_path, backend, session_class(backend, on_start=hold))
    dist.add_job(sets(3), Recorder(), name="left-over")
    assert reached.wait(10)
    dist.close(wait=False)
    go.set()
    assert dist.wait_closed(timeout=10)

    backend2 = FakeBackend()
    dist2, _ = farm(tmp_path, backend2, session_class(backend2))
    try:
        with pytest.raises(ConfigError, match="needs a monitor"):
            dist2.resume()
        assert dist2.jobs() == []  # nothing was queued for no monitor
        mon = Recorder()
        assert len(dist2.resume(mon)) == 1
        assert dist2.wait_finished(timeout=30)
        assert mon.of("finish")  # the resumed variants reached the monitor
        assert dist2.resume() == []  # nothing unfinished: no monitor needed
    finally:
        dist2.close()
