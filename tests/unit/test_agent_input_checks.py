"""Agent inputs that used to slip through or crash: huge quota strings, names with a newline."""

from __future__ import annotations

from pathlib import Path

import pytest

from farm.agent.binaries import BadBinary, BinaryStore
from farm.agent.taskspec import InvalidTaskSet, parse_quota, parse_taskset


@pytest.mark.parametrize("text", ["9" * 4300, "1" * 5000 + "M", " " + "0" * 10_000, "1" * 31])
def test_huge_quota_string_is_invalid_not_a_crash(text: str) -> None:
    with pytest.raises(InvalidTaskSet, match="quota") as info:
        parse_quota(3, text)
    assert len(str(info.value)) < 200  # the message does not echo thousands of digits


def test_huge_quota_in_a_taskset_names_the_key() -> None:
    with pytest.raises(InvalidTaskSet, match="quota"):
        parse_taskset([{"id": 0, "pkg": "hey", "quota": "7" * 4400}])


@pytest.mark.parametrize("text", ["1\n", "12M\n"])
def test_trailing_whitespace_in_quota_still_parses(text: str) -> None:
    assert parse_quota(0, text) in (1, 12 << 20)


@pytest.mark.parametrize("text", ["\u0661\u0662", "1\u0664M"])  # Arabic-Indic digits
def test_quota_digits_are_ascii(text: str) -> None:
    with pytest.raises(InvalidTaskSet):
        parse_quota(0, text)


@pytest.mark.parametrize("name", ["x\n", "ok\n", "a\nb", "\u00e9t\u00e9", ".hidden", "", "a" * 65])
def test_bad_binary_names_fail_the_name_check(tmp_path: Path, name: str) -> None:
    with pytest.raises(BadBinary, match="not a plain file name"):
        BinaryStore(tmp_path / "bin").decode_all({name: "AAAA"})


def test_good_binary_name_passes(tmp_path: Path) -> None:
    assert BinaryStore(tmp_path / "bin").decode_all({"my-tool_1.2": "AAAA"}) == {
        "my-tool_1.2": b"\0\0\0"
    }
