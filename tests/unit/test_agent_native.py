"""How the agent picks farm-workload or the Python fallback for built-in pkgs."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from farm.agent import commands, sched
from farm.agent.taskspec import parse_taskset

X86_64_HEADER = b"\x7fELF\x02\x01\x01" + bytes(11) + (62).to_bytes(2, "little") + bytes(44)


@pytest.fixture(autouse=True)
def _fresh_lookup() -> Iterator[None]:
    commands.native_workload.cache_clear()
    yield
    commands.native_workload.cache_clear()


def _fake_binary(path: Path, header: bytes = X86_64_HEADER, mode: int = 0o755) -> Path:
    path.write_bytes(header)
    path.chmod(mode)
    return path


def _launch_argv(pkg: str, tmp_path: Path) -> list[str]:
    (task,) = parse_taskset([{"id": 1, "pkg": pkg, "config": {"arg1": 3}}], set())
    plan = sched.plan(task.priority, task.executiontime, task.critical_ms, task.period)
    return commands.build_launch(task, 0, plan, {}, tmp_path).argv


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the fake header is x86-64")
def test_a_usable_binary_runs_the_builtins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = _fake_binary(tmp_path / "fw")
    monkeypatch.setenv(commands.NATIVE_ENV, str(binary))
    assert commands.native_workload() == (str(binary), f"${commands.NATIVE_ENV}={binary}")
    assert _launch_argv("pi", tmp_path) == [str(binary), "pi", "digits=3", "0"]
    assert commands.fallback_notice(["pi", "hey"]) is None


@pytest.mark.parametrize(
    ("header", "mode", "why"),
    [
        (b"#!/bin/sh\n" + bytes(30), 0o755, "not an ELF executable"),
        (X86_64_HEADER, 0o644, "not executable"),
        (X86_64_HEADER[:4] + b"\x01" + X86_64_HEADER[5:], 0o755, "32-bit ELF on a 64-bit"),
        (X86_64_HEADER[:18] + (183).to_bytes(2, "little") + bytes(44), 0o755, "ELF machine 183"),
    ],
)
@pytest.mark.skipif(os.uname().machine != "x86_64" or sys.maxsize < 2**32, reason="64-bit x86 host")
def test_an_unusable_binary_falls_back_to_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, header: bytes, mode: int, why: str
) -> None:
    binary = _fake_binary(tmp_path / "fw", header, mode)
    monkeypatch.setenv(commands.NATIVE_ENV, str(binary))
    path, reason = commands.native_workload()
    assert path is None and why in reason and str(binary) in reason
    argv = _launch_argv("pi", tmp_path)
    assert argv[0] == sys.executable and argv[-3:] == ["pi", "digits=3", "0"]
    notice = commands.fallback_notice(["shell", "pi", "hey"])
    assert notice is not None and "(hey, pi) run as Python" in notice and why in notice


def test_no_builtin_no_notice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(commands.NATIVE_ENV, str(tmp_path / "missing"))
    assert commands.fallback_notice(["shell", "traffic_client"]) is None
    assert "No such file" in (commands.fallback_notice(["idle"]) or "")


def test_default_path_is_where_the_image_puts_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from farm.image import native

    monkeypatch.delenv(commands.NATIVE_ENV, raising=False)
    assert commands.NATIVE_DEFAULT == native.GUEST_PATH
    path, where = commands.native_workload()
    assert where.startswith(commands.NATIVE_DEFAULT)
    assert path is None or path == commands.NATIVE_DEFAULT


class _NoProcess(Exception):
    """Raised by the fake Popen: the spawn's environment is all the test needs."""


@pytest.mark.parametrize("built", [True, False])
@pytest.mark.parametrize("from_env", [True, False])
def test_local_backend_passes_the_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, built: bool, from_env: bool
) -> None:
    from farm.backend import local
    from farm.config import FarmConfig

    images = tmp_path / "images"
    images.mkdir()
    if built:
        _fake_binary(images / "farm-workload")
    if from_env:
        monkeypatch.setenv(commands.NATIVE_ENV, "/elsewhere/farm-workload")
    else:
        monkeypatch.delenv(commands.NATIVE_ENV, raising=False)
    seen: list[dict[str, str]] = []

    def popen(argv: list[str], **kwargs: object) -> None:
        seen.append(kwargs["env"])  # type: ignore[arg-type]
        raise _NoProcess

    monkeypatch.setattr(local.subprocess, "Popen", popen)
    config = FarmConfig(
        state_dir=tmp_path / "state", log_dir=tmp_path / "log", image_dir=images, backend="local"
    )
    with pytest.raises(_NoProcess):
        local.LocalBackend(config).spawn("m0", "token")
    expected = (
        "/elsewhere/farm-workload" if from_env else str(images / "farm-workload") if built else None
    )
    assert seen[0].get(commands.NATIVE_ENV) == expected


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the fake header is x86-64")
@pytest.mark.parametrize("knows_exec", [True, False], ids=["exec-gate", "older-build"])
def test_cyclictest_is_held_at_the_native_gate_when_the_program_can_exec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, knows_exec: bool
) -> None:
    """With ``--exec`` (FARM_EXEC_GATE) a cyclictest job 0 is farm-workload holding cyclictest
    at its gate, pre-spawnable like a built-in; later jobs, and every job with an older
    farm-workload, are spawned at their release."""
    from farm.agent import cyclictest

    marker = commands.GATE_MARKER + (commands.EXEC_GATE_MARKER if knows_exec else b"")
    binary = _fake_binary(tmp_path / "fw", X86_64_HEADER + marker)
    monkeypatch.setenv(commands.NATIVE_ENV, str(binary))
    monkeypatch.setattr(cyclictest, "program", lambda: "/usr/bin/cyclictest")
    (task,) = parse_taskset([{"id": 1, "pkg": "cyclictest", "config": {"loops": 5}}], set())
    plan = sched.plan(task.priority, task.executiontime, task.critical_ms, task.period)
    launch = commands.build_launch(task, 0, plan, {}, tmp_path)
    plain = ["/usr/bin/cyclictest", "-q", "-m", "-l", "5"]
    if knows_exec:
        assert launch.argv[:7] == [str(binary), "--exec", *plain]
    else:
        assert launch.argv[:5] == plain
    assert launch.gate is knows_exec
    assert launch.summary == "cyclictest"
    later = commands.build_launch(task, 1, plan, {}, tmp_path)  # no pre-spawn mid-measurement
    assert later.argv[:5] == plain
    assert not later.gate
