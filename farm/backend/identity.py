"""How a guest of farm's own image gets its name and key: the virtio-serial identity port.

Cold boots (qemu and local libvirt backends) use the same exchange as warm
starts (:mod:`farm.backend.snapshot`): the kernel command line carries only
``farm.identity=wait``; /init says ``farm-identity: waiting`` on the port
``farm.identity`` (a unix socket QEMU listens on, in a 0700 directory) and
farm answers one JSON line holding the guest's own key
(``guest_key(token, name)``). So the key is on no command line (QEMU's, the
guest kernel's, libvirt's XML), in no log and in no environment.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from farm.agent.protocol import guest_key
from farm.backend.base import Guest
from farm.backend.identity_port import (
    WAITING,
    SnapshotError,
    connect,
    read_line,
    send_identity,
)
from farm.config import FarmConfig
from farm.errors import ConfigError
from farm.profile import MachineProfile

log = logging.getLogger(__name__)
G = TypeVar("G", bound=Guest)


def takes_identity(profile: MachineProfile) -> bool:
    """True if guests of ``profile`` (farm's own image) can get their key on the identity port."""
    return profile.farm_cmdline and profile.session == "farm"


def identity_dir(
    profile: MachineProfile, state_dir: Path, name: str, local: bool, fresh: bool = False
) -> Path | None:
    """Where guest ``name``'s identity socket lives (0700); None: it takes a token argument."""
    if not (local and takes_identity(profile)):
        return None
    directory = (Path(state_dir) / "identity" / name).resolve()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if fresh:
        (directory / "identity.sock").unlink(missing_ok=True)
    return directory


BOOT_ARG = "farm.identity=boot"


def cold_profile(profile: MachineProfile) -> MachineProfile:
    """``profile`` whose guests ask for their identity at boot (no token argument)."""
    return replace(profile, kernel_args=f"{profile.kernel_args} {BOOT_ARG}".strip())


def kernel_cmdline(
    profile: MachineProfile, token: str, ident: Path | None, port: int, user_net: bool
) -> str:
    """The guest's kernel arguments: no token when it comes over the identity socket ``ident``."""
    if ident is not None:
        return cold_profile(profile).kernel_cmdline(None, port, user_net=user_net)
    return profile.kernel_cmdline(token, port, user_net=user_net)


def hand_over_later(
    run_dir: Path, name: str, key: str, alive: Callable[[], bool], timeout: float
) -> threading.Thread:
    """:func:`hand_over` in a daemon thread (spawn returns while the guest boots)."""

    def run() -> None:
        try:
            hand_over(run_dir, name, key, alive, timeout)
        except (SnapshotError, ConfigError, OSError) as exc:
            level = logging.WARNING if alive() else logging.DEBUG
            log.getChild(name).log(level, "identity not delivered: %s", exc)

    thread = threading.Thread(target=run, name=f"identity-{name}", daemon=True)
    thread.start()
    return thread


def hand_over(
    run_dir: Path, name: str, key: str, alive: Callable[[], bool], timeout: float
) -> None:
    """Cold boot: wait for the guest to ask for its identity, then give it (key included).

    The key thus reaches the guest on its virtio-serial port: never on a command
    line (QEMU's or the guest kernel's), in a log or in an environment.
    """
    if not key or any(c.isspace() for c in key):
        raise ConfigError("token must be non-empty and contain no whitespace")
    with connect(run_dir / "identity.sock", alive, 10.0) as ident:
        line = read_line(ident, timeout, alive)
        if not line.startswith(WAITING):
            raise SnapshotError(f"guest said {line[:200]!r}, not {WAITING!r}")
        send_identity(ident, name, key, alive, timeout)


def socket_for(profile: MachineProfile, config: FarmConfig, name: str, local: bool) -> Path | None:
    """A fresh identity socket path for guest ``name``; None: it takes a token argument."""
    directory = identity_dir(profile, config.state_dir, name, local, fresh=True)
    return None if directory is None else directory / "identity.sock"


def deliver(guest: G, profile: MachineProfile, config: FarmConfig, token: str, local: bool) -> G:
    """Hand ``guest`` its key in the background when it boots with an identity port."""
    directory = identity_dir(profile, config.state_dir, guest.name, local)
    if directory is not None:
        key = guest_key(token, guest.name)
        hand_over_later(directory, guest.name, key, guest.alive, config.boot_timeout)
    return guest
