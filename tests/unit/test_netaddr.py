"""The one host:port parser (target pool and NetJobs targets)."""

from __future__ import annotations

import pytest

from farm.errors import ConfigError
from farm.netaddr import split_host_port


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("h", ("h", None)),
        ("h:3001", ("h", 3001)),
        ("10.0.0.1:1", ("10.0.0.1", 1)),
        ("[fd00::1]:65535", ("fd00::1", 65535)),
        ("[fd00::1]", ("fd00::1", None)),
        ("fd00::1", ("fd00::1", None)),  # a bare IPv6 address has no port
    ],
)
def test_good(text: str, expected: tuple[str, int | None]) -> None:
    assert split_host_port(text) == expected


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("h:0", "1..65535"),
        ("h:65536", "1..65535"),
        ("h:x", "1..65535"),
        (":5", "no host"),
        ("[]:5", "no host"),
        ("[::1", "missing ']'"),
        ("[::1]x", "[address]:port"),
    ],
)
def test_bad_names_the_text(text: str, word: str) -> None:
    with pytest.raises(ConfigError) as err:
        split_host_port(text)
    assert word in str(err.value) and repr(text) in str(err.value)
