"""Names of a farm's guests outside farm: libvirt domain names and titles, screen sessions.

The user keeps the seed's ``qemuN`` (slot names, ``screen -xr qemuN``, ``farm
console qemuN``); on a libvirt daemon shared by several farms (or with the
user's own domains) each domain is called ``farm-<id>-qemuN``, ``<id>`` derived
from this host and the farm's state directory, so two farms never clash, and its
title says which farm owns it (``virsh list --title``). The embedded driver's
domains, private to one farm, keep the plain ``qemuN``.
"""

from __future__ import annotations

import functools
import hashlib
import socket
from collections.abc import Callable
from pathlib import Path

DOMAIN_PREFIX = "farm-"


def farm_id(state_dir: Path, host: str | None = None) -> str:
    """8 hex digits naming the farm of ``state_dir`` on ``host`` (this host by default)."""
    where = f"{host or socket.gethostname()}:{Path(state_dir).resolve()}"
    return hashlib.sha256(where.encode()).hexdigest()[:8]


def domain_name(state_dir: Path, name: str) -> str:
    """The libvirt domain name of machine ``name`` (``qemu1`` -> ``farm-1a2b3c4d-qemu1``)."""
    return f"{DOMAIN_PREFIX}{farm_id(state_dir)}-{name}"


def domain_namer(state_dir: Path, shared: bool) -> Callable[[str], str]:
    """Machine name -> domain name: prefixed on a shared daemon, plain ``qemuN`` otherwise.

    The embedded driver's domains live in this farm's own root, seen by no other farm,
    and a longer name would lengthen libvirt's socket paths under the state dir.
    """
    return functools.partial(domain_name, state_dir) if shared else str


def domain_title(state_dir: Path, name: str, pid: int) -> str:
    """The domain's title: which farm (state dir, pid) owns machine ``name``."""
    return f"farm {name} of {Path(state_dir).resolve()} (pid {pid})"
