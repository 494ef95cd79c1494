"""The tap of a bridged qemu spare: made under a name of its own, renamed to the machine's.

A spare (:mod:`farm.backend.qemu_spare`) is restored before the machine it will
become is known, so on farm's bridge it runs on a tap of its own,
``farm-tapsPIDx`` (x: one letter per spare, so that several backends of one process
do not share it; a name some interface has is skipped; ``farm net down`` and the
clean-ups remove ``farm-tap*``),
with the template's MAC and address (:mod:`farm.backend.snapshot_net`: the
guest has them until its identity's ``net`` entry). At hand-over the tap is
renamed to the machine's (``farm-tapN``, as a plain spawn names it), so the
next spare can take the spare's name again and ``ip link`` shows which tap is
whose. A ``farm-tapN`` there already is removed first only if no live QEMU may
hold it (no carrier, no process has it open); else the spawn restores instead.
Linux renames a running interface since 6.2; an older kernel refuses
(EBUSY), and the tap is then taken down for the rename (QEMU keeps its file
descriptor either way; the guest waits for its identity and sends nothing);
if that fails, the tap is brought up again under its old name.
A dead farm's spare tap (its QEMU reaped, no carrier: nothing holds it open) is
removed when the next spare's tap is made.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import string
import threading
from pathlib import Path
from typing import Any

import psutil

from farm.backend.snapshot_net import TEMPLATE_MAC, WarmNet
from farm.bridge.bridge import TAP_PREFIX, TapNic, _index, _ipr, _wrap
from farm.errors import NetworkError

log = logging.getLogger(__name__)
SPARE_PREFIX = f"{TAP_PREFIX}s"
_numbers = itertools.count()
_lock = threading.Lock()


def spare_nic(net: WarmNet) -> TapNic:
    """Create a spare's tap on the bridge: a NIC with the template's MAC and address."""
    if net.bridge is None:
        raise NetworkError("a bridged spare needs the bridge")
    remove_unused()
    tap = spare_tap()
    net.bridge.add_tap(tap)
    return TapNic(tap, TEMPLATE_MAC, net.template_address.ip)


def spare_tap() -> str:
    """A tap name for a spare of this process that no interface has (15 characters at
    most): the letters wrap after 26 spares, and another farm's PID may match this one's
    modulo 100000 (add_tap would reuse its tap, and this spare's clean-up would then
    remove a live one)."""
    try:
        with _ipr() as ipr:
            taken = {link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
    except Exception as exc:
        raise _wrap("cannot list the network interfaces", exc) from exc
    prefix = f"{SPARE_PREFIX}{os.getpid() % 100000}"
    for _ in string.ascii_lowercase:
        with _lock:
            n = next(_numbers)
        tap = prefix + string.ascii_lowercase[n % 26]
        if tap not in taken:
            return tap
    raise NetworkError(f"every spare tap name of this process is in use ({SPARE_PREFIX}*)")


def remove_unused() -> list[str]:
    """Remove spare taps of dead farms: nothing holds them open (no carrier) and no live
    process has the PID in their name (a tap just made waits for its QEMU: no carrier yet)."""
    removed = []
    try:
        with _ipr() as ipr:
            for link in ipr.get_links():
                name = link.get_attr("IFLA_IFNAME")
                if not isinstance(name, str) or not name.startswith(SPARE_PREFIX):
                    continue
                if link.get_attr("IFLA_CARRIER") == 0 and not _owner_may_live(name):
                    ipr.link("del", index=link["index"])
                    removed.append(name)
    except Exception as exc:  # the next spare is made all the same
        log.warning("%s", _wrap("cannot remove unused spare taps", exc))
    if removed:
        log.info("removed unused spare taps %s", ", ".join(removed))
    return removed


def rename_tap(old: str, new: str) -> None:
    """Rename tap ``old`` to ``new``. A ``new`` left by a dead guest is removed first; one a
    live QEMU may hold is not: NetworkError (the spawn restores instead of taking the spare)."""
    try:
        with _ipr() as ipr:
            idx = _index(ipr, old)
            if idx is None:
                raise NetworkError(f"tap {old} vanished")
            stale = _index(ipr, new)
            if stale is not None:
                if _in_use(ipr, stale, new):
                    raise NetworkError(f"tap {new} is in use (a live guest's?): {old} not renamed")
                log.info("removing stale tap %s", new)
                ipr.link("del", index=stale)
            try:
                ipr.link("set", index=idx, ifname=new)
            except Exception as exc:  # Linux < 6.2: only a down interface is renamed
                if getattr(exc, "code", None) != errno.EBUSY:
                    raise
                _rename_down(ipr, idx, old, new)
    except NetworkError:
        raise
    except Exception as exc:
        raise _wrap(f"cannot rename tap {old} to {new}", exc) from exc


def _rename_down(ipr: Any, idx: int, old: str, new: str) -> None:
    """Take tap ``idx`` down, rename it ``new``, bring it up; if the rename or the "up"
    fails, the tap is brought back up under its old name (the spare keeps its network: a
    discard then removes it by that name) before the error is raised."""
    ipr.link("set", index=idx, state="down")
    try:
        ipr.link("set", index=idx, ifname=new)
        ipr.link("set", index=idx, state="up")
    except Exception:
        for step in ({"ifname": old}, {"state": "up"}):  # each one that can
            try:
                ipr.link("set", index=idx, **step)
            except Exception as exc:
                log.warning("%s", _wrap(f"tap {old}: cannot restore {step}", exc))
        raise


def _in_use(ipr: Any, idx: int, tap: str) -> bool:
    """Whether tap ``idx`` (``tap``) may carry a live guest: it has a carrier (a QEMU holds
    it open, the tap up) or a process holds it open (a down tap has no carrier)."""
    (link,) = ipr.get_links(idx)
    return bool(link.get_attr("IFLA_CARRIER")) or _held(tap)


def _held(tap: str) -> bool:
    """Whether some process has ``tap`` open: a /dev/net/tun descriptor whose fdinfo names
    it (``iff:``), as QEMU's; a process or descriptor gone meanwhile, or that cannot be
    read, is skipped (farm runs as root for its taps)."""
    line = f"iff:\t{tap}\n"
    own = os.stat("/proc/self/ns/net").st_ino  # another namespace's tap may have the name
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            proc = f"/proc/{pid}"
            with contextlib.suppress(OSError):
                if os.stat(f"{proc}/ns/net").st_ino == own and any(
                    _holds(proc, fd, line) for fd in os.listdir(f"{proc}/fd")
                ):
                    return True
    return False


def _holds(proc: str, fd: str, line: str) -> bool:
    """Whether descriptor ``fd`` of ``proc`` is a tun file whose fdinfo has ``line``."""
    try:
        tun = os.readlink(f"{proc}/fd/{fd}") == "/dev/net/tun"
        return tun and line in Path(f"{proc}/fdinfo/{fd}").read_text()
    except OSError:
        return False


def _owner_may_live(tap: str) -> bool:
    """Whether a live process may have made ``tap`` (its PID modulo 100000 is in the name)."""
    digits = tap[len(SPARE_PREFIX) : -1]
    if not digits.isdigit():
        return True  # not named by this module: not ours to remove
    low = int(digits)
    try:
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    except (OSError, ValueError):
        pid_max = 4194304
    return any(psutil.pid_exists(pid) for pid in range(low, pid_max + 1, 100000) if pid > 0)
