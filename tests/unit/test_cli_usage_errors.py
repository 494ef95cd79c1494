"""Usage errors in the one-line ``farm: error: ...`` format the docs promise, exit 2."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from farm.cli.root import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run"], "Missing argument 'TASKSET' (see farm run --help)"),
        (["bogus"], "No such command 'bogus' (see farm --help)"),
        (["--bogus"], "No such option '--bogus'"),
        (["run", "x", "--machines", "z"], "'z' is not a valid integer"),
        (["list", "--nope"], "No such option '--nope' (see farm list --help)"),
    ],
)
def test_usage_errors_are_one_line(argv: list[str], message: str) -> None:
    res = CliRunner().invoke(main, argv, prog_name="farm")
    assert res.exit_code == 2, res.output
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("farm: error: "), res.stderr
    assert message in lines[0]
    assert "Usage:" not in res.output


def test_no_arguments_still_shows_the_help() -> None:
    res = CliRunner().invoke(main, [], prog_name="farm")
    assert "Usage: farm" in res.output and "farm: error" not in res.output
