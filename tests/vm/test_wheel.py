"""A real wheel, installed outside the checkout, builds the image and runs a set (issue 17).

The wheel is built (``pip wheel --no-deps``) from a copy of the checkout's files, installed
into a fresh venv of the suite's own Python (dependencies from pip's cache: libvirt-python
is not compiled again), and run from a temp dir with XDG dirs in tmp: ``farm image build
--cache <checkout>/images/cache`` reuses the checkout's compiled kernel (``--cache``, or
$FARM_IMAGE_CACHE, names the build cache: no recompile), then ``farm run`` on the local
backend finds that image in $XDG_CACHE_HOME/farm/images and keeps state in
$XDG_STATE_HOME/farm. Every data file farm reads must therefore be package data.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from farm.image import ImageInfo

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / "images" / "cache"


def _sh(argv: list[str | Path], cwd: Path, env: dict[str, str], timeout: float = 300.0) -> str:
    res = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert res.returncode == 0, f"{argv} exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
    return res.stdout


def _copy_sources(dest: Path) -> None:
    """The checkout's tracked and new (not ignored) files: no images, caches or venv."""
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in names)):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (the suite's Python) with farm installed from a wheel of this checkout."""
    base = tmp_path_factory.mktemp("wheel")
    src, dist, venv = base / "src", base / "dist", base / "venv"
    _copy_sources(src)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    _sh([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, src], base, env)
    (wheel,) = dist.glob("farm-*.whl")
    _sh([sys.executable, "-m", "venv", venv], base, env)
    _sh([venv / "bin" / "python", "-m", "pip", "install", "-q", wheel], base, env)
    return venv


@pytest.mark.timeout(600)
def test_wheel_builds_the_image_and_runs_a_set_outside_the_checkout(
    venv: Path, image: ImageInfo, tmp_path: Path
) -> None:
    work, cache, state = tmp_path / "work", tmp_path / "xdg-cache", tmp_path / "xdg-state"
    work.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("FARM_")
    }
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        XDG_CACHE_HOME=str(cache),
        XDG_STATE_HOME=str(state),
    )
    where = _sh(["python", "-c", "import farm; print(farm.__file__)"], work, env)
    assert where.startswith(str(venv)), where  # the wheel, not the checkout
    kernels = sorted(p.name for p in (CACHE / "kernel-build").iterdir())

    out = _sh(["farm", "image", "build", "--cache", CACHE], work, env)
    info = json.loads(out)
    images = cache / "farm" / "images"
    assert Path(info["kernel"]) == images / "image.elf"
    assert (images / "image.elf").read_bytes() == image.kernel.read_bytes()
    assert sorted(p.name for p in (CACHE / "kernel-build").iterdir()) == kernels  # no compile
    assert (images / "initrd.img").is_file() and (images / "farm-workload").is_file()

    run = ["farm", "run", "example.Hey0TaskSet", "--backend", "local", "--json"]
    summary = json.loads(_sh([*run, "--monitor", "LoggingMonitor"], work, env))
    assert (summary["job"]["finished"], summary["job"]["bad"]) == (1, 0), summary
    # the agents ran the image's native farm-workload (else a NOTICE: built-ins "run as Python")
    assert "run as Python" not in (work / "log" / "monitor.log").read_text()
    assert (state / "farm" / "token").is_file() and not (work / ".farm").exists()

    # one image CLI in the wheel too: the alias rejects bad input with exit 2
    res = subprocess.run(
        ["python", "-m", "farm.image", "build", "--kernel", "nope"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2, res.stderr
