"""The built guest image boots under plain QEMU (TCG) and its agent does real work."""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import pytest

from farm.accel import clear_cache, probe_kvm, resolve_accel
from farm.agent.protocol import Channel, agent_version
from farm.errors import AuthError
from farm.events import EventType
from farm.image import ImageInfo, build
from farm.monitors import FINISHED_NOT_ONCE, SqliteMonitor
from farm.profile import MachineProfile
from farm.session import FarmSession
from farm.tasksets.example import Hey0TaskSet, PeriodicTaskSet
from tests.vm.conftest import BOOT_TIMEOUT, GuestFactory, qemu_processes

TOKEN = "vm-test-token"
#: user-mode networking: the profile passes QEMU's fixed address (farm.ip=), no DHCP
INIT_STEPS = (
    "mounted",
    "cmdline read",
    "modules loaded",
    "eth0 up",
    "static address 10.0.2.15/24,10.0.2.2",
    "starting agent",
)


def _request(channel: Channel, request_id: int, op: str, **args):
    """Send one request; return its reply, collecting events that arrive meanwhile."""
    channel.send({"type": "request", "id": request_id, "op": op, "args": args})
    events = []
    while True:
        message = channel.recv()
        if message["type"] == "reply" and message["id"] == request_id:
            return message, events
        if message["type"] == "event":
            events.append(message["event"])


def test_guest_boots_handshakes_pings_and_runs_tasks(
    image: ImageInfo, profile: MachineProfile, guest_factory: GuestFactory
) -> None:
    with guest_factory(profile, TOKEN) as guest:
        channel = guest.wait_for_agent(TOKEN, BOOT_TIMEOUT)
        sock, hello = channel.sock, channel.hello
        with sock:
            assert hello["agent_version"] == image.agent_version == agent_version()
            sock.settimeout(60)
            reply, _ = _request(channel, 1, "ping")
            assert reply["ok"] and reply["result"]["ts"] > 0
            task = {"id": 1, "pkg": "hey", "priority": 10, "numberofjobs": 2, "period": 2000}
            reply, events = _request(channel, 2, "start", tasks=[task])
            assert reply["ok"], reply
            while not any(e["type"] == "JOBS_DONE" for e in events):
                message = channel.recv()
                if message["type"] == "event":
                    events.append(message["event"])
        types = [e["type"] for e in events if e.get("task_id") == 1]
        assert types == ["START", "EXIT", "START", "EXIT", "JOBS_DONE"], events
        console = guest.console_text()
    for step in INIT_STEPS:
        assert f"farm-init: {step}" in console, console
    assert "farm-init: ERROR" not in console


def test_image_boots_on_a_pc_board_too(
    profile: MachineProfile, guest_factory: GuestFactory
) -> None:
    """farm's board is microvm (virtio-mmio); a profile with q35 keeps PCI and still boots."""
    assert profile.board == "microvm" and profile.virtio_mmio()
    q35 = replace(profile, machine="q35")
    with guest_factory(q35, TOKEN) as guest:
        assert "virtio-net-pci" in " ".join(guest.argv) and "microvm" not in " ".join(guest.argv)
        channel = guest.wait_for_agent(TOKEN, BOOT_TIMEOUT)
        with channel.sock:
            channel.sock.settimeout(60)
            reply, _ = _request(channel, 1, "ping")
            assert reply["ok"], reply


def test_session_runs_hey0_and_a_periodic_set_into_sqlite(
    profile: MachineProfile, guest_factory: GuestFactory, tmp_path: Path
) -> None:
    monitor = SqliteMonitor(tmp_path / "results.db")
    variants = [next(Hey0TaskSet().variants()), next(PeriodicTaskSet().variants())]
    received: dict[int, list[str]] = {}
    with guest_factory(profile, TOKEN) as guest:
        guest.wait_for_agent(TOKEN, BOOT_TIMEOUT).sock.close()
        session = FarmSession("127.0.0.1", guest.port, token=TOKEN)
        try:
            for n, variant in enumerate(variants):
                monitor.__taskset_start__(variant)
                session.start(variant)
                deadline = time.monotonic() + 120
                while not session.finished() and time.monotonic() < deadline:
                    for event in session.run(1.0):
                        received.setdefault(n, []).append(str(event.type))
                        monitor.__taskset_event__(variant, event)
                assert session.finished(), f"task set {n} did not finish: {received.get(n)}"
                monitor.__taskset_finish__(variant)
        finally:
            session.close()
            monitor.close()
    assert str(EventType.START) in received[0] and str(EventType.JOBS_DONE) in received[0]
    with sqlite3.connect(tmp_path / "results.db") as conn:
        stored = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        assert stored == sum(len(v) for v in received.values())
        assert conn.execute(FINISHED_NOT_ONCE).fetchall() == []
        per_task = dict(
            conn.execute("SELECT task_id, COUNT(*) FROM results GROUP BY task_id").fetchall()
        )
    conn.close()
    periodic = {t["id"]: t["numberofjobs"] for t in variants[1].description()["tasks"]}
    for task_id, jobs in periodic.items():
        assert per_task.get(task_id, 0) >= jobs


def test_guest_refuses_a_wrong_token(profile: MachineProfile, guest_factory: GuestFactory) -> None:
    with guest_factory(profile, TOKEN) as guest:
        with pytest.raises(AuthError):
            guest.wait_for_agent("not-the-token", BOOT_TIMEOUT)
        # the agent is still there for the right token
        guest.wait_for_agent(TOKEN, BOOT_TIMEOUT).sock.close()


def test_guest_without_network_reports_error_and_powers_off(
    profile: MachineProfile, guest_factory: GuestFactory
) -> None:
    with guest_factory(profile.without_network(), TOKEN) as guest:
        console = guest.wait_for_console("farm-init: powering off", BOOT_TIMEOUT)
        status = guest.proc.wait(BOOT_TIMEOUT)
    assert "farm-init: ERROR: no network interface eth0" in console, console
    assert status == 0  # the guest powered itself off; QEMU was not killed


def test_guest_without_dhcp_server_gives_up_with_error(
    profile: MachineProfile, guest_factory: GuestFactory
) -> None:
    # a NIC with no network behind it: the link is up, nobody answers DHCP
    lonely = MachineProfile.from_dict(
        {
            **profile.without_network().to_dict(),
            "kernel_args": f"{profile.kernel_args} farm.dhcp_tries=1",
            "extra_args": ["-device", profile.virtio_device("net")],
        }
    )
    with guest_factory(lonely, TOKEN) as guest:
        console = guest.wait_for_console("farm-init: powering off", BOOT_TIMEOUT)
    assert "farm-init: eth0 up" in console
    assert "farm-init: ERROR: no DHCP lease on eth0 after 1 attempts" in console, console


def test_guest_without_token_reports_error(
    profile: MachineProfile, guest_factory: GuestFactory
) -> None:
    with guest_factory(profile, None) as guest:
        console = guest.wait_for_console("farm-init: powering off", BOOT_TIMEOUT)
    assert "farm-init: ERROR: no farm.token=" in console, console


def test_guest_runs_farms_preempt_rt_kernel(
    image: ImageInfo, profile: MachineProfile, guest_factory: GuestFactory
) -> None:
    """The default image boots farm's own kernel: PREEMPT_RT, given QEMU's APIC bus clock."""
    assert image.kernel_package.startswith("linux-source-"), image
    assert image.kernel_release.endswith("-farm"), image
    with guest_factory(profile, TOKEN) as guest:
        channel = guest.wait_for_agent(TOKEN, BOOT_TIMEOUT)
        sock = channel.sock
        with sock:
            sock.settimeout(60)
            command = "uname -r; uname -v; cat /proc/cmdline"
            reply, _ = _request(channel, 1, "exec", command=command, timeout=30)
            assert reply["ok"], reply
            rid, data, state = reply["result"]["id"], b"", "running"
            for n in range(2, 30):
                args = {"id": rid, "offset": len(data), "wait": 5}
                reply, _ = _request(channel, n, "exec_poll", **args)
                assert reply["ok"], reply
                data += base64.b64decode(reply["result"]["data"])
                state = reply["result"]["state"]
                if state not in ("waiting", "running") and not reply["result"]["data"]:
                    break
    assert state == "exited", reply
    out = data.decode()
    release, version, cmdline = out.splitlines()[:3]
    assert release == image.kernel_release
    assert "PREEMPT_RT" in version, out
    assert "lapic_timer_frequency=1000000000" in cmdline


def test_image_records_its_agent_version(image: ImageInfo) -> None:
    manifest = json.loads(image.manifest.read_text())
    assert manifest["agent_version"] == image.agent_version == agent_version()
    assert manifest["initrd"]["summary"]["agent_version"] == agent_version()
    assert manifest["kernel"]["output"]["sha256"]


def test_second_build_reuses_everything_and_forced_build_is_reproducible(
    image: ImageInfo,
) -> None:
    again = build(out_dir=image.kernel.parent)
    assert not again.kernel_rebuilt and not again.initrd_rebuilt
    before = json.loads(image.manifest.read_text())
    forced = build(force=True, out_dir=image.kernel.parent)
    assert forced.kernel_rebuilt and forced.initrd_rebuilt
    after = json.loads(forced.manifest.read_text())
    for part in ("kernel", "initrd"):
        assert after[part]["output"] == before[part]["output"], part


def test_accel_auto_probe_decides_and_leaves_no_qemu(image: ImageInfo) -> None:
    """The real probe (tiny guest, then the image's kernel under KVM) ends with a decision."""
    clear_cache()
    usable, reason = probe_kvm("qemu-system-x86_64", kernel=image.kernel)
    assert reason
    assert resolve_accel("auto", "qemu-system-x86_64", kernel=image.kernel) in ("kvm", "tcg")
    assert qemu_processes("farm-kvm-probe-") == []
    if Path("/dev/kvm").exists() and not usable:
        # e.g. this development machine: /dev/kvm is there but guests hang
        assert "KVM" in reason or "kvm" in reason
