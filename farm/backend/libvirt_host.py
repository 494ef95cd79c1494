"""What the libvirt backend does around a domain on the hypervisor's host.

Ownership (farm's metadata marker on each domain: whose is it, does its farm
still run), clearing a stale domain of the same name, reaping domains of dead
farms, finding a local domain's QEMU process (by the UUID on its command line)
and the ``screen`` session attached to its console pty.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
from pathlib import Path

import libvirt
import psutil

from farm.backend.libvirt_guest import _has_uuid, destroy_domain
from farm.backend.libvirt_xml import FarmMarker, embed_root, parse_marker, serial_pty
from farm.backend.screen import wait_screen_socket, wipe_dead
from farm.errors import BackendError
from farm.procs import ProcessRegistry

log = logging.getLogger(__name__)


def start_flags(uri: str) -> int:
    """createXML flags of every guest (user-net or bridged) a farm owns on ``uri``.

    AUTODESTROY: a daemon destroys the domain when farm's connection drops (farm
    died); the embedded driver dies with farm and does not support it (the
    watchdog reaps its guests).
    """
    return 0 if embed_root(uri) else int(libvirt.VIR_DOMAIN_START_AUTODESTROY)


def clear_name(conn: libvirt.virConnect, name: str, uri: str, glog: logging.Logger) -> None:
    """Destroy a leftover farm domain called ``name``; refuse if someone else's has it."""
    dom = next((d for d in conn.listAllDomains(0) if d.name() == name), None)
    if dom is None:
        return
    marker = marker_of(dom)
    if marker is None:
        raise BackendError(
            f"{name}: a domain of that name exists on {uri} and is not farm's; "
            "farm leaves it alone (rename it or use another libvirt URI)"
        )
    if marker.owner_pid != os.getpid() and owner_alive(marker):
        raise BackendError(
            f"{name}: domain belongs to another running farm (pid {marker.owner_pid} "
            f"on {marker.owner_host}, state dir {marker.state_dir})"
        )
    glog.warning("destroying stale farm domain %s", name)
    destroy_domain(dom, glog)


def reap_domains(conn: libvirt.virConnect, uri: str) -> list[str]:
    """Destroy the farm-marked domains whose owner is dead; their names."""
    reaped: list[str] = []
    try:
        domains = conn.listAllDomains(0)
    except libvirt.libvirtError as exc:
        raise BackendError(f"cannot list domains on {uri}: {exc}") from exc
    for dom in domains:
        marker = marker_of(dom)
        if marker is None or marker.owner_pid == os.getpid() or owner_alive(marker):
            continue
        name = dom.name()
        log.warning("reaping domain %s left by dead farm pid %d", name, marker.owner_pid)
        try:
            destroy_domain(dom, log.getChild(name))
        except BackendError as exc:
            log.error("%s", exc)  # keep reaping the others
            continue
        reaped.append(name)
    return reaped


def find_qemu(dom: libvirt.virDomain, name: str, uri: str) -> psutil.Process | None:
    """The domain's QEMU process: the driver's pidfile if any, else a scan; checked by UUID."""
    uuid = dom.UUIDString()
    root = embed_root(uri)
    pidfiles = [Path("/run/libvirt/qemu") / f"{name}.pid"]
    if root is not None:
        pidfiles.insert(0, root / "run" / "qemu" / f"{name}.pid")
    for pidfile in pidfiles:
        try:
            proc = psutil.Process(int(pidfile.read_text().strip()))
        except (OSError, ValueError, psutil.Error):
            continue
        if _has_uuid(proc, uuid):
            return proc
    for proc in psutil.process_iter(["name"]):
        if str(proc.info["name"] or "").startswith("qemu") and _has_uuid(proc, uuid):
            return proc
    log.getChild(name).warning("QEMU process of domain %s not found", uuid)
    return None


def start_screen(
    dom: libvirt.virDomain, name: str, registry: ProcessRegistry, glog: logging.Logger
) -> subprocess.Popen[bytes] | None:
    """``screen -D -m -S name <pty>`` so ``screen -xr name`` attaches to the console."""
    pty = serial_pty(dom.XMLDesc(0))
    if pty is None or shutil.which("screen") is None:
        glog.warning("no screen session (pty %s, screen %s)", pty, shutil.which("screen"))
        return None
    wipe_dead(name)
    try:
        screen = subprocess.Popen(
            ["screen", "-D", "-m", "-S", name, pty],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        glog.warning("cannot start screen on %s: %s", pty, exc)
        return None
    registry.record(f"{name}.screen", screen.pid, "screen")
    wait_screen_socket(screen, name, glog)
    return screen


def close_quietly(conn: libvirt.virConnect, watching: bool) -> None:
    """Unregister the close callback (if ``watching``) and close the connection."""
    if watching:
        with contextlib.suppress(libvirt.libvirtError):
            conn.unregisterCloseCallback()
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()


def marker_of(dom: libvirt.virDomain) -> FarmMarker | None:
    """farm's marker on ``dom``; None for a domain that is not farm's (or vanished)."""
    try:
        return parse_marker(dom.XMLDesc(0))
    except libvirt.libvirtError:
        return None


def owner_alive(marker: FarmMarker) -> bool:
    """True unless the marker's owner is a farm process of this host that is gone."""
    if marker.owner_host != socket.gethostname():
        return True  # another host's farm: not ours to judge
    try:
        started = psutil.Process(marker.owner_pid).create_time()
    except psutil.NoSuchProcess:
        return False
    return not marker.owner_start or abs(started - marker.owner_start) < 0.01
