"""``farm run example.Hey0TaskSet --machines 2 --json`` end to end on real QEMU guests (TCG).

The default backend (libvirt's embedded driver, user-mode networking) in a
child process, as a user runs it; meanwhile ``farm status --json`` from a
third process sees the two machines. Afterwards nothing of the run is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from farm.image import ImageInfo

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short dir (UNIX socket and libvirt paths stay short) with a farm.toml for TCG guests."""
    with tempfile.TemporaryDirectory(prefix="fcli-") as tmp:
        path = Path(tmp)
        (path / "farm.toml").write_text(
            f'image_dir = "{REPO / "images"}"\nidle_linger = 0.5\n'
            '[profile]\naccel = "tcg"\nmemory = 256\n'
        )
        try:
            yield path
        finally:
            left = leftovers(path)
            for proc in left:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            assert not left, f"processes left behind: {left}"


def leftovers(path: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and str(path) in " ".join(
                proc.info["cmdline"] or []
            ):
                found.append(proc)
    return found


def farm(cwd: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "farm.cli", *args]


@pytest.mark.timeout(900)
def test_farm_run_two_guests_json(workdir: Path, image: ImageInfo) -> None:
    """``image`` (tests/vm/conftest.py) makes sure the guest image matches today's agent."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.Popen(
        farm(workdir, "run", "example.Hey0TaskSet", "--machines", "2", "--json"),
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: set[str] = set()
    try:
        deadline = time.monotonic() + 300
        while run.poll() is None and time.monotonic() < deadline and len(seen) < 2:
            status = subprocess.run(
                farm(workdir, "status", "--json"),
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            if status.returncode == 0:
                doc = json.loads(status.stdout)
                assert doc["pid"] == run.pid and doc["limit"] == 2
                seen |= {m["name"] for m in doc["machines"]}
            time.sleep(0.5)
        out, err = run.communicate(timeout=400)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, err[-4000:]
    summary = json.loads(out)
    assert summary["machines"] == 2
    job = summary["job"]
    assert job["finished"] == 1 and job["bad"] == 0 and job["done"], summary
    assert seen == {"qemu1", "qemu2"}, seen

    dist_log = (workdir / "log" / "distributor.log").read_text()
    assert "backend=libvirt" in dist_log
    # the one set runs on whichever guest is ready first; the other may be closed before
    assert re.search(r"qemu[12]: ready at 127\.0\.0\.1:\d+", dist_log), dist_log
    with sqlite3.connect(workdir / "results.db") as db:
        assert db.execute("SELECT state FROM tasksets").fetchall() == [("finished",)]
        assert db.execute("SELECT COUNT(*) FROM events WHERE type='JOBS_DONE'").fetchone()[0] >= 1
    assert not (workdir / ".farm" / "control.sock").exists()
    gone = subprocess.run(
        farm(workdir, "status"), cwd=workdir, env=env, capture_output=True, text=True
    )
    assert gone.returncode == 1 and "no farm running here" in gone.stderr
