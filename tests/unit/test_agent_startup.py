"""The agent's fast start: argv parsing without argparse, and held log records."""

from __future__ import annotations

import logging
import random

import pytest

from farm.agent import logs
from farm.agent.__main__ import _parse_fast, _parser, parse_args

FLAGS = ["--port", "--host", "--token", "--heartbeat", "--port-file", "--log-level"]
VALUES = ["0", "3001", "127.0.0.1", "tok", "1.5", "-1", "x", "/tmp/p", "DEBUG", "abc"]


def test_fast_parser_agrees_with_argparse_on_random_command_lines() -> None:
    rng = random.Random(11)
    parser = _parser()
    for _ in range(2000):
        argv: list[str] = []
        for _ in range(rng.randint(0, 4)):
            flag = rng.choice(FLAGS)
            value = rng.choice(VALUES)
            argv += [f"{flag}={value}"] if rng.random() < 0.3 else [flag, value]
        fast = _parse_fast(argv)
        if fast is None:
            continue  # argparse decides: same behaviour by construction
        assert vars(fast) == vars(parser.parse_args(argv)), argv


def test_refused_forms_fall_back_to_argparse() -> None:
    assert _parse_fast(["--help"]) is None
    assert _parse_fast(["--po", "1"]) is None  # abbreviation: argparse's business
    assert _parse_fast(["--port", "notanumber"]) is None
    with pytest.raises(SystemExit):
        parse_args(["--port", "notanumber"])
    assert parse_args(["--port", "7", "--token", "t"]).port == 7


def test_held_records_are_written_in_order_after_release(caplog: pytest.LogCaptureFixture) -> None:
    log = logs.get_logger("farm.agent.test")
    logs.hold("DEBUG")
    try:
        log.info("first %d", 1)
        log.warning("second")
        assert not [r for r in caplog.records if r.name == "farm.agent.test"]
    finally:
        with caplog.at_level(logging.DEBUG, logger="farm.agent.test"):
            logs.release()
    got = [r.getMessage() for r in caplog.records if r.name == "farm.agent.test"]
    assert got == ["first 1", "second"]
    log.warning("direct")  # after release: straight to logging
    assert [r.getMessage() for r in caplog.records if r.name == "farm.agent.test"][-1] == "direct"
