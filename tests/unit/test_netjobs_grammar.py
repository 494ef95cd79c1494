"""NetJobs config grammar (seed 003): every rule and every error, with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from farm.errors import ConfigError
from farm.netjobs.grammar import (
    ALL,
    NetJobsSyntaxError,
    parse_duration,
    parse_file,
    parse_text,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "netjobs"

SEED_EXAMPLE = """\
test0:
-generaltimeout: none
-minhosts: all
localhost: "echo 'hello, world'"
-timeout: 1s
end

test1:
-generaltimeout: 5m
-minhosts: 0
172.17.1.19: "./some_test_script.sh"
-timeout: 30s
182.17.1.20: "./other_test_script.sh"
182.17.1.20: "./and_another_test_script.sh"
end
"""


def test_seed_example_parses_exactly() -> None:
    test0, test1 = parse_text(SEED_EXAMPLE)
    assert test0.label == "test0" and test0.minhosts == ALL and test0.generaltimeout is None
    (only,) = test0.targets
    assert (only.target, only.command, only.timeout, only.line) == (
        "localhost",
        "echo 'hello, world'",
        1.0,
        4,
    )
    assert test0.required == 1
    assert test1.minhosts == 0 and test1.required == 0 and test1.generaltimeout == 300.0
    assert [(t.target, t.command, t.timeout) for t in test1.targets] == [
        ("172.17.1.19", "./some_test_script.sh", 30.0),  # -timeout overrides
        ("182.17.1.20", "./other_test_script.sh", 300.0),  # -generaltimeout is the default
        ("182.17.1.20", "./and_another_test_script.sh", 300.0),
    ]


def test_shipped_example_configs_parse() -> None:
    for path in [*DATA.glob("*.cfg"), *(DATA.parents[2] / "examples" / "netjobs").glob("*.cfg")]:
        config = parse_file(path)
        assert config.tests and config.path == path


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("330s", 330.0), ("5m", 300.0), ("1h", 3600.0), ("0s", 0.0), ("1.5m", 90.0),
     ("none", None), ("NONE", None), (" 2s ", 2.0), ("0.25s", 0.25)],
)  # fmt: skip
def test_durations(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "-5s", "5x", "s", "five m", "5 m s", "inf", "1e3s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_comments_blank_lines_and_whitespace_around_colons() -> None:
    (test,) = parse_text(
        "# a comment\n\n   # indented comment\nlab_1 :\n  -generaltimeout :  2m\n"
        "-minhosts:1\n  host:3002 :   \"run it\"  \n -timeout :none\n h2:'single quoted'\nend\n"
    )
    assert test.label == "lab_1" and test.minhosts == 1 and test.generaltimeout == 120.0
    assert [(t.target, t.command, t.timeout) for t in test.targets] == [
        ("host:3002", "run it", None),
        ("h2", "single quoted", 120.0),
    ]


def test_command_keeps_inner_quotes_and_colons() -> None:
    (test,) = parse_text('t:\n[::1]:3001: "echo \\"a: b\\" \'c\'"\nend\n')
    assert test.targets[0].target == "[::1]:3001"
    assert test.targets[0].command == "echo \\\"a: b\\\" 'c'"


def test_flags_are_case_insensitive_and_minhosts_all_any_case() -> None:
    (test,) = parse_text('t:\n-MinHosts: ALL\n-GeneralTimeout: 1h\nh: "x"\nend\n')
    assert test.minhosts == ALL and test.generaltimeout == 3600.0


ERRORS = [
    # (config text, line, fragment of what was expected)
    ("garbage\n", 1, "a test label"),
    ("t: extra\n", 1, "a test label"),
    ("end\n", 1, "a test label"),
    ("t:\nh: \"x\"\nend\nt:\nh: \"y\"\nend\n", 4, "already defined"),
    ("t:\nend\n", 2, "a target line"),
    ("t:\nh: \"x\"\n", 3, "'end' closing test 't' (opened at line 1)"),
    ("", 1, "at least one test block"),
    ("# only a comment\n", 1, "at least one test block"),
    ("t:\nh: \"x\"\n-generaltimeout: 5s\nend\n", 3, "before any target"),
    ("t:\nh: \"x\"\n-minhosts: 1\nend\n", 3, "before any target"),
    ("t:\n-minhosts: 1\n-minhosts: 1\nh: \"x\"\nend\n", 3, "already set"),
    ("t:\n-generaltimeout: 1s\n-generaltimeout: 2s\nh: \"x\"\nend\n", 3, "already set"),
    ("t:\n-timeout: 5s\nh: \"x\"\nend\n", 2, "-timeout only right after a target"),
    ("t:\nh: \"x\"\n-timeout: 5s\n-timeout: 6s\nend\n", 4, "-timeout only right after"),
    ("t:\n-verbose: yes\nh: \"x\"\nend\n", 2, "-generaltimeout, -minhosts, -timeout or -agent"),
    ("t:\n-minhosts\nh: \"x\"\nend\n", 2, "a flag '-NAME: VALUE'"),
    ("t:\n-minhosts: some\nh: \"x\"\nend\n", 2, "'all' or a non-negative integer"),
    ("t:\n-minhosts: -1\nh: \"x\"\nend\n", 2, "'all' or a non-negative integer"),
    ("t:\n-minhosts: 3\nh: \"x\"\nh2: \"y\"\nend\n", 2, "-minhosts of at most 2"),
    ("t:\n-generaltimeout: 5\nh: \"x\"\nend\n", 2, "a duration like 30s"),
    ("t:\nh: \"x\"\n-timeout: soon\nend\n", 3, "a duration like 30s"),
    ("t:\nh: x\nend\n", 2, "quoted command"),
    ("t:\nh \"x\"\nend\n", 2, "':' between the target and its quoted command"),
    ("t:\n: \"x\"\nend\n", 2, "a target (host, host:port or machine name)"),
    ("t:\nmy host: \"x\"\nend\n", 2, "a target (host, host:port or machine name)"),
    ("t:\nh: \"x\n", 2, "closing quote"),
    ("t:\nh: \"x\" trailing\nend\n", 2, "closing quote"),
    ("t:\nh: \"   \"\nend\n", 2, "a non-empty command"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "expected"), ERRORS)
def test_every_error_names_file_line_and_expectation(text: str, line: int, expected: str) -> None:
    with pytest.raises(NetJobsSyntaxError) as info:
        parse_text(text, "my.cfg")
    err = info.value
    assert isinstance(err, ConfigError)
    assert (err.file, err.line) == ("my.cfg", line), str(err)
    assert expected in err.expected, str(err)
    assert str(err).startswith(f"my.cfg:{line}: expected ")


def test_parse_file_errors_name_the_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.cfg"
    path.write_text('t:\nh: "x"\n-timeout: 10 seconds\nend\n')
    with pytest.raises(NetJobsSyntaxError, match=rf"^{path}:3: expected a duration"):
        parse_file(path)
    with pytest.raises(ConfigError, match="cannot read NetJobs config"):
        parse_file(tmp_path / "missing.cfg")
