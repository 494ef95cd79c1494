"""The domain of one libvirt guest, from the machine profile (same boot as plain QEMU).

Split from :mod:`farm.backend.libvirt`: the kernel arguments (the key comes over
the identity port: a local socket, or a channel stream on remote hosts; warm
starts wait for it, see :mod:`farm.backend.libvirt_snapshot`), boot files
(uploaded to a host with its own image dir) and the accelerator.
"""

from __future__ import annotations

import logging
import shutil
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import libvirt
import psutil

from farm.backend import identity, naming
from farm.backend.libvirt_xml import DomainSpec, offers_kvm
from farm.backend.snapshot import warm_profile
from farm.backend.snapshot_net import WarmNet
from farm.bridge.bridge import plan_for
from farm.errors import BackendError

if TYPE_CHECKING:
    from farm.backend.libvirt import LibvirtBackend

log = logging.getLogger("farm.backend.libvirt")


def boot_files(b: LibvirtBackend) -> tuple[Path, Path | None]:
    """Kernel and initrd paths as the hypervisor sees them (uploaded when it has its own)."""
    p = b.profile
    kernel = p.kernel.resolve()
    initrd = p.initrd.resolve() if p.initrd is not None else None
    if b._uploader is None:
        return kernel, initrd
    conn = b.connection()
    remote_initrd = Path(b._uploader.ensure(conn, initrd)) if initrd else None
    return Path(b._uploader.ensure(conn, kernel)), remote_initrd


def guest_spec(
    b: LibvirtBackend, name: str, token: str, console: Path | None, port: int, mode: str = "cold"
) -> DomainSpec:
    """The domain of guest ``name`` from the machine profile (same boot as plain QEMU).

    ``mode``: ``cold`` boots; ``template`` boots and waits for its identity (to be
    saved); ``warm`` is the template's domain plus ``-incoming defer``.
    """
    p, agent, user_net = b.profile, b.config.agent_port, port != 0
    stream = b.identity_stream
    ident = None if stream else identity.socket_for(p, b.config, name, b.local)
    channel = stream and identity.takes_identity(p)
    if mode != "cold":  # bridged: the template's static address (snapshot_net)
        net = warm_net(b)
        wp = warm_profile(p) if net is None else net.profile(warm_profile(p))
        cmdline = wp.kernel_cmdline(None, agent, user_net=user_net)
    elif channel:
        cmdline = identity.cold_profile(p).kernel_cmdline(None, agent, user_net=user_net)
    else:
        cmdline = identity.kernel_cmdline(p, token, ident, agent, user_net)
    incoming = ("-incoming", "defer") if mode == "warm" else ()
    me = psutil.Process()
    emulator = (shutil.which(p.qemu) if b.local else None) or p.qemu
    kernel, initrd = boot_files(b)
    return DomainSpec(
        name=b.domain_name(name),
        title=naming.domain_title(b.config.state_dir, name, me.pid),
        domain_type=b.domain_type(),
        emulator=emulator,
        machine=p.machine,
        memory_mib=p.memory,
        smp=p.smp,
        kernel=kernel,
        initrd=initrd,
        cmdline=cmdline,
        identity_socket=ident,
        identity_channel=channel,
        console_log=console,
        host_port=port,
        agent_port=b.config.agent_port,
        nic_model=p.nic_device,
        virtio_mmio=p.virtio_mmio(),
        cpu=p.cpu or None,
        extra_args=(
            *(("-bios", bios) if (bios := p.resolved_bios()) else ()),
            *p.extra_args,
            *incoming,
        ),
        serial=p.serial,
        owner_pid=me.pid,
        owner_start=me.create_time(),
        owner_host=socket.gethostname(),
        state_dir=b.config.state_dir.resolve(),
        hostfwd_addr="127.0.0.1" if b.local else "0.0.0.0",
    )


def warm_net(b: LibvirtBackend) -> WarmNet | None:
    """Bridged: the network of the warm template and restored guests (their identity's
    ``net`` entry); None on the user network. libvirt makes each domain's tap itself."""
    return WarmNet(plan_for(b.config), b.profile.nic_device) if b.bridged else None


def domain_type(b: LibvirtBackend) -> str:
    """``kvm`` or ``qemu`` (TCG): the profile's accel, probed locally when ``auto``.

    A remote host cannot be probed from here: with ``auto`` it gets KVM when
    its libvirt offers KVM domains for the guest's architecture.
    """
    if b.local or b.profile.accel != "auto":
        return "kvm" if b.profile.resolved_accel() == "kvm" else "qemu"
    try:
        caps = b.connection().getCapabilities()
    except libvirt.libvirtError as exc:
        raise BackendError(f"cannot read capabilities of {b.uri}: {exc}") from exc
    arch = DomainSpec.arch_of(b.profile.qemu)
    kvm = offers_kvm(caps, arch)
    log.info("%s: %s for %s guests", b.uri, "KVM" if kvm else "TCG", arch)
    return "kvm" if kvm else "qemu"
