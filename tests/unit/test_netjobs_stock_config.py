"""NetJobs: choosing stock NetJobsAgent targets (-agent, --agent), NUL commands, -h."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from farm.cli.root import main as cli_main
from farm.errors import ConfigError
from farm.netjobs.grammar import NetJobsSyntaxError, parse_text
from farm.netjobs.stock import check_command


def test_agent_flag_for_the_test_and_per_target() -> None:
    (test,) = parse_text(
        't:\n-agent: netjobs\na: "x"\nb: "y"\n-timeout: 1s\n-agent: farm\nc: "z"\nend\n'
    )
    assert [(t.target, t.agent) for t in test.targets] == [
        ("a", "netjobs"),
        ("b", "farm"),
        ("c", "netjobs"),
    ]
    (plain,) = parse_text('t:\na: "x"\nend\n')
    assert plain.targets[0].agent is None  # the run's default (--agent)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('t:\n-agent: seer\na: "x"\nend\n', "-agent value 'farm' or 'netjobs'"),
        ('t:\na: "x"\n-agent: farm\n-agent: netjobs\nend\n', "-agent is already set"),
        ('t:\na: "x\0y"\nend\n', "without NUL"),
    ],
)
def test_bad_agent_flags_and_nul_commands(text: str, expected: str) -> None:
    with pytest.raises(NetJobsSyntaxError, match=expected):
        parse_text(text)


@pytest.mark.parametrize("command", ["a\0b", "a\tb", "a\nb"])
def test_stock_agent_cannot_carry_some_commands(command: str) -> None:
    with pytest.raises(ConfigError, match="cannot be run"):
        check_command(command)


def test_farm_netjobs_dash_h_prints_help() -> None:
    result = CliRunner().invoke(cli_main, ["netjobs", "-h"])
    assert result.exit_code == 0, result.output
    assert "--agent [farm|netjobs]" in result.output and "UNAUTHENTICATED" in result.output


def test_nul_in_a_programmatic_command_is_an_error_of_that_target() -> None:
    """A TestBlock built in Python bypasses the parser: the runner refuses it itself."""
    from farm.netjobs.grammar import Target, TestBlock
    from farm.netjobs.runner import Status, TestRunner
    from farm.netjobs.targets import Resolver
    from tests.unit.test_netjobs_runner import FakeFarm

    farm = FakeFarm()
    runner = TestRunner(farm.connect, Resolver(3001), lead=0.05, poll_wait=0.01)
    block = TestBlock(
        "t",
        (Target("127.0.0.1", "echo a\0b", None, 2), Target("127.0.0.2", "sleep 0.01", None, 3)),
        0,
        None,
        1,
    )
    result = runner.run(block)
    bad, good = result.results
    assert (bad.status, bad.detail) == (Status.ERROR, "command contains a NUL character: not run")
    assert good.status is Status.SUCCESS and result.passed
