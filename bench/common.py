"""Code every bench script shares: one percentile definition, the console pump, one boot.

The scripts run as ``python bench/NAME.py``, so bench/ is on ``sys.path`` and
they ``import common``; importing it also puts the repository on ``sys.path``
for ``farm``.

Percentiles use the nearest-rank definition: the p-th percentile of n values
is the smallest value with at least p % of the values <= it, i.e.
``sorted(values)[ceil(p / 100 * n) - 1]`` (p90 of 10 values is the 9th, p99 of
1000 the 990th). bench/RESULTS.md states the same.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


from stats import percentile as percentile  # noqa: E402

from farm.image.smoke import Guest  # noqa: E402
from farm.qemu import QemuProcess, free_port  # noqa: E402

if TYPE_CHECKING:
    from farm.bridge.bridge import TapNic
    from farm.config import FarmConfig
    from farm.profile import MachineProfile

TOKEN = "bench-token"


def netns_inode(name: str) -> int | None:
    """The nsfs inode of network namespace ``name`` (``ip netns add``), None if it is gone."""
    try:
        return os.stat(f"/run/netns/{name}").st_ino
    except OSError:
        return None


def netns_processes(name: str) -> list[psutil.Process]:
    """Live processes in network namespace ``name`` (compared by nsfs inode); [] if none."""
    inode = netns_inode(name)
    if inode is None:
        return []
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if proc.status() != psutil.STATUS_ZOMBIE and (
                os.stat(f"/proc/{proc.pid}/ns/net").st_ino == inode
            ):
                found.append(proc)
    return found


def farm_config(tmp: str, backend: str, machines: int) -> FarmConfig:
    """A throw-away farm: own state/log dirs, no journal, machines linger while idle."""
    from farm.config import FarmConfig

    return FarmConfig(
        backend=backend,
        state_dir=Path(tmp) / "state",
        log_dir=Path(tmp) / "log",
        max_machines=machines,
        max_concurrent_boots=machines,
        idle_linger=600.0,
        journal=False,
    )


def pump_console(stream: Any, log: Path, t0: float, marks: dict[str, float]) -> None:
    """Copy the serial console to ``log``, noting when each farm-init step appeared."""
    with log.open("wb") as out:
        for line in iter(stream.readline, b""):
            out.write(line)
            out.flush()
            text = line.decode(errors="replace")
            if "farm-init: " in text:
                step = text.split("farm-init: ", 1)[1].split()[0].rstrip(":")
                marks.setdefault(step, time.monotonic() - t0)
            elif "farm-agent listening" in text:
                marks.setdefault("agent-listening", time.monotonic() - t0)


def start_qemu(
    argv: list[str], console: Path, qmp: Path | None = None
) -> tuple[QemuProcess, threading.Thread, float, dict[str, float]]:
    """Start QEMU with its serial console on stdout, pumped into ``console``.

    Returns the process, the pump thread (join it after stopping QEMU), the start
    time and the step-time dict the pump fills.
    """
    marks: dict[str, float] = {}
    t0 = time.monotonic()
    proc = QemuProcess(argv, name=console.stem, qmp_socket=qmp, pipe_stdout=True).launch()
    pump = threading.Thread(
        target=pump_console, args=(proc.stdout, console, t0, marks), daemon=True
    )
    pump.start()
    return proc, pump, t0, marks


def boot_once(
    profile: MachineProfile, workdir: Path, n: int, nic: TapNic | None = None
) -> dict[str, Any]:
    """One boot: seconds to handshake, console step times, QEMU RSS.

    ``nic``: boot on that tap (bridged) and reach the agent at its reserved IP;
    None: user-mode networking with a hostfwd port.
    """
    qmp = workdir / f"b{n}.qmp"
    console = workdir / f"b{n}.console.log"
    if nic is None:
        host, port = "127.0.0.1", free_port()
        argv = profile.qemu_argv(
            f"bench{n}", hostfwd_port=port, token=TOKEN, console="stdio", qmp_socket=qmp
        )
    else:  # as farm.backend.qemu does it: the profile's NIC model, on the tap
        host, port = str(nic.ip), profile.guest_port
        argv = replace(profile, nic="").qemu_argv(
            f"bench{n}",
            hostfwd_port=None,
            token=TOKEN,
            console="stdio",
            qmp_socket=qmp,
            extra=nic.qemu_args(profile.nic_device, profile.nic_onboard) if profile.nic else (),
        )
    proc, pump, t0, marks = start_qemu(argv, console, qmp)
    guest = Guest(f"bench{n}", proc, port, console, qmp, t0, argv, host)
    try:
        sock = guest.wait_for_agent(TOKEN, 120).sock
        latency = time.monotonic() - t0
        sock.close()
        qemu = psutil.Process(proc.pid)
        rss = qemu.memory_info().rss
        cpu = qemu.cpu_times()  # CPU seconds QEMU used: less sensitive to a busy host
        cpu_s = cpu.user + cpu.system
    finally:
        guest.stop()
        pump.join(5)
    return {"latency": latency, "marks": marks, "rss": rss, "cpu_s": cpu_s}
