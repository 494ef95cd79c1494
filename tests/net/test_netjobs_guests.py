"""NetJobs on real QEMU guests: two bridged TCG guests run one synchronised test block.

Inside a fresh namespace farm's qemu backend (``network = "bridge"``) brings
up br0 and its dhcpd and boots ``qemu1`` and ``qemu2``; once their agents
answer, one NetJobs block runs ``date +%s.%N`` on both reserved addresses with
the token of the backend's state dir. The ``netns`` fixture kills leftovers,
deletes the namespace and fails if anything survived.
"""

from __future__ import annotations

import json

import pytest

from farm.bridge.dhcp import DhcpPlan
from farm.image import ImageInfo

from .conftest import NetNs

SCENARIO = r"""
import json, sys, time
from pathlib import Path
from farm.backend.qemu import QemuBackend
from farm.config import FarmConfig
from farm.netjobs import run_config
from farm.session.agent import FarmSession
from farm.session.token import resolve_token

base, images = Path(sys.argv[1]), Path(sys.argv[2])
config = FarmConfig(backend="qemu", network="bridge", state_dir=base / "s", log_dir=base / "log",
                    image_dir=images, profile={"accel": "tcg", "memory": 256})
backend = QemuBackend(config)
guests = []
try:
    backend.check()
    token = resolve_token(None, config.state_dir)
    for i in (1, 2):
        guests.append(backend.spawn(f"qemu{i}", token))
    targets = []
    for guest in guests:
        host, port = guest.address(timeout=10)
        session = FarmSession(host, port, token=token, connect_attempts=None, connect_deadline=150)
        session.connect(alive=guest.alive)
        session.close()
        targets.append(f"{host}:{port}")
    cfg = base / "dates.cfg"
    cfg.write_text("dates:\n-generaltimeout: 60s\n"
                   + "".join(f'{t}: "date +%s.%N"\n' for t in targets) + "end\n")
    (result,) = run_config(cfg, farm_config=config)  # token: the state dir's token file
finally:
    for guest in guests:
        guest.destroy()
    backend.close()
print(json.dumps({"passed": result.passed, "skew": result.skew,
                  "results": [[r.target, str(r.status), r.output] for r in result.results]}))
"""


@pytest.mark.timeout(240)
def test_netjobs_block_runs_on_two_bridged_guests(netns: NetNs, image: ImageInfo) -> None:
    """Both guests return SUCCESS with a printed date; the start skew is measured."""
    result = netns.python(SCENARIO, str(netns.dir), str(image.kernel.parent), timeout=220)
    consoles = "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
        for p in sorted((netns.dir / "log").glob("*.console.log"))
    )
    context = f"stdout:\n{result.stdout[-2000:]}\nstderr:\n{result.stderr[-3000:]}\n{consoles}"
    assert result.returncode == 0, context
    report = json.loads(result.stdout.strip().splitlines()[-1])
    plan = DhcpPlan.create()
    targets = [f"{plan.ip_for(i)}:3001" for i in (1, 2)]
    assert [r[0] for r in report["results"]] == targets, context
    assert [r[1] for r in report["results"]] == ["SUCCESS", "SUCCESS"], context
    # busybox date prints %N literally; the seconds are the guest's wall clock
    assert all(r[2].split(".")[0].isdigit() for r in report["results"]), report
    assert report["passed"] is True
    assert report["skew"] is not None and report["skew"] >= 0
    print(f"start skew of two bridged TCG guests: {report['skew'] * 1e3:.3f} ms")
