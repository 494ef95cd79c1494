"""Warm start: save a booted guest once, restore copies of it, each with its own identity.

A *template* guest boots with ``farm.identity=wait`` on its kernel command line:
its /init (images/init.sh.in) brings the network up, imports the agent, runs one
private task set (:mod:`farm.agent.warmup`: what only a process's first set does
is then part of the snapshot) and then says ``farm-identity: waiting`` on the
virtio-serial port ``farm.identity`` and blocks reading one JSON line. At that
point farm stops the template and migrates its state into a file (QMP ``getfd``
hands QEMU the open file, ``migrate`` to ``fd:``): the snapshot. A restored guest
is a new QEMU process with the same command line plus ``-incoming defer``: farm
loads the file (``getfd``, ``migrate-incoming`` from ``fd:``), resumes it
(``cont``) and writes the guest's identity (name, agent token, wall-clock time, a
random seed) to the port; the guest starts its agent with that token and answers
``farm-identity: ok NAME`` as soon as the agent listens, so the first handshake
attempt succeeds.

Snapshots live in ``<state_dir>/snapshots/<key>.bin`` next to a ``.json``
with their size and SHA256. The key is a digest of everything the saved state
depends on: the QEMU version, the full command line minus the per-guest parts
(name, sockets, console, host port), which includes the accelerator, memory,
CPU, firmware and kernel arguments, and the image (kernel and initrd digests
from ``manifest.json`` plus their sizes and mtimes). A changed input gives a
new key, hence a new snapshot. Building is serialised by a lock file, so
concurrent guests (threads or farm processes) build it once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil

from farm.backend import snapshot_mem

# the identity protocol, re-exported: backends and tests name these through this module
from farm.backend.identity_port import PORT_NAME as PORT_NAME
from farm.backend.identity_port import WAITING as WAITING
from farm.backend.identity_port import SnapshotCorrupt as SnapshotCorrupt
from farm.backend.identity_port import SnapshotError as SnapshotError
from farm.backend.identity_port import SnapshotLoadFailed as SnapshotLoadFailed
from farm.backend.identity_port import connect as _connect
from farm.backend.identity_port import read_line as _read_line
from farm.backend.identity_port import send_identity as _send_identity
from farm.backend.identity_port import warm_up_guest as warm_up_guest
from farm.backend.snapshot_mem import sha256 as _sha256
from farm.backend.snapshot_net import WarmNet
from farm.errors import ConfigError, LaunchError
from farm.procs import ProcessRegistry
from farm.profile import MachineProfile
from farm.qemu import QemuProcess, QmpClient, QmpError, process
from farm.qemu.qmp import connect

log = logging.getLogger(__name__)

#: bump when the snapshot's layout or the identity protocol changes
FORMAT = "2"
WAIT_ARG = "farm.identity=wait"
#: how long loading a snapshot and the guest's identity answer may take
RESTORE_TIMEOUT = 30.0
_verified: set[tuple[str, int, int]] = set()  # (path, size, mtime_ns) whose SHA256 matched
_versions: dict[str, str] = {}  # "binary|mtime" -> first line of its --version


@dataclass(frozen=True)
class Snapshot:
    """A saved guest state file and the key of the inputs it was made from."""

    path: Path
    key: str
    size: int
    sha256: str
    ram: Path | None = None  # the template's RAM, mapped copy-on-write (snapshot_mem)


def check_profile(profile: MachineProfile, network: str, bridged: bool = False) -> None:
    """ConfigError unless these guests can be warm started (``bridged``: see snapshot_net)."""
    if network == "bridge" and not bridged:
        raise ConfigError(
            "warm_start does not work with network = 'bridge' on this backend: the NIC's MAC "
            "address is part of the saved guest state, so every restored guest would have "
            "the template's MAC (use network = 'user', or warm_start = false)"
        )
    if not profile.farm_cmdline or profile.session != "farm":
        raise ConfigError(
            f"warm_start needs farm's own guest image (profile {profile.name!r} does not take "
            "farm's kernel arguments)"
        )


def warm_profile(profile: MachineProfile) -> MachineProfile:
    """The profile whose guests wait for their identity instead of reading a token."""
    if WAIT_ARG in profile.kernel_args.split():
        return profile
    return replace(profile, kernel_args=f"{profile.kernel_args} {WAIT_ARG}".strip())


def identity_args(sock: Path, profile: MachineProfile) -> list[str]:
    """QEMU arguments of the identity port: a virtio-serial port on a unix socket, on
    ``profile``'s board (virtio-mmio on microvm, else PCI)."""
    path = str(sock).replace(",", ",,")
    return [
        "-device", f"{profile.virtio_device('serial')},id=farmser",
        "-chardev", f"socket,id=farmid,path={path},server=on,wait=off",
        "-device", f"virtserialport,bus=farmser.0,chardev=farmid,name={PORT_NAME}",
    ]  # fmt: skip


def guest_argv(
    profile: MachineProfile,
    name: str,
    run_dir: Path,
    *,
    hostfwd_port: int | None,
    console: Path | str = "stdio",
    extra: list[str] | None = None,
    incoming: bool = True,
) -> list[str]:
    """Command line of a template (``incoming=False``) or restored guest in ``run_dir``."""
    tail = [*(extra or []), *identity_args(run_dir / "identity.sock", profile)]
    if incoming:
        tail += ["-incoming", "defer"]
    return warm_profile(profile).qemu_argv(
        name,
        hostfwd_port=hostfwd_port,
        token=None,
        console=console,
        qmp_socket=run_dir / "qmp.sock",
        extra=tail,
    )


def qemu_version(qemu: str) -> str:
    """First line of ``qemu --version`` (part of the key: state formats change); cached."""
    binary = shutil.which(qemu) or qemu
    try:
        stamp = f"{binary}|{os.stat(binary).st_mtime_ns}"
    except OSError as exc:
        raise SnapshotError(f"QEMU binary {qemu!r} not found: {exc}") from exc
    if stamp not in _versions:
        try:
            _versions[stamp] = process.qemu_version(binary) or "?"
        except LaunchError as exc:
            raise SnapshotError(f"cannot run {qemu} --version: {exc}") from exc
    return _versions[stamp]


def _image_identity(profile: MachineProfile) -> dict[str, Any]:
    """Digests (from manifest.json when present), sizes and mtimes of kernel and initrd."""
    files = {"kernel": profile.kernel, "initrd": profile.initrd}
    manifest: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        manifest = json.loads((profile.kernel.parent / "manifest.json").read_text())
    out: dict[str, Any] = {}
    for part, path in files.items():
        if path is None:
            continue
        st = Path(path).stat()
        recorded = manifest.get(part, {}).get("output", {}) if isinstance(manifest, dict) else {}
        out[part] = [str(path), st.st_size, st.st_mtime_ns, recorded.get("sha256")]
    return out


def snapshot_key(profile: MachineProfile, net: WarmNet | None = None, ram: bool = False) -> str:
    """Digest of every input the saved state depends on (see the module docstring)."""
    if net is not None:
        profile = net.profile(profile)
    argv = guest_argv(profile, "guest", Path("/run"), hostfwd_port=None, incoming=False)
    doc = {
        "format": FORMAT,
        "qemu": qemu_version(profile.qemu),
        "argv": argv,
        "image": _image_identity(profile),
        "net": None if net is None else net.key(),
        "ram": ram,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:20]


def _load(path: Path, key: str) -> Snapshot | None:
    """The snapshot at ``path``; None if there is none; SnapshotCorrupt if damaged (removed)."""
    meta_path = path.with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_text())
        st = path.stat()
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("snapshot %s unreadable (%s): rebuilding it", path, exc)
        discard(path)
        return None
    size, sha = int(meta.get("size", -1)), str(meta.get("sha256", ""))
    ram = snapshot_mem.ram_path(path) if "ram_sha256" in meta else None
    stamp = (str(path), st.st_size, st.st_mtime_ns)
    damaged = stamp not in _verified and (st.st_size != size or _sha256(path) != sha)
    if damaged or (ram is not None and not snapshot_mem.intact(ram, meta)):
        discard(path)
        raise SnapshotCorrupt(f"snapshot {path} is corrupt (size or SHA256 differ): removed")
    _verified.add(stamp)
    return Snapshot(path, key, size, sha, ram)


def discard(path: Path) -> None:
    """Remove a snapshot and its metadata (the next warm start rebuilds it)."""
    path.unlink(missing_ok=True)
    path.with_suffix(".json").unlink(missing_ok=True)
    snapshot_mem.discard(snapshot_mem.ram_path(path))


def ensure(
    profile: MachineProfile,
    state_dir: Path,
    registry: ProcessRegistry | None = None,
    boot_timeout: float = 120.0,
    *,
    net: WarmNet | None = None,
    ram: bool = False,
) -> Snapshot:
    """The current snapshot for ``profile``: reused if intact, else built now (locked).

    A damaged file raises SnapshotCorrupt (after removing it; the next call builds a new one),
    so the caller can boot this guest cold rather than wait for a new template.
    """
    key = snapshot_key(profile, net, ram)
    folder = (Path(state_dir) / "snapshots").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.bin"
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = _load(path, key)
        if found is not None:
            with contextlib.suppress(OSError):
                os.utime(path.with_suffix(".json"))  # last use, for _prune
            return found
        _prune(folder, keep=path)
        return build(profile, path, key, registry, boot_timeout, net=net, ram=ram)


def _prune(folder: Path, keep: Path) -> None:
    """Drop snapshots of other inputs not used for an hour (stale images, old settings)."""
    cutoff = time.time() - 3600
    for old in folder.glob("*.bin"):
        with contextlib.suppress(OSError):
            meta = old.with_suffix(".json")
            used = meta.stat().st_mtime if meta.exists() else old.stat().st_mtime
            if old != keep and used < cutoff:
                discard(old)
    for left in [*folder.glob("tmpl-*"), *folder.glob("*.part")]:  # of a farm killed mid-build
        owner = left.name.removeprefix("tmpl-") if left.is_dir() else ""
        if not (owner.isdigit() and psutil.pid_exists(int(owner))):
            shutil.rmtree(left, ignore_errors=True) if left.is_dir() else left.unlink(True)


def build(
    profile: MachineProfile,
    path: Path,
    key: str,
    registry: ProcessRegistry | None = None,
    boot_timeout: float = 120.0,
    *,
    net: WarmNet | None = None,
    ram: bool = False,
) -> Snapshot:
    """Boot a template guest until it waits for its identity, save its state to ``path``."""
    started = time.monotonic()
    run_dir = path.parent / f"tmpl-{os.getpid()}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir()
    console = run_dir / "console.log"
    stack = contextlib.ExitStack()
    extra = [] if net is None else stack.enter_context(net.template_nic())
    ram_tmp = snapshot_mem.part_path(snapshot_mem.ram_path(path)) if ram else None
    if ram_tmp is not None:  # the template writes its RAM to the file (share=on)
        extra += snapshot_mem.ram_args(ram_tmp, profile.memory, shared=True)
    argv = guest_argv(
        profile if net is None else net.profile(profile), "farm-template", run_dir,
        hostfwd_port=None, extra=extra, incoming=False,
    )  # fmt: skip
    argv += ["-pidfile", str(run_dir / "qemu.pid")]
    tmp = path.with_suffix(".part")
    log.info("building snapshot %s: %s", path.name, " ".join(argv))
    proc = QemuProcess(
        argv,
        name=f"snapshot-template-{os.getpid()}",
        log_file=console,
        qmp_socket=run_dir / "qmp.sock",
        registry=registry,
    )
    try:
        proc.launch()
        with _connect(run_dir / "identity.sock", proc.alive, 10.0) as ident:
            line = _read_line(ident, boot_timeout, proc.alive)
            if not line.startswith(WAITING):
                raise SnapshotError(f"template guest said {line[:200]!r}, not {WAITING!r}")
            qmp = proc.qmp
            assert qmp is not None
            with tmp.open("wb") as out:
                qmp.execute("stop")
                caps = snapshot_mem.capabilities(ram_tmp)
                qmp.execute("migrate-set-capabilities", capabilities=caps)
                qmp.getfd("snapshot", out.fileno())  # QEMU writes the file itself: no exec:cat
                qmp.execute("migrate", uri="fd:snapshot")
                event = qmp.wait_event("MIGRATION", 120.0, _final)
                if event["data"]["status"] != "completed":
                    status = qmp.execute("query-migrate")
                    raise SnapshotError(f"saving the template failed: {status}")
        proc.shutdown(timeout=10.0)  # QMP quit
        sha = _sha256(tmp)
        size = tmp.stat().st_size
        meta = {"key": key, "size": size, "sha256": sha, "argv": argv, "created": time.time()}
        if ram_tmp is not None:  # a new inode: guests mapping the old file keep it
            meta.update(snapshot_mem.describe(ram_tmp))
            ram_tmp.replace(snapshot_mem.ram_path(path))
        path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
        tmp.replace(path)
        _verified.add((str(path), size, path.stat().st_mtime_ns))
        log.info("snapshot %s: %d MiB in %.1f s", path.name, size >> 20, time.monotonic() - started)
        return Snapshot(path, key, size, sha, snapshot_mem.ram_path(path) if ram else None)
    except LaunchError as exc:
        raise SnapshotError(f"cannot start the template guest: {exc}") from exc
    except (OSError, QmpError, ValueError) as exc:
        output = console.read_text(errors="replace")[-1500:] if console.exists() else ""
        raise SnapshotError(f"cannot build the snapshot: {exc}\nconsole:\n{output}") from exc
    except SnapshotError as exc:
        output = console.read_text(errors="replace")[-1500:] if console.exists() else ""
        raise SnapshotError(f"{exc}\nconsole:\n{output}") from exc
    finally:
        proc.shutdown(timeout=3.0, hard=True)
        stack.close()  # the template's tap
        tmp.unlink(missing_ok=True)
        snapshot_mem.discard(ram_tmp)
        shutil.rmtree(run_dir, ignore_errors=True)


def _final(data: dict[str, Any]) -> bool:
    return data.get("status") in ("completed", "failed", "cancelled")


def restore(
    snapshot: Snapshot,
    run_dir: Path,
    name: str,
    token: str,
    alive: Callable[[], bool],
    timeout: float = RESTORE_TIMEOUT,
    qmp: QmpClient | None = None,
    net: dict[str, str] | None = None,
    warm_up: bool = False,
) -> None:
    """Load ``snapshot`` into the QEMU waiting in ``run_dir``, resume it, hand it its identity.

    ``alive``: whether that QEMU still runs; ``qmp``: its open QMP connection (None: connect
    to ``run_dir/qmp.sock``). Returns once the guest's agent listens with ``token`` (its ack).
    ``net``: the guest's own MAC/IP/gateway (:meth:`WarmNet.identity`). ``warm_up``: the
    guest first runs the warm-up set again, in this QEMU (:func:`warm_up_guest`).
    """
    if not token or any(c.isspace() for c in token):
        raise ConfigError("token must be non-empty and contain no whitespace")
    # connect first: the port is then "host connected" when the saved state (connected too) loads
    with _connect(run_dir / "identity.sock", alive, 10.0) as ident:
        resume(snapshot, run_dir, timeout, qmp)
        if warm_up:
            warm_up_guest(ident, alive, timeout)
        _send_identity(ident, name, token, alive, timeout, net)


def resume(snap: Snapshot, run_dir: Path, timeout: float, qmp: QmpClient | None) -> None:
    """Load ``snap`` into the QEMU waiting in ``run_dir`` and resume it (see :func:`restore`)."""
    try:
        with contextlib.ExitStack() as stack:
            if qmp is None:
                qmp = stack.enter_context(connect(run_dir / "qmp.sock"))
            data = stack.enter_context(snap.path.open("rb"))
            caps = snapshot_mem.capabilities(snap.ram)
            qmp.execute("migrate-set-capabilities", capabilities=caps)
            qmp.getfd("snapshot", data.fileno())  # QEMU reads the file itself
            qmp.execute("migrate-incoming", uri="fd:snapshot")
            event = qmp.wait_event("MIGRATION", timeout, _final)
            if event["data"]["status"] != "completed":
                raise SnapshotLoadFailed(f"QEMU could not load {snap.path}")
            qmp.execute("cont")
    except QmpError as exc:
        raise SnapshotLoadFailed(f"QEMU could not load {snap.path}: {exc}") from exc
