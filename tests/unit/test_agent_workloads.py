"""The built-in workloads, run in-process (cheap configs only, no memory limit)."""

from __future__ import annotations

import pytest

from farm.agent import pkgs, workloads


def test_every_builtin_pkg_has_a_workload() -> None:
    assert set(workloads.RUNNERS) == set(pkgs.BUILTIN_PKGS) == set(workloads.SCHEMAS)


@pytest.mark.parametrize(
    ("pkg", "config", "output"),
    [
        ("hey", "", "Hey! I am task"),
        ("namaste", "", "Namaste from task"),
        ("pi", "digits=10", "3.1415926535\n"),
        ("cond_42", "arg=42", "condition met"),
        ("cond_42", "arg=1,count=10", "counted to 10"),
        ("cond_mod", "arg=4", "condition met"),
        ("cond_mod", "arg=3,count=5", "counted to 5"),
        ("linpack", "n=8", "linpack n=8 residual="),
        ("tumatmul", "n=4", "tumatmul n=4 trace="),
        ("idle", "ms=0.5", ""),
        ("memhog", "bytes=10000", "memhog holds 10000 bytes"),
        ("pi", '{"arg1": 5}', "3.14159\n"),  # taskgen's key and JSON form
    ],
)
def test_workload_runs(
    pkg: str, config: str, output: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert workloads.main([pkg, config]) == 0
    assert output in capsys.readouterr().out


def test_bad_command_lines(capsys: pytest.CaptureFixture[str]) -> None:
    assert workloads.main(["pi"]) == workloads.EXIT_USAGE
    assert workloads.main(["nope", ""]) == workloads.EXIT_USAGE
    assert workloads.main(["pi", "digits"]) == workloads.EXIT_USAGE
    assert workloads.main(["pi", "[1]"]) == workloads.EXIT_USAGE


def test_check_config() -> None:
    assert workloads.check_config("pi", {"digits": 5}) is None
    assert workloads.check_config("pi", {"digits": 5.0}) is None
    assert "config.digits" in (workloads.check_config("pi", {"digits": 5.5}) or "")
    assert "config.digits" in (workloads.check_config("pi", {"digits": True}) or "")
    assert "outside" in (workloads.check_config("linpack", {"n": 10**6}) or "")
    assert "finite" in (workloads.check_config("idle", {"ms": float("inf")}) or "")
    assert workloads.check_config("hey", {"anything": "ignored"}) is None


def test_encode_config_resolves_defaults_and_round_trips() -> None:
    text = workloads.encode_config("cond_42", {"arg1": 7})
    assert text == "arg=7,count=100000"
    assert workloads._parse_config(text) == {"arg": 7, "count": 100000}
    assert workloads._parse_config(workloads.encode_config("idle", {"ms": 2.5})) == {"ms": 2.5}
