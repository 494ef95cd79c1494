"""QemuProcess with a real, cheap QEMU (``-machine none``): launch, failures, shutdown."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import psutil
import pytest

from farm.errors import BackendError, LaunchError
from farm.procs import ProcessRegistry
from farm.qemu import QemuProcess, Screen, redact

QEMU = shutil.which("qemu-system-x86_64")
pytestmark = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")


def cheap(*extra: str) -> list[str]:
    assert QEMU is not None
    return [QEMU, "-machine", "none", "-nodefaults", "-display", "none", *extra]


def running(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and marker in " ".join(
                proc.info["cmdline"] or []
            ):
                found.append(proc)
    return found


def test_launch_query_and_idempotent_shutdown(tmp_path: Path) -> None:
    registry = ProcessRegistry(tmp_path / "state")
    qmp = tmp_path / "qmp.sock"
    proc = QemuProcess(
        cheap("-qmp", f"unix:{qmp},server=on,wait=off"),
        name="cheap",
        log_file=tmp_path / "qemu.log",
        qmp_socket=qmp,
        registry=registry,
    )
    assert proc.pid is None and not proc.alive()  # __init__ only records
    with proc:
        assert proc.alive() and proc.pid is not None
        assert proc.qmp is not None
        assert proc.qmp.execute("query-status")["status"] in ("running", "prelaunch")
        assert "cheap" in registry.entries()
    assert not proc.alive()
    assert proc.exitcode == 0  # QMP quit
    assert registry.entries() == {}
    proc.shutdown()  # again: nothing happens
    proc.shutdown(hard=True)
    with pytest.raises(BackendError, match="already launched"):
        proc.launch()


def test_without_qmp_shutdown_terminates(tmp_path: Path) -> None:
    proc = QemuProcess(cheap(), log_file=tmp_path / "qemu.log").launch()
    assert proc.alive()
    proc.shutdown(timeout=5)
    assert not proc.alive() and proc.exitcode is not None
    assert running(str(tmp_path)) == []


def test_missing_binary_is_a_launch_error(tmp_path: Path) -> None:
    argv = [str(tmp_path / "no-such-qemu"), "-append", "farm.token=secret123"]
    with pytest.raises(LaunchError) as err:
        QemuProcess(argv, log_file=tmp_path / "qemu.log").launch()
    assert err.value.command == [*argv[:2], "farm.token=***"]  # scrubbed: errors get logged
    assert err.value.exitcode is None
    assert "no-such-qemu" in str(err.value)
    assert "secret123" not in str(err.value)  # the token stays out of messages
    assert isinstance(err.value, BackendError)


def test_qemu_that_exits_at_once_is_a_launch_error(tmp_path: Path) -> None:
    qmp = tmp_path / "qmp.sock"
    argv = cheap("-qmp", f"unix:{qmp},server=on,wait=off", "-no-such-option")
    proc = QemuProcess(argv, log_file=tmp_path / "qemu.log", qmp_socket=qmp)
    with pytest.raises(LaunchError) as err:
        proc.launch()
    assert err.value.exitcode == 1
    assert err.value.command == argv
    assert "no-such-option" in err.value.output
    assert "exit status 1" in str(err.value)
    assert not proc.alive()
    proc.shutdown()  # after a failed launch: nothing left to do, no error


def test_rollback_kills_a_qemu_that_never_comes_up(tmp_path: Path) -> None:
    fake = tmp_path / "fake-qemu"
    fake.write_text(f"#!/bin/sh\necho 'fake qemu starting'\nsleep 600 # {tmp_path}\n")
    fake.chmod(0o755)
    registry = ProcessRegistry(tmp_path / "state")
    proc = QemuProcess(
        [str(fake)],
        name="fake",
        log_file=tmp_path / "qemu.log",
        qmp_socket=tmp_path / "qmp.sock",
        registry=registry,
        launch_timeout=0.5,
    )
    with pytest.raises(LaunchError, match="did not start") as err:
        proc.launch()
    assert "fake qemu starting" in err.value.output
    assert running(str(tmp_path)) == []
    assert registry.entries() == {}


@pytest.mark.skipif(shutil.which("screen") is None, reason="screen is not installed")
def test_under_screen(tmp_path: Path) -> None:
    qmp = tmp_path / "qmp.sock"
    pidfile = tmp_path / "qemu.pid"
    name = f"farmtest{tmp_path.name[-8:]}"
    proc = QemuProcess(
        cheap("-qmp", f"unix:{qmp},server=on,wait=off", "-pidfile", str(pidfile)),
        name=name,
        qmp_socket=qmp,
        pidfile=pidfile,
        screen=Screen(name, tmp_path / "screenrc", tmp_path / "console.log"),
    )
    with proc:
        assert proc.alive() and proc.screen_pid is not None
        assert psutil.Process(proc.pid).parent().pid == proc.screen_pid  # type: ignore[union-attr]
        assert proc.qmp is not None and proc.qmp.execute("query-status")
    assert not proc.alive()
    assert running(str(tmp_path)) == []


def test_screen_rollback_when_qemu_never_writes_its_pidfile(tmp_path: Path) -> None:
    fake = tmp_path / "fake-qemu"
    fake.write_text("#!/bin/sh\necho 'fake qemu: cannot start'\nsleep 600\n")
    fake.chmod(0o755)
    proc = QemuProcess(
        [str(fake)],
        name="fake",
        pidfile=tmp_path / "qemu.pid",
        screen=Screen("farmtestfake", tmp_path / "screenrc", tmp_path / "console.log"),
        launch_timeout=1.0,
    )
    with pytest.raises(LaunchError, match="did not start within") as err:
        proc.launch()
    assert err.value.exitcode is None
    assert running(str(tmp_path)) == []


def test_redact_hides_the_token() -> None:
    assert redact(["q", "-append", "a farm.token=abc b"]) == "q -append a farm.token=*** b"


def test_failing_screen_command_keeps_the_token_out(tmp_path: Path) -> None:
    """screen itself failing (bad option for it) is a LaunchError without the token."""
    proc = QemuProcess(
        ["-farm.token=secret456"],  # screen takes this as its own (unknown) option
        name="x",
        pidfile=tmp_path / "qemu.pid",
        screen=Screen("farmtestbad", tmp_path / "screenrc", tmp_path / "console.log"),
        launch_timeout=1.0,
    )
    with pytest.raises(LaunchError) as err:
        proc.launch()
    assert "secret456" not in str(err.value)
    assert running(str(tmp_path)) == []
