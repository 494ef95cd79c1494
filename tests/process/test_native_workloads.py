"""farm-workload (farm/agent/native/workloads.c) against its reference, farm/agent/workloads.py.

The binary is the one the process tier's session fixture compiled with
:func:`farm.image.native.build_native` (gcc -O2 -static); every case runs it
and, where the output is deterministic, the Python workload too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from farm.agent import commands, pkgs, workloads
from farm.errors import ImageError
from farm.image import native
from tests.process.conftest import AgentProcess

PYTHON = [sys.executable, "-S", "-s", "-P", workloads.__file__]
ENV = {**os.environ, "FARM_TASK_ID": "7", "FARM_JOB": "3"}
#: a clean line of each pkg's default config
DEFAULT_LINES = {
    "hey": r"Hey! I am task 7 job 3\.",
    "namaste": r"Namaste from task 7 job 3\.",
    "pi": r"3\.14159\d{95}",
    "cond_42": r"condition met, no counting",
    "cond_mod": r"condition met, no counting",
    "linpack": r"linpack n=30 residual=\d\.\d{3}e[-+]\d\d",
    "tumatmul": r"tumatmul n=20 trace=-?\d+\.\d{6}",
    "idle": r"",
    "memhog": r"memhog holds 1048576 bytes",
}


def run(argv: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*argv, *args], capture_output=True, text=True, env=ENV, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def fw(_native_workloads: str) -> list[str]:
    return [_native_workloads]


def test_every_builtin_pkg_runs_with_its_default_config(fw: list[str]) -> None:
    assert set(DEFAULT_LINES) == set(pkgs.BUILTIN_PKGS)
    for pkg, line in DEFAULT_LINES.items():
        for config in ("", "{}", workloads.encode_config(pkg, {})):
            out = run(fw, pkg, config)
            assert out.returncode == 0, (pkg, config, out.stderr)
            assert re.fullmatch(line + ("\n" if line else ""), out.stdout), (pkg, out.stdout)
            assert out.stderr == ""


@pytest.mark.parametrize(
    ("pkg", "arg1", "line"),
    [
        ("pi", 5, "3.14159\n"),
        ("cond_42", 41, "counted to 100000\n"),
        ("cond_mod", 3, "counted to 100000\n"),
        ("linpack", 7, "linpack n=7 residual="),
        ("tumatmul", 3, "tumatmul n=3 trace="),
        ("idle", 1.5, ""),
        ("memhog", 5000, "memhog holds 5000 bytes\n"),
        ("hey", 1, "Hey! I am task 7 job 3.\n"),  # no keys: arg1 is ignored
    ],
)
def test_arg1_is_the_first_key_in_both_forms(fw: list[str], pkg: str, arg1: Any, line: str) -> None:
    for config in (f'{{"arg1": {arg1}}}', f"arg1={arg1}"):
        out = run(fw, pkg, config)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(line)
        assert out.stdout == run(PYTHON, pkg, config).stdout


@pytest.mark.parametrize(
    ("pkg", "config", "message"),
    [
        ("pi", "digits=0", "config.digits=0 is outside [1, 1e+06]"),
        ("pi", "digits=1.5", "config.digits must be an integer"),
        ("pi", '{"digits": true}', "config.digits must be a number"),
        ("pi", '{"digits": "many"}', "config.digits must be a number"),
        ("pi", "digits", "is not key=value"),
        ("pi", "digits=abc", ""),
        ("pi", "[1]", ""),
        ("pi", '{"digits": 5', ""),
        ("linpack", "n=2001", "config.n=2001 is outside"),
        ("idle", "ms=inf", "config.ms must be finite"),
        ("idle", '{"ms": -1}', "config.ms=-1 is outside"),
        ("memhog", "bytes=-1", "config.bytes=-1 is outside"),
        ("cond_42", "arg=1099511627777", "config.arg=1099511627777 is outside"),
        ("nope", "", "unknown built-in workload 'nope'"),
    ],
)
def test_bad_config_exits_2_with_a_message(
    fw: list[str], pkg: str, config: str, message: str
) -> None:
    out = run(fw, pkg, config)
    assert out.returncode == workloads.EXIT_USAGE == 2
    assert out.stdout == "" and out.stderr.startswith("workload: ") and message in out.stderr
    assert run(PYTHON, pkg, config).returncode == workloads.EXIT_USAGE  # the reference agrees


@pytest.mark.parametrize("args", [[], ["pi"], ["pi", "", "0", "extra"], ["pi", "", "lots"]])
def test_bad_command_line_exits_2(fw: list[str], args: list[str]) -> None:
    out = run(fw, *args)
    assert out.returncode == 2 and out.stderr and out.stdout == ""


def test_memhog_over_its_quota_exits_86(fw: list[str]) -> None:
    over = run(fw, "memhog", "bytes=67108864", str(16 << 20))
    assert over.returncode == workloads.EXIT_QUOTA == 86
    assert "out of memory quota" in over.stderr
    under = run(fw, "memhog", "bytes=1048576", str(16 << 20))
    assert under.returncode == 0 and under.stdout == "memhog holds 1048576 bytes\n"


@pytest.mark.parametrize("digits", [1, 2, 8, 9, 10, 17, 18, 50, 100, 1000, 3000])
def test_pi_prints_the_same_digits_as_python(fw: list[str], digits: int) -> None:
    out = run(fw, "pi", f"digits={digits}")
    assert out.returncode == 0
    assert out.stdout == run(PYTHON, "pi", f"digits={digits}").stdout
    assert len(out.stdout) == digits + 3  # "3." + digits + newline


def _numbers(text: str) -> tuple[str, list[float]]:
    """The line with its numbers blanked, and the numbers."""
    pattern = r"-?\d+\.\d+(?:e[-+]\d+)?"
    return re.sub(pattern, "#", text), [float(v) for v in re.findall(pattern, text)]


@pytest.mark.parametrize(
    ("pkg", "n"), [(p, n) for p in ("linpack", "tumatmul") for n in (1, 2, 30, 77)]
)
def test_float_workloads_match_python_in_format_and_value(fw: list[str], pkg: str, n: int) -> None:
    out, ref = run(fw, pkg, f"n={n}"), run(PYTHON, pkg, f"n={n}")
    assert out.returncode == ref.returncode == 0
    shape, values = _numbers(out.stdout)
    ref_shape, ref_values = _numbers(ref.stdout)
    assert shape == ref_shape and shape.endswith("\n")
    if pkg == "linpack":  # residuals are rounding noise: only small matters
        assert values[0] < 1e-9 and ref_values[0] < 1e-9
    else:
        assert values == pytest.approx(ref_values, rel=1e-9, abs=1e-6)


@pytest.mark.parametrize(
    ("pkg", "arg", "met"),
    [
        ("cond_42", 42, True),
        ("cond_42", 41, False),
        ("cond_42", -42, False),
        ("cond_mod", 0, True),
        ("cond_mod", -4, True),
        ("cond_mod", -3, False),
        ("cond_mod", 7, False),
    ],
)
def test_cond_workloads_count_only_when_the_condition_fails(
    fw: list[str], pkg: str, arg: int, met: bool
) -> None:
    out = run(fw, pkg, f"arg={arg},count=12345")
    assert out.returncode == 0
    expected = "condition met, no counting\n" if met else "counted to 12345\n"
    assert out.stdout == expected == run(PYTHON, pkg, f"arg={arg},count=12345").stdout


def test_idle_sleeps_and_says_nothing(fw: list[str]) -> None:
    out = run(fw, "idle", "ms=20")
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")


def test_the_agent_uses_the_binary_it_is_given(
    _native_workloads: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(commands.NATIVE_ENV, _native_workloads)
    commands.native_workload.cache_clear()
    try:
        assert commands.native_workload()[0] == _native_workloads
        assert commands.fallback_notice(["hey", "shell"]) is None
    finally:
        commands.native_workload.cache_clear()


def _one_of_each() -> list[dict[str, Any]]:
    return [{"id": i, "pkg": pkg} for i, pkg in enumerate(sorted(pkgs.BUILTIN_PKGS))]


def test_agent_runs_builtins_natively_without_a_notice(
    agent_factory: Callable[..., AgentProcess], _native_workloads: str
) -> None:
    client = agent_factory().connect()
    tasks = [*_one_of_each(), {"id": 99, "pkg": "idle", "config": {"ms": 3000}}]
    client.call("start", tasks=tasks)
    (start,) = client.collect(
        lambda evs: any(e["type"] == "START" and e["task_id"] == 99 for e in evs)
    )[-1:]
    assert os.readlink(f"/proc/{start['pid']}/exe") == _native_workloads  # not a python
    events = client.wait_done([t["id"] for t in tasks])
    assert [e for e in events if e["type"] == "NOTICE"] == []
    ends = {e["task_id"]: e for e in events if e["type"].startswith("EXIT")}
    assert {e["type"] for e in ends.values()} == {"EXIT"}, ends
    for task in tasks[:-1]:
        line = DEFAULT_LINES[task["pkg"]].replace("task 7 job 3", f"task {task['id']} job 0")
        assert re.fullmatch(line + ("\n" if line else ""), ends[task["id"]]["output"])


def test_agent_falls_back_to_python_with_one_notice(
    agent_factory: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    missing = str(tmp_path / "no-such-farm-workload")
    client = agent_factory(env={commands.NATIVE_ENV: missing}).connect()
    tasks = _one_of_each()
    events = client.run_taskset(tasks)
    (notice,) = [e for e in events if e["type"] == "NOTICE"]
    assert (notice["task_id"], notice["job"]) == (-1, None)
    assert "run as Python" in notice["detail"] and missing in notice["detail"]
    ends = [e for e in events if e["type"].startswith("EXIT")]
    assert len(ends) == len(tasks) and {e["type"] for e in ends} == {"EXIT"}
    seen = len(events)
    events = client.run_taskset([{"id": 50, "pkg": "shell", "config": {"command": "true"}}])
    assert [e for e in events[seen:] if e["type"] == "NOTICE"] == []  # no built-in, nothing to say


# -- the cached compilation (farm image build) ---------------------------------------------


def test_build_native_compiles_once_per_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for path in native.sources():
        (src / path.name).write_bytes(path.read_bytes())
    cache = tmp_path / "cache"
    first, key = native.build_native(cache, src)
    assert first == cache / key / "farm-workload" and os.access(first, os.X_OK)
    assert run([str(first)], "hey", "").stdout == "Hey! I am task 7 job 3.\n"
    compiles: list[list[str]] = []
    real_run = subprocess.run

    def counting_run(argv: list[str], *args: Any, **kwargs: Any) -> Any:
        if "-static" in argv:
            compiles.append(argv)
        return real_run(argv, *args, **kwargs)

    monkeypatch.setattr(native.subprocess, "run", counting_run)
    assert native.build_native(cache, src) == (first, key) and compiles == []
    header = src / "workloads.h"
    header.write_text(header.read_text() + "\n/* changed */\n")  # a header counts too
    second, key2 = native.build_native(cache, src)
    assert key2 != key and len(compiles) == 1 and second.is_file()
    assert not first.exists()  # the old key's build is gone
    host = native.install_host_copy(second, tmp_path)
    assert host == tmp_path / "farm-workload" and host.read_bytes() == second.read_bytes()


def test_build_native_reports_compile_errors(tmp_path: Path) -> None:
    (tmp_path / "broken.c").write_text("int main(void) { return x; }\n")
    with pytest.raises(ImageError, match=r"compiling farm-workload failed"):
        native.build_native(tmp_path / "cache", tmp_path)
    with pytest.raises(ImageError, match="holds no C source"):
        native.build_native(tmp_path / "cache", tmp_path / "cache")
