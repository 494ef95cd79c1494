"""Issue 15 on a QEMU guest: the token and the guest's key appear on no command line or file.

A farm with one cold-booted qemu-backend guest runs a set and idles; meanwhile
``ps -eo args`` (QEMU, its screen, the farm) and every file under the state
and log dirs (QEMU's recorded command line, console, distributor log, journal)
must hold neither the farm token nor the guest's key, which reached the guest
over its virtio-serial identity port.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from farm import Distributor
from farm.agent.protocol import guest_key
from farm.config import FarmConfig
from farm.image import ImageInfo
from farm.tasksets.example import Hey0TaskSet
from tests.helpers import wait_for
from tests.process.test_security import secret_hits

TOKEN = "e" * 8 + os.urandom(16).hex()


@pytest.mark.timeout(400)
def test_qemu_guest_gets_its_key_off_every_command_line(image: ImageInfo, tmp_path: Path) -> None:
    cfg = FarmConfig(
        backend="qemu",
        state_dir=tmp_path / "state",
        log_dir=tmp_path / "log",
        image_dir=Path(image.kernel).parent,
        profile={"accel": "tcg", "memory": 256},
        token=TOKEN,
        idle_linger=60.0,
        log_file=True,
    )
    dist = Distributor(cfg)
    try:
        dist.set_max_machine_value(1)
        dist.add_job(Hey0TaskSet())
        assert dist.wait_finished(timeout=300)
        console = cfg.log_dir / "qemu1.console.log"
        wait_for("the guest's identity", lambda: "farm-init: identity qemu1" in console.read_text())
        hits = secret_hits([tmp_path], [TOKEN, guest_key(TOKEN, "qemu1")])
        assert hits == [], hits
        assert "farm.token=" not in (cfg.state_dir / "qemu" / "qemu1" / "cmdline").read_text()
    finally:
        dist.close()
