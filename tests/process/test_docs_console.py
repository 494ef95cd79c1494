"""Every ```console block of README.md and docs/*.md runs here and prints what it shows.

A block is a sequence of ``$ COMMAND`` lines, each followed by its expected
output (stdout and stderr together). Each block runs in a fresh empty
directory with ``farm`` on the PATH (this checkout); its commands run one
after the other through bash. Output is compared after masking what changes
from run to run: timestamps, decimal fractions (durations, rates), hex digests (keys) and
absolute paths. In expected output, ``...`` inside a line matches any text and
a line of its own ``...`` any number of lines. A block that cannot run here
(another machine's output, a farm running in a second process) is preceded by
``<!-- console: skip (WHY) -->``; the reason is required and shown by pytest.
A false claim in such a block therefore fails the suite.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SKIP = re.compile(r"<!--\s*console:\s*skip\s*(?:\((?P<why>[^)]*)\))?\s*-->")
_FRACTION = re.compile(r"\d+\.\d+")
_TIME = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d")
_HEX = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{10,}\b")
_PATH = re.compile(r"(?<![\w.])/(?:[\w.+-]+/)*[\w.+-]+")


@dataclass
class Block:
    doc: Path
    line: int
    skip: str | None
    steps: list[tuple[str, list[str]]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


def console_blocks(path: Path) -> list[Block]:
    """The ```console blocks of one document, with their skip markers."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```console":
            i += 1
            continue
        before = next((ln for ln in reversed(lines[:i]) if ln.strip()), "")
        marker = SKIP.search(before)
        if marker is not None and not (marker.group("why") or "").strip():
            raise AssertionError(f"{path}:{i}: console skip marker without a (reason)")
        block = Block(path, i + 1, marker.group("why").strip() if marker else None)
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            text = lines[i]
            if text.startswith("$ "):
                block.steps.append((text[2:], []))
            elif block.steps:
                block.steps[-1][1].append(text)
            else:
                raise AssertionError(f"{path}:{i + 1}: console output before any '$ ' command")
            i += 1
        blocks.append(block)
        i += 1
    return blocks


BLOCKS = [b for doc in DOCS for b in console_blocks(doc)]


def mask(text: str) -> str:
    text = _TIME.sub("<TIME>", text)
    text = _HEX.sub("<HEX>", text)
    text = _PATH.sub("<PATH>", text)
    return _FRACTION.sub("<N>", text)


def matches(expected: list[str], actual: str) -> bool:
    """``actual`` (masked) matches the expected lines (masked, with ``...`` wildcards)."""
    pattern = []
    for line in expected:
        line = mask(line.rstrip())
        if line.strip() == "...":
            pattern.append(r"(?:[^\n]*\n)*?")
            continue
        pattern.append(".*".join(re.escape(part) for part in line.split("...")) + r"\n")
    got = "".join(mask(ln.rstrip()) + "\n" for ln in actual.rstrip("\n").splitlines())
    if not expected:
        return got.strip() == ""
    return re.fullmatch("".join(pattern), got) is not None


@pytest.fixture
def shell_env(tmp_path: Path) -> dict[str, str]:
    """A PATH whose ``farm`` is this checkout's, and none of the caller's farm settings."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    farm = bin_dir / "farm"
    farm.write_text(
        f"#!/bin/sh\nPYTHONPATH={shlex.quote(str(REPO))} "
        f'exec {shlex.quote(sys.executable)} -m farm.cli "$@"\n'
    )
    farm.chmod(0o755)
    drop = ("FARM_CONFIG", "FARM_TOKEN", "FARM_STATE_DIR", "LIBVIRT_DEFAULT_URI", "PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(PATH=f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}", COLUMNS="120")
    return env


def test_docs_have_console_blocks_and_most_run() -> None:
    runnable = [b for b in BLOCKS if b.skip is None]
    assert len(runnable) >= 4, [b.id for b in BLOCKS]
    assert len(runnable) > len(BLOCKS) - len(runnable)  # skipping is the exception


@pytest.mark.timeout(600)
@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.id)
def test_console_block(block: Block, tmp_path: Path, shell_env: dict[str, str]) -> None:
    if block.skip is not None:
        pytest.skip(f"{block.id}: {block.skip}")
    work = tmp_path / "work"
    work.mkdir()
    for command, expected in block.steps:
        res = subprocess.run(
            ["bash", "-c", command],
            cwd=work,
            env=shell_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=300,
        )
        assert matches(expected, res.stdout), (
            f"{block.id}: `{command}` printed\n{res.stdout}\nbut the doc shows\n"
            + "\n".join(expected)
        )
