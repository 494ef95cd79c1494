"""Unpacking the kernel source tarball: safe, and working on Debian 12's own Python (3.11.2).

``TarFile.extractall(filter=...)`` only exists from 3.11.4; farm once called it and
`scripts/run` failed with the distribution's python3. The interpreter test runs the
extraction under ``/usr/bin/python3`` itself, so such a call fails here again.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from farm.image.kernel_source import extract_tree

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DISTRO_PYTHON = Path("/usr/bin/python3")


def _tarball(path: Path, *members: tarfile.TarInfo, body: bytes = b"x") -> Path:
    with tarfile.open(path, "w:xz") as tar:
        for m in members:
            tar.addfile(m, io.BytesIO(body) if m.isfile() else None)
    return path


def _file(name: str, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode = 1, mode
    return info


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def test_a_source_tree_with_inner_links_is_extracted(tmp_path: Path) -> None:
    tb = _tarball(
        tmp_path / "src.tar.xz",
        _file("linux-6.12/Makefile"),
        _file("linux-6.12/scripts/setuid", mode=0o4755),
        _link("linux-6.12/arch/link", "../Makefile"),
        _link("linux-6.12/hard", "linux-6.12/Makefile", tarfile.LNKTYPE),
    )
    dest = tmp_path / "out"
    dest.mkdir()
    with tarfile.open(tb) as tar:
        extract_tree(tar, dest)
    assert (dest / "linux-6.12/Makefile").read_bytes() == b"x"
    assert os.readlink(dest / "linux-6.12/arch/link") == "../Makefile"
    assert (dest / "linux-6.12/hard").read_bytes() == b"x"
    assert not (dest / "linux-6.12/scripts/setuid").stat().st_mode & 0o7000  # no set-id bits


@pytest.mark.parametrize(
    "member",
    [
        _file("../escape"),
        _file("/abs/path"),
        _link("linux/evil", "../../etc/passwd"),
        _link("linux/hard", "/etc/passwd", tarfile.LNKTYPE),
    ],
    ids=["dotdot", "absolute", "symlink-out", "hardlink-out"],
)
def test_members_that_leave_the_destination_are_refused(
    tmp_path: Path, member: tarfile.TarInfo
) -> None:
    tb = _tarball(tmp_path / "bad.tar.xz", member)
    dest = tmp_path / "out"
    dest.mkdir()
    with tarfile.open(tb) as tar, pytest.raises(tarfile.TarError):
        extract_tree(tar, dest)
    assert not (tmp_path / "escape").exists()


def test_extraction_runs_on_the_distributions_python(tmp_path: Path) -> None:
    if not DISTRO_PYTHON.exists():
        if Path("/etc/debian_version").exists():
            pytest.fail("Debian/Ubuntu without /usr/bin/python3: the users' interpreter is missing")
        pytest.skip("not a Debian/Ubuntu machine: no distribution python3 to test")
    tb = _tarball(tmp_path / "src.tar.xz", _file("linux-6.12/Makefile"))
    code = (
        "import sys, tarfile; from pathlib import Path\n"
        "from farm.image.kernel_source import extract_tree\n"
        "with tarfile.open(sys.argv[1]) as t: extract_tree(t, Path(sys.argv[2]))\n"
        "print(sys.version.split()[0])\n"
    )
    (tmp_path / "out").mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run(
        [str(DISTRO_PYTHON), "-c", code, str(tb), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, f"{DISTRO_PYTHON}: {res.stderr}"
    assert (tmp_path / "out/linux-6.12/Makefile").read_bytes() == b"x"
