"""The qemu backend's spare guest (farm/backend/qemu_spare.py), TCG.

After a warm spawn the backend restores one more guest ahead, from idle CPU
(SCHED_IDLE), and has its /init run the warm-up set again in that QEMU (whose
translation cache starts empty). The next spawn takes it: the machine's agent
then reports two warm-up sets in ``status`` (the template's and the one after
the restore), answers only its own key, has its console under its own name and
its screen session and registry entries renamed. ``close()`` destroys the next
spare; a SIGKILLed farm's spare is reaped by the next farm on its state dir.
A guest restored without a spare warms up too, in its own spawn. A spawn that
comes while the spare is being made (back to back) waits for it and takes it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from farm.backend.qemu import QemuBackend
from farm.image import ImageInfo
from farm.session.agent import FarmSession
from farm.taskset import Task, TaskSet
from tests.vm.test_warm_start import WAIT, WarmFarm, farm, handshake, restored, warm_root

pytestmark = pytest.mark.vm
__all__ = ["farm", "warm_root"]  # fixtures
REPO = Path(__file__).resolve().parents[2]


def gone(pid: int, timeout: float = 10.0) -> bool:
    """True once ``pid`` has exited (a zombie counts: its parent screen may be gone too)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def warm_ups(guest: object, token: str) -> list[list[str]]:
    """The guest agent's ``warm_up`` status (one event list per warm-up set), and a set run."""
    host, port = guest.address(WAIT)  # type: ignore[attr-defined]
    session = FarmSession(host, port, token=token, connect_attempts=1000)
    session.connect(timeout=WAIT, alive=guest.alive)  # type: ignore[attr-defined]
    try:
        found = list(session.status()["warm_up"])
        session.start(TaskSet([Task({"id": 1, "pkg": "hey", "numberofjobs": 1})]))
        events = []
        while not session.finished():
            events += [e.type.name for e in session.run(1.0) if e.task_id == 1]
        assert events == ["START", "EXIT", "JOBS_DONE"], events
        return found
    finally:
        session.close()


def test_second_spawn_takes_the_warmed_spare_and_close_destroys_the_next(farm: WarmFarm) -> None:
    backend = QemuBackend(farm.config(), warm_start=True)
    try:
        first = backend.spawn("qemu1", "tok-one")
        try:
            # restored without a spare, and warmed up in its own QEMU all the same
            assert len(warm_ups(first, "tok-one")) == 2
        finally:
            first.destroy()
        assert backend.spares.wait_ready(WAIT)
        ready = backend.spares._ready
        assert ready is not None and ready.guest.pid is not None
        assert os.sched_getscheduler(ready.guest.pid) == os.SCHED_IDLE  # made from idle CPU
        spare_name, spare_pid = ready.guest.name, ready.guest.pid
        assert spare_name in backend.registry.entries()
        guest = backend.spawn("qemu2", "tok-two")
        try:
            assert backend.spares.used == 1 and guest.pid == spare_pid
            assert os.sched_getscheduler(spare_pid) == os.SCHED_OTHER  # lifted at hand-over
            (template, after_restore) = warm_ups(guest, "tok-two")  # warmed up in this QEMU
            assert after_restore == template and "JOBS_DONE" in after_restore, after_restore
            with pytest.raises(PermissionError):  # its own key only
                handshake(guest, "tok-one")
            entries = backend.registry.entries()
            assert entries["qemu2"]["pid"] == spare_pid and spare_name not in entries
            assert "qemu2.screen" in entries and f"{spare_name}.screen" not in entries
            screens = subprocess.run(["screen", "-ls"], capture_output=True, text=True).stdout
            assert f"{guest.process.screen_pid}.qemu2\t" in screens, screens
            assert restored(farm, "qemu2"), farm.console("qemu2")
            assert not (farm.path / "log" / f"{spare_name}.console.log").exists()
        finally:
            guest.destroy()
        assert gone(spare_pid)
        backend.spares.wait_ready(WAIT)
        nxt = backend.spares._ready
        next_pid = nxt.guest.pid if nxt is not None else None
    finally:
        backend.close()
    assert next_pid is not None and gone(next_pid)  # close() destroyed it
    logs = sorted(p.name for p in (farm.path / "log").glob("*.console.log"))
    assert logs == ["qemu1.console.log", "qemu2.console.log"], logs


def scenario_killed(root: Path, images: Path) -> None:
    """Spawn one guest, wait for the spare, write its name and pid, die by SIGKILL."""
    backend = QemuBackend(WarmFarm(root.parent, root, images).config(), warm_start=True)
    backend.spawn("qemu1", "tok-one")
    assert backend.spares.wait_ready(WAIT)
    spare = next(n for n in backend.registry.entries() if n.startswith("farm-spare-"))
    (root / "spare.pid").write_text(f"{spare} {backend.registry.entries()[spare]['pid']}")
    os.kill(os.getpid(), signal.SIGKILL)


def test_spare_of_a_sigkilled_farm_is_reaped_by_the_next(farm: WarmFarm, image: ImageInfo) -> None:
    farm.path.mkdir(parents=True, exist_ok=True)
    code = (
        "import sys; from pathlib import Path; from tests.vm.test_qemu_spare import "
        "scenario_killed; scenario_killed(Path(sys.argv[1]), Path(sys.argv[2]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(farm.path), str(farm.images)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=3 * WAIT,
    )
    assert proc.returncode == -signal.SIGKILL, (proc.stdout + proc.stderr)[-4000:]
    spare, pid = (farm.path / "spare.pid").read_text().split()
    assert psutil.pid_exists(int(pid))  # the spare's QEMU outlived its farm
    backend = QemuBackend(farm.config(), warm_start=False)
    try:
        reaped = backend.reap_stale()
    finally:
        backend.close()
    assert spare in reaped and "qemu1" in reaped, reaped
    assert gone(int(pid))


def test_a_spawn_back_to_back_waits_for_the_spare_being_made(
    farm: WarmFarm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spare is held in its warm-up until the next spawn waits for it: that spawn takes
    it (no restore of its own), lifted out of SCHED_IDLE, warmed up in its own QEMU."""
    from farm.backend import identity_port

    hold = threading.Event()
    warm_up = identity_port.warm_up_guest

    def held(*args: Any) -> None:
        if threading.current_thread().name == "qemu-spare":
            hold.wait(WAIT)
        warm_up(*args)

    monkeypatch.setattr(identity_port, "warm_up_guest", held)
    backend = QemuBackend(farm.config(), warm_start=True)
    try:
        backend.spawn("qemu1", "tok-one").destroy()
        spares = backend.spares
        while True:  # the spare's QEMU is up, its warm-up held back
            with spares._cond:
                making = spares._making
            if making is not None:
                break
            time.sleep(0.01)
        assert making.pid is not None and os.sched_getscheduler(making.pid) == os.SCHED_IDLE

        def release() -> None:  # once the spawn below waits for the spare
            while not hold.is_set():
                with spares._cond:
                    if spares._waiter:
                        hold.set()
                time.sleep(0.01)

        threading.Thread(target=release, daemon=True).start()
        guest = backend.spawn("qemu2", "tok-two")
        try:
            assert spares.waited == 1 and spares.used == 1, (spares.waited, spares.used)
            assert guest.pid == making.pid  # the spare, not a restore of its own
            tids = os.listdir(f"/proc/{guest.pid}/task")
            assert all(os.sched_getscheduler(int(t)) == os.SCHED_OTHER for t in tids)
            (_, after_restore) = warm_ups(guest, "tok-two")  # warmed up in this QEMU
            assert "JOBS_DONE" in after_restore, after_restore
            entries = backend.registry.entries()
            assert entries["qemu2"]["pid"] == guest.pid and making.name not in entries
        finally:
            guest.destroy()
    finally:
        hold.set()
        backend.close()
    assert not backend.registry.entries()  # close() leaves no spare behind
