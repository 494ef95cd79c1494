"""One image CLI: ``python -m farm.image`` is ``farm image`` (flags, exit codes, defaults)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

import farm.image
from farm.cli.image import COMPRESSIONS, KERNELS
from farm.errors import ConfigError, ImageError
from farm.image import builder, cpio
from farm.image.__main__ import main


class FakeInfo:
    def to_dict(self) -> dict[str, Any]:
        return {"kernel": "k"}


def test_choices_match_the_builder() -> None:
    assert KERNELS == builder.KERNEL_FLAVORS
    assert set(COMPRESSIONS) == set(cpio.COMPRESSIONS)


def test_alias_passes_every_flag_to_build(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(farm.image, "build", lambda **kw: calls.append(kw) or FakeInfo())
    args = ["build", "--force", "--out-dir", str(tmp_path / "o"), "--cache", str(tmp_path / "c")]
    assert main([*args, "--kernel", "debian", "--compression", "gzip"]) == 0
    assert calls == [
        {
            "force": True,
            "out_dir": tmp_path / "o",
            "cache_dir": tmp_path / "c",
            "kernel": "debian",
            "compression": "gzip",
        }
    ]
    assert '"kernel": "k"' in capsys.readouterr().out
    assert main(["build"]) == 0
    assert calls[-1]["out_dir"] is None and calls[-1]["cache_dir"] is None  # farm.paths decides


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["build", "--kernel", "nope"], 2),
        (["build", "--no-such-flag"], 2),
        (["nope"], 2),
        (["--help"], 0),
    ],
)
def test_bad_input_exits_2_like_the_rest_of_the_cli(argv: list[str], code: int) -> None:
    assert main(argv) == code


@pytest.mark.parametrize(("error", "code"), [(ImageError("no apt"), 1), (ConfigError("bad"), 2)])
def test_build_errors_map_to_farms_exit_codes(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: Exception,
    code: int,
) -> None:
    def fail(**_: Any) -> None:
        raise error

    monkeypatch.setattr(farm.image, "build", fail)
    assert main(["build"]) == code
    assert f"farm: error: {error}" in capsys.readouterr().err


def test_build_steps_are_shown_once_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def build(**_: Any) -> FakeInfo:
        logging.getLogger("farm.image.builder").info("building image.elf (no previous build)")
        return FakeInfo()

    monkeypatch.setattr(farm.image, "build", build)
    assert main(["build"]) == 0
    err = capsys.readouterr().err
    assert err.count("farm image: building image.elf (no previous build)") == 1, err
    assert logging.getLogger("farm.image").propagate  # restored after the command
