"""/init as the image ships it parses as a shell script.

Its Python programs are single-quoted shell words, so one apostrophe in a
comment of theirs ends the quote and /init fails at boot ("bad function
name"): a syntax check here says so before any guest boots.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from farm.image.initrd import render_init
from farm.resources import image_recipe_dir

pytestmark = pytest.mark.unit


def test_rendered_init_is_valid_shell() -> None:
    shell = shutil.which("dash") or shutil.which("sh")
    assert shell, "no POSIX shell to check /init with"
    init = render_init(image_recipe_dir() / "init.sh.in", ["virtio_net"], "6.12.0-farm")
    res = subprocess.run([shell, "-n"], input=init, capture_output=True, timeout=30)
    assert res.returncode == 0, res.stderr.decode()


def test_embedded_python_programs_parse() -> None:
    """Each python3 -c '...' program of /init compiles (a quote inside would split it)."""
    init = (image_recipe_dir() / "init.sh.in").read_text()
    programs = init.split(" -c '")[1:]
    assert programs, "no python3 -c program found in init.sh.in"
    for chunk in programs:
        source = chunk.split("'", 1)[0]
        compile(source, "init.sh.in", "exec")
