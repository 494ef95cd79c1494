"""Two hypervisor hosts on this machine, one of them a real libvirtd reached remotely.

Host ``a`` is the embedded driver inside the distributor's process (user-mode
networking). Host ``b`` is a second, real ``libvirtd`` started by this test in
its own network namespace ``nsB`` and its own mount namespace (tmpfs over
/run/libvirt, /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt and a
private /etc/libvirt with its qemu.conf), reached over its socket as
``qemu+unix:///system?socket=...``: libvirt's remote protocol. nsB has its own
bridge and farm's dhcpd (``farm net up`` run inside nsB); a veth port of that
bridge reaches the distributor's namespace nsD, which gets an address of B's
subnet, so B's guests (farm's static reservations) are routable from the
distributor. Host b has ``image_dir`` inside its private tmpfs, so its kernel
and initrd can only get there by storage-volume upload.

Scenario: limit 4 -> two guests on each host; SIGKILL libvirtd and B's QEMUs
mid-job -> B reads down, its sets are re-queued and every set finishes
exactly once, the respawns all on a; restart libvirtd -> B comes back (its
volumes uploaded again) and the next job places guests there again.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from farm.image import ImageInfo

from .conftest import PYTHON, REPO, NetLab, NetNs, _ip, ns_processes

B_SUBNET = "10.200.48.0/21"
B_BRIDGE = "farmbr"
D_ADDR = "10.200.48.2/21"  # the distributor's veth on B's bridge (outside the dhcp plan)
B_IMAGES = "/var/lib/libvirt/farm-images"  # only inside B's private tmpfs
PRIVATE = ("/run/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt")
QEMU_CONF = (
    'user = "root"\ngroup = "root"\nstdio_handler = "file"\nsecurity_driver = "none"\n'
    "dynamic_ownership = 0\nremember_owner = 0\n"
)

SCENARIO = r"""
import json, sys, time
from pathlib import Path
from farm.config import FarmConfig
from farm import Distributor
from farm.monitors import SqliteMonitor
from farm.taskset import Task, TaskSet

base, images, sock = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

def say(kind, **kw):
    print(json.dumps({"kind": kind, **kw}, default=str), flush=True)

def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}: {status()} {dist.machines()}")
        time.sleep(0.2)

def status():
    return {h["name"]: h for h in dist.backend_status()}

def sleeper(n, secs):
    return TaskSet([Task({"id": 1, "pkg": "shell", "config": {"command": f"sleep {secs}"},
                          "numberofjobs": 1, "x-run": range(n)})])

config = FarmConfig(
    backend="libvirt", state_dir=base / "s", log_dir=base / "log", image_dir=images,
    idle_linger=1.0, boot_timeout=150.0, max_concurrent_boots=2, hypervisor_retry_max=3.0,
    profile={"accel": "tcg", "memory": 256},
    hypervisors=[
        {"name": "a", "uri": f"qemu:///embed?root={base / 's' / 'lv'}", "max_machines": 4},
        {"name": "b", "uri": f"qemu+unix:///system?socket={sock}", "max_machines": 4,
         "network": "bridge", "bridge_name": "farmbr", "bridge_subnet": "10.200.48.0/21",
         "image_dir": "/var/lib/libvirt/farm-images"},
    ],
)
dist = Distributor(config)
try:
    dist.add_job(sleeper(10, 15), SqliteMonitor(base / "one.db"), name="one")
    dist.set_max_machine_value(4)
    wait_for(lambda: status()["a"]["machines"] == 2 and status()["b"]["machines"] == 2
             and sum(m["state"] == "running" for m in dist.machines()) == 4, 300, "2+2 running")
    before = status()
    addresses = sorted(m["address"] for m in dist.machines())
    say("kill", status=before, addresses=addresses)
    assert sys.stdin.readline().strip() == "killed"
    t0 = time.monotonic()
    wait_for(lambda: status()["b"]["state"] != "up", 30, "b down")
    say("lost", seconds=time.monotonic() - t0, status=status())
    finished = dist.wait_finished(timeout=400)
    after = status()
    say("finished", finished=finished, status=after)
    assert sys.stdin.readline().strip() == "restarted"
    wait_for(lambda: status()["b"]["state"] == "up", 60, "b up again")
    wait_for(lambda: not dist.get_distributor_state(), 60, "idle machines gone")
    back = status()
    dist.add_job(sleeper(4, 2), SqliteMonitor(base / "two.db"), name="two")
    wait_for(lambda: status()["b"]["machines"] >= 1, 200, "a guest on b again")
    during = status()
    finished2 = dist.wait_finished(timeout=300)
    say("done", finished=finished2, back=back, during=during, status=status())
finally:
    dist.close()
"""


# -- the second hypervisor: a real libvirtd in nsB ------------------------------------------


class Libvirtd:
    """A private libvirtd inside ``ns`` (own network and mount namespaces, own socket)."""

    def __init__(self, ns: NetNs) -> None:
        self.ns = ns
        self.dir = ns.dir / "libvirtd"
        self.dir.mkdir(exist_ok=True)
        self.socket = self.dir / "libvirt-sock"
        self.uri = f"qemu+unix:///system?socket={self.socket}"
        self.proc: subprocess.Popen[bytes] | None = None
        (self.dir / "libvirtd.conf").write_text(
            f'unix_sock_dir = "{self.dir}"\nauth_unix_rw = "none"\nauth_unix_ro = "none"\n'
            f'log_outputs = "3:file:{self.dir}/libvirtd.log"\n'
        )
        (self.dir / "qemu.conf").write_text(QEMU_CONF)

    def start(self, timeout: float = 60.0) -> None:
        """Start libvirtd and wait until its socket answers."""
        for path in PRIVATE[1:]:
            Path(path).mkdir(parents=True, exist_ok=True)  # mount points (empty on the host)
        mounts = " && ".join(f"mount -t tmpfs farmtest {p}" for p in (*PRIVATE, "/etc/libvirt"))
        script = (
            f"{mounts} && cp {self.dir}/qemu.conf /etc/libvirt/qemu.conf && exec libvirtd "
            f"-f {self.dir}/libvirtd.conf -p {self.dir}/libvirtd.pid"
        )
        self.socket.unlink(missing_ok=True)
        with open(self.dir / "stdout.log", "ab") as out:
            self.proc = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.ns.name,
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    script,
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"libvirtd exited {self.proc.returncode}: {self.log()}")
            probe = subprocess.run(
                ["virsh", "-c", self.uri, "version"], capture_output=True, timeout=20, check=False
            )
            if probe.returncode == 0:
                return
            time.sleep(0.3)
        raise RuntimeError(f"libvirtd did not answer on {self.socket}: {self.log()}")

    def qemus(self) -> list[psutil.Process]:
        """QEMU processes of this daemon's guests (they live in nsB)."""
        return [p for p in ns_processes(self.ns.name) if p.name().startswith("qemu")]

    def kill(self) -> None:
        """What a dead hypervisor host means: the daemon and its guests vanish at once."""
        victims = self.qemus()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        for proc in victims:
            proc.kill()
        psutil.wait_procs(victims, timeout=10)

    def stop(self) -> None:
        """Orderly end (test teardown): SIGTERM the daemon, then anything of its left."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        victims = self.qemus()
        for proc in victims:
            proc.kill()
        psutil.wait_procs(victims, timeout=10)

    def log(self) -> str:
        text = ""
        for name in ("stdout.log", "libvirtd.log"):
            path = self.dir / name
            if path.exists():
                text += f"--- {name}\n{path.read_text(errors='replace')[-2000:]}\n"
        return text


def _farm_net(ns: NetNs, action: str) -> subprocess.CompletedProcess[str]:
    """``farm net up|down`` inside ``ns`` with B's bridge and subnet."""
    conf = ns.dir / "farm-b.toml"
    conf.write_text(
        f'state_dir = "{ns.dir / "net"}"\nnetwork = "bridge"\n'
        f'bridge_name = "{B_BRIDGE}"\nbridge_subnet = "{B_SUBNET}"\n'
    )
    return ns.run([PYTHON, "-m", "farm.cli", "--config", str(conf), "net", action], timeout=60)


class Lines:
    """Line-wise reader of the scenario's stdout with a deadline per line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.seen: list[str] = []

    def next(self, kind: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 1.0)
            if not ready:
                if self.proc.poll() is not None:
                    break
                continue
            line = self.proc.stdout.readline()
            if not line:
                break
            self.seen.append(line)
            if line.startswith("{"):
                msg: dict[str, Any] = json.loads(line)
                assert msg["kind"] == kind, f"expected {kind}, got {msg}"
                return msg
        raise AssertionError(f"no {kind!r} message from the scenario; got {self.seen[-20:]}")

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()


def _count(db: Path, sql: str) -> list[tuple[Any, ...]]:
    import sqlite3

    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.mark.timeout(900)
def test_two_hosts_second_daemon_killed_and_restarted(netlab: NetLab, image: ImageInfo) -> None:
    """2+2 guests on two hosts; host b dies mid-job -> its sets finish on a; b is used again."""
    if not Path("/usr/sbin/libvirtd").exists():
        pytest.fail("libvirtd is not installed (apt-get install libvirt-daemon-system)")
    ns_d, ns_b = netlab.add(), netlab.add()
    up = _farm_net(ns_b, "up")
    assert up.returncode == 0, up.stderr
    _ip("-n", ns_b.name, "link", "add", "vb", "type", "veth", "peer", "name", "vd",
        "netns", ns_d.name)  # fmt: skip
    _ip("-n", ns_b.name, "link", "set", "vb", "master", B_BRIDGE, "up")
    _ip("-n", ns_d.name, "addr", "add", D_ADDR, "dev", "vd")
    _ip("-n", ns_d.name, "link", "set", "vd", "up")
    daemon = Libvirtd(ns_b)
    scenario: subprocess.Popen[str] | None = None
    try:
        daemon.start()
        script = ns_d.dir / "scenario.py"
        script.write_text(SCENARIO)
        scenario = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns_d.name,
                PYTHON,
                str(script),
                str(ns_d.dir),
                str(image.kernel.parent),
                str(daemon.socket),
            ],
            cwd=ns_d.dir,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(ns_d.dir / "stderr.log", "w"),  # noqa: SIM115 - closed with the process
            text=True,
            start_new_session=True,
        )
        lines = Lines(scenario)

        def context() -> str:
            return (
                "".join(lines.seen[-20:])
                + "\nstderr:\n"
                + _tail(ns_d.dir / "stderr.log")
                + "\ndistributor.log:\n"
                + _tail(ns_d.dir / "log" / "distributor.log", 6000)
                + daemon.log()
            )

        try:
            kill = lines.next("kill", 320)
            assert kill["status"]["a"]["machines"] == 2 and kill["status"]["b"]["machines"] == 2
            # b's guests are on b's bridge (its reservations), a's on a hostfwd port
            b_addrs = [a for a in kill["addresses"] if a.startswith("10.200.48.")]
            assert len(b_addrs) == 2, kill["addresses"]
            assert kill["status"]["b"]["uploads"] == 2  # kernel + initrd as volumes
            assert len(daemon.qemus()) == 2
            daemon.kill()
            lines.send("killed")
            lost = lines.next("lost", 60)
            assert lost["status"]["b"]["state"] == "down"
            fin = lines.next("finished", 420)
            assert fin["finished"] is True
            assert fin["status"]["b"]["spawned"] == kill["status"]["b"]["spawned"]  # none on b
            assert fin["status"]["a"]["spawned"] >= kill["status"]["a"]["spawned"] + 2
            assert fin["status"]["b"]["lost"] >= 1
            daemon.start()
            lines.send("restarted")
            done = lines.next("done", 420)
            if scenario.stdin is not None:
                scenario.stdin.close()
            rc = scenario.wait(120)
        except BaseException as exc:
            raise AssertionError(f"{exc!r}\n{context()}") from exc
        assert rc == 0, context()
        assert done["finished"] is True, context()
        assert done["back"]["b"]["state"] == "up"
        assert done["during"]["b"]["machines"] >= 1  # b used again after its restart
        assert done["status"]["b"]["uploads"] == 4  # the fresh daemon had no volumes: re-sent
        # every set of job one finished exactly once; b's two were stopped and re-run
        one = ns_d.dir / "one.db"
        assert _count(one, "SELECT state, count(*) FROM tasksets GROUP BY state") == [
            ("finished", 10)
        ]
        assert _count(one, "SELECT count(DISTINCT variant) FROM tasksets") == [(10,)]
        stopped = _count(one, "SELECT count(*) FROM runs WHERE state = 'stopped'")[0][0]
        assert stopped >= 2, context()
        two = ns_d.dir / "two.db"
        assert _count(two, "SELECT state, count(*) FROM tasksets GROUP BY state") == [
            ("finished", 4)
        ]
    finally:
        if scenario is not None and scenario.poll() is None:
            os.killpg(scenario.pid, signal.SIGKILL)
            scenario.wait(10)
        daemon.stop()
        _farm_net(ns_b, "down")
    assert daemon.qemus() == []


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "(none)"
