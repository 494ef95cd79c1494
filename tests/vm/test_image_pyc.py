"""The image's bytecode: unchecked-hash pycs the guest never recompiles nor checks at boot."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import PurePosixPath

import pytest

from farm.image import ImageInfo

#: pyc flags word: bit 0 = hash-based, bit 1 = check_source; unchecked hash = 0b01
UNCHECKED_HASH = 1


def read_newc(data: bytes) -> dict[str, bytes]:
    """Regular files of an uncompressed newc cpio archive: path -> contents."""
    files: dict[str, bytes] = {}
    pos = 0
    while True:
        assert data[pos : pos + 6] == b"070701", f"no newc header at {pos}"
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = data[pos + 110 : pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        if name == "TRAILER!!!":
            return files
        if mode & 0o170000 == 0o100000:
            files[name] = data[pos : pos + size]
        pos += size
        pos += -pos % 4


@pytest.fixture(scope="module")
def initrd_files(image: ImageInfo) -> dict[str, bytes]:
    data = image.initrd.read_bytes()
    if data[:6] != b"070701":
        pytest.fail(f"{image.initrd} is compressed; this test reads the default (none)")
    return read_newc(data)


def test_every_pyc_is_unchecked_hash_for_this_python(initrd_files: dict[str, bytes]) -> None:
    pycs = {n: d for n, d in initrd_files.items() if n.endswith(".pyc")}
    assert len(pycs) > 50
    magic = importlib.util.MAGIC_NUMBER if sys.version_info[:2] == (3, 11) else None
    for name, data in pycs.items():
        assert int.from_bytes(data[4:8], "little") == UNCHECKED_HASH, name
        if magic is not None:
            assert data[:4] == magic, name


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="source_hash of python 3.11 only")
def test_agent_pycs_match_the_shipped_sources(initrd_files: dict[str, bytes]) -> None:
    """A stale pyc would run old code: the guest does not check it against the source."""
    sources = {
        n: d for n, d in initrd_files.items() if n.startswith("opt/farm/") and n.endswith(".py")
    }
    assert "opt/farm/farm/agent/__main__.py" in sources
    for name, source in sources.items():
        path = PurePosixPath(name)
        pyc = str(path.parent / "__pycache__" / f"{path.stem}.cpython-311.pyc")
        assert pyc in initrd_files, f"{name} ships without its pyc: compiled at every boot"
        assert initrd_files[pyc][8:16] == importlib.util.source_hash(source), name
