"""Distributor.__init__ opens its resources through one ExitStack; the log_file setting."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest

import farm.core.distributor as core_distributor
from farm import Distributor
from farm.backend.fake import FakeBackend, session_class_for
from farm.config import FarmConfig
from farm.core.logfile import log_file_for
from farm.errors import ConfigError

pytestmark = pytest.mark.unit


class ClosingBackend(FakeBackend):
    """Records close()."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_a_failing_journal_closes_the_reaper_and_the_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reapers: list[subprocess.Popen[bytes]] = []
    real_start = core_distributor.start_reaper

    def start_reaper(state_dir: Path) -> subprocess.Popen[bytes]:
        reapers.append(real_start(state_dir))
        return reapers[-1]

    def broken_journal(path: Path) -> Any:
        raise OSError(f"cannot open {path}")

    monkeypatch.setattr(core_distributor, "start_reaper", start_reaper)
    monkeypatch.setattr(core_distributor, "Journal", broken_journal)
    backend = ClosingBackend()
    config = FarmConfig(state_dir=tmp_path / "state", log_dir=tmp_path / "log")
    with pytest.raises(OSError, match="cannot open"):
        Distributor(config, backend=backend, session_class=session_class_for(backend))
    assert backend.closed == 1
    [reaper] = reapers
    assert reaper.poll() is not None  # terminated and reaped, not left running


def test_a_successful_init_is_undone_by_close(tmp_path: Path) -> None:
    backend = ClosingBackend()
    config = FarmConfig(state_dir=tmp_path / "state", log_dir=tmp_path / "log")
    dist = Distributor(config, backend=backend, session_class=session_class_for(backend))
    dist.close()
    dist.close()  # idempotent
    assert backend.closed == 1
    assert not (tmp_path / "state" / "control.sock").exists()


def test_log_file_auto_only_without_application_logging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    assert log_file_for("auto", tmp_path) == tmp_path / "distributor.log"
    monkeypatch.setattr(root, "handlers", [logging.NullHandler()])
    assert log_file_for("auto", tmp_path) is None
    assert log_file_for(True, tmp_path) == tmp_path / "distributor.log"
    assert log_file_for(str(tmp_path / "x.log"), tmp_path) == tmp_path / "x.log"
    assert log_file_for("", tmp_path) is None
    assert log_file_for(False, tmp_path) is None


def test_log_file_false_attaches_nothing(tmp_path: Path) -> None:
    backend = FakeBackend()
    config = FarmConfig(state_dir=tmp_path / "state", log_dir=tmp_path / "log", log_file=False)
    before = list(logging.getLogger("farm").handlers)
    dist = Distributor(config, backend=backend, session_class=session_class_for(backend))
    dist.close()
    assert logging.getLogger("farm").handlers == before
    assert not (tmp_path / "log" / "distributor.log").exists()


def test_log_file_must_be_a_path_or_a_switch() -> None:
    with pytest.raises(ConfigError, match="log_file"):
        FarmConfig(log_file=3)  # type: ignore[arg-type]
