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
whose. Linux renames a running interface since 6.2; an older kernel refuses
(EBUSY), and the tap is then taken down for the rename (QEMU keeps its file
descriptor either way; the guest waits for its identity and sends nothing).
A dead farm's spare tap (its QEMU reaped, no carrier: nothing holds it open) is
removed when the next spare's tap is made.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import string
import threading
from pathlib import Path

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
    """Rename tap ``old`` to ``new`` (a stale ``new`` without a guest is removed first)."""
    try:
        with _ipr() as ipr:
            idx = _index(ipr, old)
            if idx is None:
                raise NetworkError(f"tap {old} vanished")
            stale = _index(ipr, new)
            if stale is not None:
                log.info("removing stale tap %s", new)
                ipr.link("del", index=stale)
            try:
                ipr.link("set", index=idx, ifname=new)
            except Exception as exc:  # Linux < 6.2: only a down interface is renamed
                if getattr(exc, "code", None) != errno.EBUSY:
                    raise
                ipr.link("set", index=idx, state="down")
                ipr.link("set", index=idx, ifname=new)
                ipr.link("set", index=idx, state="up")
    except NetworkError:
        raise
    except Exception as exc:
        raise _wrap(f"cannot rename tap {old} to {new}", exc) from exc


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
