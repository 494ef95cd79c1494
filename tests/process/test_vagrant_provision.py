"""vagrant/provision.sh on this machine: succeeds twice, the second run installs nothing new.

The Vagrantfile itself is checked with ``ruby -c`` (apt package ``ruby``) and
for the structure the README promises: Debian 12 box, libvirt and VirtualBox
providers with nested virtualisation, the repo synced in, provision.sh as
provisioner.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VAGRANT = REPO / "vagrant"
STAMP = REPO / ".venv" / ".farm-installed"


def provision() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VAGRANT / "provision.sh"), str(REPO)],
        capture_output=True,
        text=True,
        timeout=1800,  # the first run on a fresh machine installs packages and builds the image
    )


@pytest.mark.timeout(3600)
def test_provision_twice_second_run_installs_nothing() -> None:
    assert os.geteuid() == 0, "provision.sh runs as root (vagrant runs it privileged)"
    first = provision()
    assert first.returncode == 0, first.stdout + first.stderr
    assert "provision: done" in first.stdout
    stamp = STAMP.stat().st_mtime_ns
    second = provision()
    assert second.returncode == 0, second.stdout + second.stderr
    out = second.stdout + second.stderr
    assert "installing" not in out.lower(), out
    assert "provision: image kernel_rebuilt=False initrd_rebuilt=False" in second.stdout, out
    assert STAMP.stat().st_mtime_ns == stamp  # the venv was not reinstalled


def test_provision_refuses_a_wrong_checkout(tmp_path: Path) -> None:
    res = subprocess.run(
        [str(VAGRANT / "provision.sh"), str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 1 and "scripts/setup not found" in res.stderr


def test_vagrantfile_is_valid_ruby_with_the_promised_structure() -> None:
    ruby = shutil.which("ruby")
    assert ruby, "ruby is needed to check the Vagrantfile (apt-get install ruby)"
    res = subprocess.run([ruby, "-c", str(VAGRANT / "Vagrantfile")], capture_output=True, text=True)
    assert res.returncode == 0 and "Syntax OK" in res.stdout, res.stderr
    text = (VAGRANT / "Vagrantfile").read_text()
    assert 'config.vm.box = "debian/bookworm64"' in text
    assert "config.vm.provider :libvirt" in text and "lv.nested = true" in text
    assert "config.vm.provider :virtualbox" in text and '"--nested-hw-virt", "on"' in text
    assert re.search(r'synced_folder "\.\.", "/farm"', text)
    assert re.search(r'provision "shell", path: "provision\.sh", args: \["/farm"\]', text)
    script = (VAGRANT / "provision.sh").read_text()
    assert "scripts/setup" in script  # the README's install script, not a copy of it
    assert os.access(VAGRANT / "provision.sh", os.X_OK)
    assert (VAGRANT / "README.md").is_file()
