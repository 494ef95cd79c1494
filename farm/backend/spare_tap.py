"""The tap of a bridged qemu spare: made under a name of its own, renamed to the machine's.

A spare (:mod:`farm.backend.qemu_spare`) is restored before the machine it will
become is known, so on farm's bridge it runs on a tap of its own,
``farm-tapsPID`` (``farm net down`` and the clean-ups remove ``farm-tap*``),
with the template's MAC and address (:mod:`farm.backend.snapshot_net`: the
guest has them until its identity's ``net`` entry). At hand-over the tap is
renamed to the machine's (``farm-tapN``, as a plain spawn names it), so the
next spare can take the spare's name again and ``ip link`` shows which tap is
whose. Linux renames a running interface since 6.2; an older kernel refuses
(EBUSY), and the tap is then taken down for the rename (QEMU keeps its file
descriptor either way; the guest waits for its identity and sends nothing).
"""

from __future__ import annotations

import errno
import logging
import os

from farm.backend.snapshot_net import TEMPLATE_MAC, WarmNet
from farm.bridge.bridge import TAP_PREFIX, TapNic, _index, _ipr, _wrap
from farm.errors import NetworkError

log = logging.getLogger(__name__)


def spare_tap() -> str:
    """The tap name of this process's spare (one spare at a time per backend)."""
    return f"{TAP_PREFIX}s{os.getpid() % 1000000}"


def spare_nic(net: WarmNet) -> TapNic:
    """Create the spare's tap on the bridge: a NIC with the template's MAC and address."""
    if net.bridge is None:
        raise NetworkError("a bridged spare needs the bridge")
    tap = spare_tap()
    net.bridge.add_tap(tap)
    return TapNic(tap, TEMPLATE_MAC, net.template_address.ip)


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
