"""The README's two commands from a fresh clone: ``scripts/run`` and ``scripts/test``.

Clones the repository's committed HEAD into a temporary dir; the scripts
create a fresh virtualenv in the clone (``scripts/setup``), build the guest
image there and run. Only the image builder's caches are seeded from this
checkout: its downloads (``images/cache/debs``: Debian packages, verified by
SHA256 when used), so the test needs no apt download, and farm's compiled
kernel (``images/cache/kernel-build``, keyed by source package, config,
patches and compiler), so it does not compile the kernel a second time (CI's
own run of scripts/test on its fresh clone does). The image itself (vmlinux
and initrd) is built anew in the clone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def clone() -> Iterator[Path]:
    """A fresh clone of HEAD (module scope: both commands share its venv)."""
    with tempfile.TemporaryDirectory(prefix="frc-") as tmp:
        path = Path(tmp) / "farm"
        subprocess.run(
            ["git", "clone", "-q", "--no-hardlinks", str(REPO), str(path)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        for cache in ("debs", "kernel-build"):
            seed = REPO / "images" / "cache" / cache
            if seed.is_dir():
                shutil.copytree(seed, path / "images" / "cache" / cache, copy_function=os.link)
        try:
            yield path
        finally:
            left = [
                p
                for p in psutil.process_iter(["cmdline"])
                if str(path) in " ".join(p.info["cmdline"] or [])
            ]
            for proc in left:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            assert not left, f"processes left behind: {left}"


def script(clone: Path, *argv: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return subprocess.run(
        list(argv), cwd=clone, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.timeout(1500)
def test_scripts_run_from_a_fresh_clone(clone: Path) -> None:
    res = script(clone, "scripts/run", "--json", timeout=1400)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-5000:])
    assert (clone / ".venv" / "bin" / "farm").exists()  # the venv is the clone's own
    assert (clone / "images" / "image.elf").is_file()
    summary = json.loads(res.stdout)  # one JSON document: setup and image build use stderr
    job = summary["job"]
    assert job["total"] == 9 and job["finished"] == 9 and job["bad"] == 0, summary
    with sqlite3.connect(clone / "results.db") as db:
        assert db.execute("SELECT COUNT(*) FROM tasksets WHERE state='finished'").fetchone() == (9,)
    assert (clone / "log" / "monitor.log").is_file()
    assert (clone / "log" / "distributor.log").is_file()


@pytest.mark.timeout(1500)
def test_scripts_test_quick_selection_from_a_fresh_clone(clone: Path) -> None:
    res = script(clone, "scripts/test", "-m", "unit", "-q", "-x", "-p", "no:cacheprovider",
                 timeout=1400)  # fmt: skip
    assert res.returncode == 0, (res.stdout[-5000:], res.stderr[-3000:])
    assert "== ruff" in res.stdout and "== mypy" in res.stdout and "== pytest" in res.stdout
    assert " passed" in res.stdout.splitlines()[-1]
