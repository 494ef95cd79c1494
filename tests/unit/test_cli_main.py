"""The farm command through click's CliRunner: help of every command, exit codes 0/1/2, -d."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from farm.cli import root as cli
from farm.cli.root import _LAZY_COMMANDS, main
from farm.errors import BackendError

COMMANDS = [
    [],
    ["run"],
    ["list"],
    ["console"],
    ["image"],
    ["image", "build"],
    ["net"],
    ["net", "up"],
    ["net", "down"],
    ["net", "status"],
    ["netjobs"],
    ["report"],
    ["doctor"],
    ["status"],
]


def invoke(*args: str, cwd: Path | None = None) -> Result:
    runner = CliRunner()
    if cwd is None:
        return runner.invoke(main, list(args), prog_name="farm")
    with contextlib.chdir(cwd):
        return runner.invoke(main, list(args), prog_name="farm")


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a) or "farm")
def test_every_command_has_help(argv: list[str]) -> None:
    res = invoke(*argv, "--help")
    assert res.exit_code == 0, res.output
    assert "Usage: farm" in res.stdout


def test_every_lazy_command_is_listed_and_loads() -> None:
    res = invoke("--help")
    for name in _LAZY_COMMANDS:
        assert name in res.stdout
        assert isinstance(cli._load_lazy(name), click.Command)


def test_help_names_the_exit_codes_and_new_options() -> None:
    assert "2 bad input" in invoke("--help").stdout
    assert "-d, --debug" in invoke("--help").stdout
    assert "--port" in invoke("run", "--help").stdout


def test_list_exits_0() -> None:
    res = invoke("list", "--tasksets")
    assert res.exit_code == 0 and "Hey0TaskSet" in res.stdout


def test_usage_errors_exit_2() -> None:
    assert invoke("no-such-command").exit_code == 2
    assert invoke("run").exit_code == 2  # TASKSET missing
    assert invoke("run", "example.Hey0TaskSet", "--machines", "three").exit_code == 2


def test_bad_input_exits_2_with_one_clear_line(tmp_path: Path) -> None:
    for argv, needle in (
        (["run", "example.NoSuchSet"], "unknown task set"),
        (["run", "example.Hey0TaskSet", "--machines", "9", "--backend", "local"], "1..7"),
        (["run", "example.Hey0TaskSet", "--port", "70000", "--backend", "local"], "agent_port"),
        (["run", "example.Hey0TaskSet", "--monitor", "NoMonitor"], "NoMonitor"),
        (["run", "example.Hey0TaskSet", "10.0.0.0/33"], "10.0.0.0/33"),
        (["run", "example.Hey0TaskSet", "127.0.0.1", "--backend", "qemu"], "--backend"),
    ):
        res = invoke(*argv, cwd=tmp_path)
        assert res.exit_code == 2, (argv, res.output)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], (argv, res.stderr)
        assert "Traceback" not in res.stderr


def test_bad_config_file_exits_2_naming_the_key(tmp_path: Path) -> None:
    toml = tmp_path / "farm.toml"
    toml.write_text("max_machine = 3\n")
    res = invoke("--config", str(toml), "status")
    assert res.exit_code == 2 and "max_machine" in res.stderr
    toml.write_text('heartbeat = "fast"\n')
    res = invoke("--config", str(toml), "doctor")
    assert res.exit_code == 2 and "heartbeat" in res.stderr
    res = invoke("--config", str(tmp_path / "missing.toml"), "status")
    assert res.exit_code == 2 and "missing.toml" in res.stderr


def test_farm_failure_exits_1_one_line_and_traceback_with_d(tmp_path: Path) -> None:
    sock = tmp_path / "control.sock"
    res = invoke("status", "--socket", str(sock))
    assert res.exit_code == 1
    assert res.stderr.strip() == f"farm: error: no farm running here: {sock} not found"
    res = invoke("-d", "status", "--socket", str(sock))
    assert res.exit_code == 1
    assert "Traceback" in res.stderr and "NoFarmRunning" in res.stderr
    assert res.stderr.strip().endswith(f"farm: error: no farm running here: {sock} not found")


def test_bad_input_with_d_shows_the_traceback(tmp_path: Path) -> None:
    res = invoke("-d", "run", "example.NoSuchSet", cwd=tmp_path)
    assert res.exit_code == 2 and "Traceback" in res.stderr and "unknown task set" in res.stderr


def test_escaped_errors_are_mapped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A FarmError no command caught exits 1; a bug is one line, its traceback with -d."""
    from farm import tasksets

    def backend_down(name: str) -> None:
        raise BackendError("hypervisor unreachable")

    monkeypatch.setattr(tasksets, "resolve", backend_down)
    res = invoke("run", "example.Hey0TaskSet", cwd=tmp_path)
    assert res.exit_code == 1 and "hypervisor unreachable" in res.stderr

    def bug(name: str) -> None:
        raise RuntimeError("oops")

    monkeypatch.setattr(tasksets, "resolve", bug)
    res = invoke("run", "example.Hey0TaskSet", cwd=tmp_path)
    assert res.exit_code == 1
    assert res.stderr.strip() == (
        "farm: internal error: RuntimeError: oops (farm -d shows the traceback)"
    )
    res = invoke("-d", "run", "example.Hey0TaskSet", cwd=tmp_path)
    assert res.exit_code == 1 and isinstance(res.exception, RuntimeError)


def test_keyboard_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    from farm import tasksets

    def interrupted() -> list[tuple[str, str]]:
        raise KeyboardInterrupt

    monkeypatch.setattr(tasksets, "available", interrupted)
    res = invoke("list", "--tasksets")
    assert res.exit_code == 130 and "interrupted" in res.stderr
