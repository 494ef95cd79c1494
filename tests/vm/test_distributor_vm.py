"""Distributor on real QEMU guests (TCG): issue 4's "What it must show".

The seed-004 shell flow on both backends, chaos (SIGKILLed QEMUs), a hung
(SIGSTOPped) guest, limit changes while running, resume after the farm
process is SIGKILLed, and bad inputs refused before anything starts. The same
scenarios run on fakes in tests/unit/test_distributor.py and on local agent
processes in tests/process/test_distributor_local.py.

libvirt's embedded driver allows one embedded root per process and
tests/vm/test_libvirt_backend.py holds its own for the whole module, so every
libvirt Distributor here runs in a child process with its own state dir.

Every test gets a short state dir (``farm_dir``): a sampler thread records
every process farm registers there (QEMU, screen), and after the test no such
process, and no process naming the dir on its command line, may remain.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from farm import Distributor
from farm.config import FarmConfig
from farm.errors import BackendError, ConfigError, ImageError, TaskSetError
from farm.image import ImageInfo
from farm.monitors import FINISHED_NOT_ONCE, FanoutMonitor, SqliteMonitor
from farm.taskset import Task, TaskSet
from tests.helpers import RecordingMonitor as Recorder
from tests.helpers import query, wait_for

REPO = Path(__file__).resolve().parents[2]
PROFILE = {"accel": "tcg", "memory": 256}
#: generous bound for anything that needs guests to boot (TCG on a busy 2-core host)
WAIT = 180.0
log = logging.getLogger(__name__)


# -- the per-test farm directory and its leak check ---------------------------------------


@dataclass
class FarmDir:
    """A short temporary dir holding one test's state dir, logs and results."""

    path: Path
    images: Path
    #: pid -> (create time, registry name, kind) of every process farm recorded
    seen: dict[int, tuple[float, str, str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def state(self) -> Path:
        return self.path / "state"

    @property
    def log(self) -> Path:
        return self.path / "log"

    def config(self, backend: str = "qemu", **kw: Any) -> FarmConfig:
        """A farm config in this dir booting the built image under TCG with 256 MiB."""
        values: dict[str, Any] = {
            "backend": backend,
            "state_dir": self.state,
            "log_dir": self.log,
            "log_file": True,  # pytest configures logging: "auto" would not
            "image_dir": self.images,
            "idle_linger": 0.5,
            "boot_timeout": 120.0,
            "profile": dict(PROFILE),
        }
        values.update(kw)
        return FarmConfig(**values)

    def sample(self) -> None:
        """Record the processes currently in the state dir's process registry."""
        pids = self.state / "pids"
        if not pids.is_dir():
            return
        for entry in pids.glob("*.json"):
            try:
                data = json.loads(entry.read_text())
                record = (float(data["create_time"]), entry.stem, str(data["kind"]))
                pid = int(data["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # forgotten meanwhile
            with self._lock:  # a libvirt spare's QEMU is recorded again as its machine
                if pid not in self.seen or self.seen[pid][1].startswith("farm-spare-"):
                    self.seen[pid] = record

    def recorded(self, kind: str = "qemu", name: str | None = None) -> dict[int, str]:
        """pid -> registry name of every recorded process of ``kind`` (QEMU by default)."""
        with self._lock:
            return {
                pid: rec_name
                for pid, (_, rec_name, rec_kind) in self.seen.items()
                if rec_kind == kind and (name is None or rec_name == name)
            }

    def guest_pid(self, name: str) -> int | None:
        """PID of guest ``name``'s QEMU as farm recorded it now, if that process runs."""
        try:
            data = json.loads((self.state / "pids" / f"{name}.json").read_text())
            pid = int(data["pid"])
            if abs(psutil.Process(pid).create_time() - float(data["create_time"])) < 0.01:
                return pid
        except (OSError, ValueError, KeyError, TypeError, psutil.Error):
            pass
        return None

    def processes(self) -> list[psutil.Process]:
        """Live processes of this farm: recorded ones, and any naming the dir on its cmdline."""
        found: dict[int, psutil.Process] = {}
        me = os.getpid()
        for proc in psutil.process_iter(["cmdline", "status"]):
            with contextlib.suppress(psutil.Error):
                if proc.pid == me or proc.info["status"] == psutil.STATUS_ZOMBIE:
                    continue
                if str(self.path) in " ".join(proc.info["cmdline"] or []):
                    found[proc.pid] = proc
        with self._lock:
            seen = dict(self.seen)
        for pid, (created, _, _) in seen.items():
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                if (
                    abs(proc.create_time() - created) < 0.01
                    and proc.status() != psutil.STATUS_ZOMBIE
                ):
                    found[pid] = proc
        return list(found.values())

    def problems(self) -> str:
        """The farm's warnings and errors so far (for assertion messages)."""
        path = self.log / "distributor.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return "\n".join(line for line in lines if " WARNING " in line or " ERROR " in line)

    def wipe_dead_screens(self) -> None:
        """Remove the sockets of this farm's screens that died by SIGKILL (``screen -ls``
        would list them as "Dead ???"); only a test freezing or killing a screen leaves one."""
        user = pwd.getpwuid(os.getuid()).pw_name
        screendir = Path(os.environ.get("SCREENDIR") or f"/run/screen/S-{user}")
        for pid, name in self.recorded("screen").items():
            if not runs(pid):
                (screendir / f"{pid}.{name.removesuffix('.screen')}").unlink(missing_ok=True)


def describe(procs: list[psutil.Process]) -> list[str]:
    out = []
    for proc in procs:
        try:
            out.append(f"{proc.pid} {proc.status()}: {' '.join(proc.cmdline())[:200]}")
        except psutil.Error:
            out.append(f"{proc.pid} (gone)")
    return out


@pytest.fixture
def farm_dir(image: ImageInfo) -> Iterator[FarmDir]:
    """A short farm dir (UNIX socket paths stay short); nothing farm starts outlives the test."""
    fd = FarmDir(Path(tempfile.mkdtemp(prefix="farm")), image.kernel.parent)
    stop = threading.Event()

    def sampler() -> None:
        while not stop.wait(0.05):
            fd.sample()

    thread = threading.Thread(target=sampler, name="farm-dir-sampler", daemon=True)
    thread.start()
    try:
        yield fd
    finally:
        stop.set()
        thread.join()
        fd.sample()
        problems = fd.problems()
        if problems:  # shown with the captured log of a failing test
            log.info("farm warnings and errors:\n%s", problems)
        deadline = time.monotonic() + 10.0  # a process being reaped right now may take a moment
        leftovers = fd.processes()
        while leftovers and time.monotonic() < deadline:
            time.sleep(0.2)
            leftovers = fd.processes()
        report = describe(leftovers)
        for proc in leftovers:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(leftovers, timeout=10)
        fd.wipe_dead_screens()
        farm_logger = logging.getLogger("farm")
        for handler in list(farm_logger.handlers):  # the Distributor's log/distributor.log
            if isinstance(handler, logging.FileHandler) and handler.baseFilename.startswith(
                str(fd.path)
            ):
                farm_logger.removeHandler(handler)
                handler.close()
        shutil.rmtree(fd.path, ignore_errors=True)
        assert report == [], f"processes left running: {report}"


# -- helpers -----------------------------------------------------------------------------------


def idle_sets(n: int, ms: int) -> TaskSet:
    """``n`` variants of one task sleeping ``ms`` in the guest."""
    return TaskSet(
        [Task({"pkg": "idle", "config": {"ms": ms}, "numberofjobs": 1, "x-run": range(n)})]
    )


def running(dist: Distributor) -> dict[str, str]:
    """machine name -> set it runs now, for machines running a set."""
    return {m["name"]: m["current"] for m in dist.machines() if m["state"] == "running"}


def runs(pid: int) -> bool:
    """True while ``pid`` runs (a zombie awaiting its reaper does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def count(db: Path, sql: str) -> int:
    try:
        return int(query(db, sql)[0][0])
    except sqlite3.OperationalError:  # not created yet
        return 0


def run_script(script: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# -- the seed-004 shell flow, on both backends ------------------------------------------------

SEED004 = """
import json, sys, threading, time
from pathlib import Path
import psutil
from farm.config import FarmConfig
from farm import Distributor
from farm.monitors import LoggingMonitor
from farm.tasksets.example import Hey0TaskSet

backend, base, config = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
config = FarmConfig(backend=backend, **config)
qemus = {}  # pid -> guest name of every QEMU of this farm seen running
stop = threading.Event()

def watch():
    while not stop.wait(0.1):
        for proc in psutil.process_iter(["cmdline"]):
            argv = proc.info["cmdline"] or []
            ours = str(base) in " ".join(argv)
            if argv and "qemu-system" in argv[0] and "-name" in argv and ours:
                name = argv[argv.index("-name") + 1]  # qemuN, or guest=qemuN,... under libvirt
                qemus[proc.pid] = name.removeprefix("guest=").split(",")[0]

watcher = threading.Thread(target=watch, daemon=True)
watcher.start()
report = {}
dist = Distributor(config)
try:
    dist.add_job(Hey0TaskSet(), LoggingMonitor(base / "monitor.log"))
    dist.set_max_machine_value(3)
    report["machines_after_limit"] = sorted(m["name"] for m in dist.machines())
    report["finished"] = dist.wait_finished(timeout=240)
    deadline = time.monotonic() + 60
    while dist.get_distributor_state() and time.monotonic() < deadline:
        time.sleep(0.1)
    report["state_after"] = dist.get_distributor_state()
    report["machines_after"] = dist.machines()
    report["jobs"] = dist.jobs()
finally:
    dist.close()
    stop.set()
    watcher.join()
report["qemus"] = qemus
print(json.dumps(report))
"""


@pytest.mark.timeout(400)
@pytest.mark.parametrize("backend", ["qemu", "libvirt"])
def test_seed004_shell_flow(farm_dir: FarmDir, backend: str) -> None:
    """add_job + set_max_machine_value(3): 3 guests boot, the job finishes, the farm goes idle."""
    cfg = {
        "state_dir": str(farm_dir.state),
        "log_dir": str(farm_dir.log),
        "image_dir": str(farm_dir.images),
        "idle_linger": 0.5,
        "profile": PROFILE,
    }
    result = run_script(SEED004, backend, str(farm_dir.path), json.dumps(cfg), timeout=360)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["machines_after_limit"] == ["qemu1", "qemu2", "qemu3"]
    # a QEMU process per machine (3 unless one had to be replaced), each booted to the agent;
    # libvirt names a QEMU by its domain: a warm spare's (farm-spare-N) became one machine
    guests = {"qemu1", "qemu2", "qemu3"}
    guest = re.compile(r"qemu\d+$")  # not a warm start's template guest
    qemus = [n for n in report["qemus"].values() if guest.match(n)]
    spares = [n for n in report["qemus"].values() if n.startswith("farm-spare-")]
    assert set(qemus) <= guests and len(qemus + spares) >= 3, (report, farm_dir.problems())
    kind = "qemu" if backend == "qemu" else "libvirt-qemu"
    assert {n for n in farm_dir.recorded(kind).values() if guest.match(n)} == guests
    dist_log = (farm_dir.log / "distributor.log").read_text()
    for name in ("qemu1", "qemu2", "qemu3"):
        assert re.search(rf"farm\.core\.slot\.{name}: ready at 127\.0\.0\.1:\d+", dist_log), name
    assert f"backend={backend}" in dist_log

    assert report["finished"] is True
    (job,) = report["jobs"]
    assert job["done"] and job["total"] == 1 and job["finished"] == 1
    assert job["stopped"] == 0 and job["bad"] == 0
    assert report["state_after"] is False
    assert report["machines_after"] == []

    monitor_log = (farm_dir.path / "monitor.log").read_text()
    finishes = re.findall(r"FINISH\s+(\S+)", monitor_log)
    assert finishes == [f"{job['key']}#0"], monitor_log
    assert re.search(r"EVENT .* task=1 job=0 EXIT", monitor_log), monitor_log
    assert "STOP" not in monitor_log
    for name in ("qemu1", "qemu2", "qemu3"):  # the key came over the identity port
        console = (farm_dir.log / f"{name}.console.log").read_text(errors="replace")
        assert f"farm-init: identity {name}" in console


# -- chaos: SIGKILLed QEMUs --------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_chaos_sigkilled_guests_every_set_finished_exactly_once(farm_dir: FarmDir) -> None:
    """30 sets on 3 guests while QEMUs are SIGKILLed: each set finished once, stops reported."""
    db = farm_dir.path / "results.db"
    dist = Distributor(farm_dir.config(set_tries=20, boot_retries=10))
    stop = threading.Event()
    kills: list[tuple[str, int, str]] = []
    rng = random.Random(4)

    def chaos() -> None:
        # every few seconds, SIGKILL the QEMU of a machine that is running a set
        while len(kills) < 8 and not stop.wait(rng.uniform(2.5, 4.0)):
            busy = running(dist)
            if not busy:
                continue
            name = rng.choice(sorted(busy))
            pid = farm_dir.guest_pid(name)
            if pid is None:
                continue
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).send_signal(signal.SIGKILL)
                kills.append((name, pid, busy[name]))

    thread = threading.Thread(target=chaos, name="chaos")
    try:
        dist.set_max_machine_value(3)
        job = dist.add_job(idle_sets(30, 1200), SqliteMonitor(db))
        thread.start()
        assert dist.wait_finished(timeout=180), dist.jobs()
    finally:
        stop.set()
        if thread.ident is not None:
            thread.join()
        dist.close()

    stopped_runs = count(db, "SELECT COUNT(*) FROM runs WHERE state = 'stopped'")
    log.info(
        "chaos: %d kills %s, %d stopped runs, %d guests spawned",
        len(kills),
        kills,
        stopped_runs,
        len(farm_dir.recorded("qemu")),
    )
    assert query(db, FINISHED_NOT_ONCE) == []
    assert count(db, "SELECT COUNT(*) FROM tasksets WHERE state = 'finished'") == 30
    assert kills, "chaos never found a running set to kill"
    # each interruption the job saw is a __taskset_stop__ (a stopped run); a kill that landed
    # just after its set finished interrupts nothing, so there are at most as many as kills
    assert stopped_runs == job.stopped
    assert 1 <= job.stopped <= len(kills), (job.stopped, kills)
    assert job.bad == 0
    assert len(farm_dir.recorded("qemu")) > 3  # machines were respawned
    for _, pid, _ in kills:
        assert pid in farm_dir.recorded("qemu")


# -- a hung guest -------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_hung_guest_detected_by_heartbeat_and_replaced(farm_dir: FarmDir) -> None:
    """A SIGSTOPped QEMU is hung: detected (process stopped), destroyed, replaced; set rerun."""
    recorder = Recorder()
    db = farm_dir.path / "results.db"
    dist = Distributor(farm_dir.config(heartbeat_timeout=5.0, max_machines=2))
    frozen: list[psutil.Process] = []
    try:
        job = dist.add_job(idle_sets(2, 5000), FanoutMonitor([recorder, SqliteMonitor(db)]))
        wait_for(
            "both sets to run on their guests",
            lambda: len(running(dist)) == 2 and recorder.event_types.count("START") == 2,
        )
        hung_set = int(running(dist)["qemu1"].rsplit("#", 1)[1])
        pid = farm_dir.guest_pid("qemu1")
        assert pid is not None
        qemu = psutil.Process(pid)
        screen = qemu.parent()
        # screen restarts a stopped window process ("Child has been stopped, restarting"),
        # so freeze it first; then SIGSTOP the QEMU: guest, agent and heartbeats freeze
        assert screen is not None and "screen" in screen.name().lower()
        frozen += [screen, qemu]
        for proc in frozen:
            proc.suspend()
        assert dist.wait_finished(timeout=WAIT), dist.jobs()
        wait_for("a new guest for qemu1", lambda: len(farm_dir.recorded("qemu", "qemu1")) >= 2)
        hung_gone = not runs(pid)
    finally:
        dist.close()
        for proc in frozen:
            if proc.is_running():  # same pid and start time: SIGCONT, and end it
                with contextlib.suppress(psutil.Error):
                    proc.resume()
                    proc.kill()

    dist_log = (farm_dir.log / "distributor.log").read_text()
    # detected by the process state (stopped: not alive), before the 5 s heartbeat timeout
    interrupted = rf"qemu1: set \S+ #{hung_set} interrupted: .*died or is stopped"
    assert re.search(interrupted, dist_log), dist_log
    assert hung_gone, "the hung QEMU was not destroyed"
    assert pid in farm_dir.recorded("qemu", "qemu1")  # and qemu1 got a new one (waited above)
    assert recorder.stopped == [hung_set] and recorder.bad == []
    assert sorted(recorder.finished) == [0, 1]
    assert job.stopped == 1 and job.finished == 2
    assert query(db, FINISHED_NOT_ONCE) == []
    attempts = (
        "SELECT r.attempt, r.state FROM runs r JOIN tasksets t ON t.id = r.taskset_id "
        f"WHERE t.variant = {hung_set} ORDER BY r.attempt"
    )
    assert query(db, attempts) == [(1, "stopped"), (2, "finished")]


# -- limit changes while running ----------------------------------------------------------------


@pytest.mark.timeout(300)
def test_limit_changes_while_running(farm_dir: FarmDir) -> None:
    """3 -> 1: two machines finish their sets and go, nothing stopped; 1 -> 3 spawns at once."""
    recorder = Recorder()
    # three boot slots: all three guests come up together and run sets side by side
    dist = Distributor(farm_dir.config(idle_linger=1.0, max_concurrent_boots=3))
    try:
        dist.set_max_machine_value(3)
        job = dist.add_job(idle_sets(16, 1500), recorder)
        wait_for("3 machines running sets", lambda: len(running(dist)) == 3)

        dist.set_max_machine_value(1)
        machines = {m["name"]: m for m in dist.machines()}
        retiring = {name: m["current"] for name, m in machines.items() if m["retiring"]}
        assert len(machines) == 3 and len(retiring) == 2, machines
        wait_for("the two retiring machines to go", lambda: len(dist.machines()) == 1)
        (kept,) = dist.machines()
        assert kept["name"] not in retiring and not kept["retiring"]
        assert recorder.stopped == []
        # the sets they were running ran to the end
        theirs = {int(cur.rsplit("#", 1)[1]) for cur in retiring.values() if cur is not None}
        wait_for(f"sets {theirs} to finish", lambda: theirs <= set(recorder.finished))
        assert {farm_dir.guest_pid(name) for name in retiring} == {None}  # their guests are gone

        # (a spare's QEMU, already running, counts as new once a machine takes it)
        before = {p for p, n in farm_dir.recorded("qemu").items() if not n.startswith("farm-spare")}
        dist.set_max_machine_value(3)
        after = dist.machines()
        assert len(after) == 3, after  # spawned at once
        new = [m for m in after if m["name"] != kept["name"]]
        assert all(m["state"] in ("new", "waiting-boot-slot", "booting") for m in new), new
        wait_for(
            "the new machines to spawn guests",
            lambda: (
                {m["name"] for m in new}
                <= {name for pid, name in farm_dir.recorded("qemu").items() if pid not in before}
            ),
        )
        assert dist.wait_finished(timeout=WAIT), dist.jobs()
    finally:
        dist.close()
    assert sorted(recorder.finished) == list(range(16))
    assert recorder.stopped == [] and recorder.bad == []
    assert job.stopped == 0


# -- resume after the farm process is SIGKILLed ---------------------------------------------------

RESUME = """
import json, sys
from pathlib import Path
from farm.config import FarmConfig
from farm import Distributor
from farm.monitors import SqliteMonitor
from farm.taskset import Task, TaskSet

base, config = Path(sys.argv[1]), json.loads(sys.argv[2])
dist = Distributor(FarmConfig(**config))
dist.set_max_machine_value(2)
tasks = TaskSet([Task({"pkg": "idle", "config": {"ms": 1000}, "numberofjobs": 1,
                       "x-run": range(12)})])
job = dist.add_job(tasks, SqliteMonitor(base / "results.db"))
print("skipped", job.skipped, flush=True)
ok = dist.wait_finished(timeout=300)
print("jobs", json.dumps(dist.jobs()), flush=True)
dist.close()
print("done" if ok else "timed out", flush=True)
"""


@pytest.mark.timeout(400)
def test_resume_after_sigkill_runs_each_variant_once_and_reaps(farm_dir: FarmDir) -> None:
    """SIGKILL the farm mid-job, start it again: 12 variants finished once in total, no strays."""
    db = farm_dir.path / "results.db"
    cfg = json.dumps(
        {
            "backend": "qemu",
            "state_dir": str(farm_dir.state),
            "log_dir": str(farm_dir.log),
            "image_dir": str(farm_dir.images),
            "idle_linger": 0.5,
            "profile": PROFILE,
        }
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    stderr = farm_dir.path / "first.stderr"
    with stderr.open("wb") as err:
        first = subprocess.Popen(
            [sys.executable, "-c", RESUME, str(farm_dir.path), cfg],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        sql = "SELECT COUNT(*) FROM tasksets WHERE state = 'finished'"
        wait_for(
            "the first farm to finish 3 variants",
            lambda: count(db, sql) >= 3 or first.poll() is not None,
        )
        assert first.poll() is None, f"first farm ended early: {stderr.read_text()[-3000:]}"
        recorded = {**farm_dir.recorded("qemu"), **farm_dir.recorded("screen")}
        first_procs = [pid for pid in recorded if runs(pid)]  # QEMUs and screens running now
        assert any(pid in farm_dir.recorded("qemu") for pid in first_procs)
        first.send_signal(signal.SIGKILL)
        # Not waited for yet, so the dead farm stays a zombie (as under a busy parent
        # shell): its watchdog (farm.reaper) must end its QEMUs and screens all the same.
        wait_for(
            "the dead farm's watchdog to end its QEMUs and screens",
            lambda: (
                not any(runs(pid) for pid in first_procs)
                and not list((farm_dir.state / "pids").glob("*.json"))
            ),
            timeout=60,
        )
        assert psutil.Process(first.pid).status() == psutil.STATUS_ZOMBIE
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    finished_before = count(db, sql)
    assert 3 <= finished_before < 12

    second = run_script(RESUME, str(farm_dir.path), cfg, timeout=300)
    assert second.returncode == 0, second.stderr[-4000:]
    assert second.stdout.strip().endswith("done"), second.stdout
    skipped = int(second.stdout.split("skipped")[1].split()[0])
    log.info("resume: %d finished before the kill, %d skipped after", finished_before, skipped)
    assert finished_before <= skipped < 12

    assert query(db, FINISHED_NOT_ONCE) == []
    assert count(db, sql) == 12
    # and none of the dead farm's QEMUs and screens runs after the second farm
    leftovers = [pid for pid in first_procs if runs(pid)]
    assert leftovers == [], leftovers


# -- bad inputs: clear errors before anything starts ----------------------------------------------


def nothing_started(fd: FarmDir) -> None:
    fd.sample()
    assert fd.seen == {}, fd.seen
    assert fd.processes() == []


@pytest.mark.parametrize("backend", ["qemu", "libvirt"])
def test_missing_image_is_a_clear_error(farm_dir: FarmDir, backend: str) -> None:
    empty = farm_dir.path / "no-images"
    empty.mkdir()
    with pytest.raises(ImageError) as err:
        Distributor(farm_dir.config(backend, image_dir=empty))
    message = str(err.value)
    assert str(empty / "image.elf") in message and "farm image build" in message
    nothing_started(farm_dir)


def test_unknown_backend_is_a_clear_error(farm_dir: FarmDir) -> None:
    with pytest.raises(ConfigError, match="backend must be one of libvirt, qemu, local, got 'xen'"):
        Distributor(backend="xen", state_dir=farm_dir.state, log_dir=farm_dir.log)
    nothing_started(farm_dir)


def test_bad_libvirt_uri_is_a_clear_error(farm_dir: FarmDir) -> None:
    with pytest.raises(ConfigError, match="not a libvirt URI"):
        Distributor(farm_dir.config("libvirt", libvirt_uri="not a uri"))
    with pytest.raises(ConfigError, match="farm drives QEMU"):
        Distributor(farm_dir.config("libvirt", libvirt_uri="xen:///system"))
    sock = farm_dir.path / "nonexistent" / "libvirt-sock"
    with pytest.raises(BackendError, match=re.escape(str(sock))):
        Distributor(farm_dir.config("libvirt", libvirt_uri=f"qemu+unix:///system?socket={sock}"))
    nothing_started(farm_dir)


@pytest.mark.parametrize(
    ("taskset", "error", "match"),
    [
        (TaskSet([Task({"pkg": "hey", "period": -5})]), TaskSetError, "period must be"),
        (TaskSet([Task({"pkg": "nope"})]), TaskSetError, "pkg 'nope' is unknown"),
        (object(), ConfigError, "is not a task set"),
    ],
    ids=["negative-period", "unknown-pkg", "not-a-taskset"],
)
def test_invalid_taskset_rejected_before_any_guest(
    farm_dir: FarmDir, taskset: Any, error: type[Exception], match: str
) -> None:
    dist = Distributor(farm_dir.config(max_machines=3))
    try:
        with pytest.raises(error, match=match):
            dist.add_job(taskset, Recorder())
        assert dist.machines() == [] and dist.jobs() == []
        assert not dist.get_distributor_state()
    finally:
        dist.close()
    nothing_started(farm_dir)


@pytest.mark.parametrize("bad", [0, 8, -1, "3", 2.5])
def test_bad_limit_values_raise_naming_the_range(farm_dir: FarmDir, bad: Any) -> None:
    dist = Distributor(farm_dir.config())
    try:
        with pytest.raises(ValueError, match=r"1\.\.7"):
            dist.set_max_machine_value(bad)
        assert dist.get_max_machine_value() == 1
        assert dist.machines() == []
    finally:
        dist.close()
    nothing_started(farm_dir)
