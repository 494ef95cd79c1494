"""farm run from a directory outside the checkout uses the image built once (issue 17).

Images were looked up in ``./images``: every other directory built them again. Now
farm.paths names one place (the checkout's images/ here); the local backend's agents get
its native farm-workload, which they report missing (a NOTICE: built-ins "run as Python")
when they do not find it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from farm import paths
from farm.agent.commands import NATIVE_ENV
from farm.image import builder
from tests.helpers import run_farm

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
FALLBACK = "run as Python"


def _stamps() -> dict[str, int]:
    names = (builder.KERNEL_NAME, builder.INITRD_NAME, builder.MANIFEST_NAME, "farm-workload")
    return {n: (IMAGES / n).stat().st_mtime_ns for n in names}


@pytest.fixture(autouse=True)
def _no_native_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tier's own farm-workload ($FARM_WORKLOAD_BIN) would hide where farm looked."""
    monkeypatch.delenv(NATIVE_ENV, raising=False)


def _run_hey(cwd: Path) -> str:
    res = run_farm(
        cwd, "run", "example.Hey0TaskSet", "--backend", "local", "--monitor", "LoggingMonitor"
    )
    assert res.returncode == 0, res.stderr
    return (cwd / "log" / "monitor.log").read_text()


def test_farm_run_elsewhere_finds_the_checkouts_image(tmp_path: Path) -> None:
    assert paths.image_dir() == IMAGES
    assert (IMAGES / "farm-workload").is_file(), "no image in images/: run `farm image build`"
    before = _stamps()
    work = tmp_path / "my-project"
    work.mkdir()
    events = _run_hey(work)
    assert "FINISH" in events
    assert FALLBACK not in events  # the agents ran the image's native farm-workload
    assert _stamps() == before  # found, not rebuilt
    assert (work / ".farm" / "token").is_file()  # checkout rule: state per directory
    doctor = run_farm(work, "doctor", "--json")
    image = next(c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "image")
    assert (image["status"], image["detail"].split(":")[0]) == ("PASS", str(IMAGES))


def test_the_check_sees_a_missing_image(tmp_path: Path) -> None:
    """The observable above is not vacuous: with no image found, the NOTICE appears."""
    (tmp_path / "farm.toml").write_text(f'image_dir = "{tmp_path / "none"}"\n')
    assert FALLBACK in _run_hey(tmp_path)
