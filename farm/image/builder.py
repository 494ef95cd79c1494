"""``farm image build``: cached, reproducible build of images/image.elf + initrd.img.

A manifest (``images/manifest.json``) records, per part, the digests of
every input (package versions and archive digests, agent sources and
version, init script, udhcpc script, module allowlist, builder code) and of
the output. A part is rebuilt only when one of its inputs changed or its
output is missing or altered: editing the agent rebuilds the initrd, never
the kernel. The built-in workloads' native program (:mod:`farm.image.native`,
cached by its own key) goes into the initrd and next to it as
``images/farm-workload``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from farm import paths, resources
from farm.agent.protocol import agent_version
from farm.errors import ImageError
from farm.image import debs, kernel_source, native, pyruntime
from farm.image.initrd import InitrdSources, build_initrd
from farm.image.kernel import KernelFiles, build_kernel, unpack_kernel, write_vmlinux
from farm.image.kernel_source import build_farm_kernel

log = logging.getLogger(__name__)

#: Bump when the build's output format changes in a way the code digest misses.
BUILDER_VERSION = "1"
#: Where the recipe (init template, udhcpc script, allowlist) lives: farm/image/recipe.
RECIPE_DIR = resources.image_recipe_dir()
AGENT_DIR = resources.agent_dir()
USERLAND_PACKAGES = (
    "busybox-static",
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "libc6",
    "zlib1g",
    "libexpat1",
    "libffi8",
    "rt-tests",  # cyclictest only (farm.image.initrd.EXTRA_PROGRAMS), the rest is left out
    "libnuma1",  # cyclictest's one library beyond libc
)
#: ``farm``: farm's own PREEMPT_RT kernel built from linux-source (farm.image.kernel_source,
#: boots ~1 s faster); ``debian``: Debian's packaged RT kernel and its virtio modules.
KERNEL_FLAVORS = ("farm", "debian")
KERNEL_NAME = "image.elf"
INITRD_NAME = "initrd.img"
MANIFEST_NAME = "manifest.json"
_HERE = Path(__file__).resolve().parent
_KERNEL_CODE = ("kernel.py", "elf.py", "debs.py", "kernel_source.py")
_INITRD_CODE = (
    "initrd.py",
    "pyruntime.py",
    "cpio.py",
    "kernel.py",
    "elf.py",
    "debs.py",
    "builder.py",
    "native.py",
    # the host modules the guest gets too (pyruntime.GUEST_EXTRAS, outside farm/agent):
    # without them here a change to one of them left the image stale
    *(f"../../{rel}" for rel in pyruntime.GUEST_EXTRAS),
)


@dataclass(frozen=True)
class ImageInfo:
    """Result of a build: where the parts are, how big, which versions, what was rebuilt."""

    kernel: Path
    initrd: Path
    kernel_size: int
    initrd_size: int
    kernel_package: str
    kernel_version: str
    kernel_release: str
    agent_version: str
    kernel_rebuilt: bool
    initrd_rebuilt: bool
    manifest: Path
    seconds: float
    native: Path | None = None  # host copy of farm-workload (the guest's is in the initrd)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (paths as strings)."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def digest_files(paths: list[Path], base: Path | None = None) -> str:
    """SHA256 over names (relative to base) and contents of files, in the given order."""
    h = hashlib.sha256()
    for path in paths:
        h.update(str(path.relative_to(base) if base else path.name).encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


def agent_sources(agent_dir: Path = AGENT_DIR) -> list[Path]:
    """The agent's Python sources that go into the image, sorted."""
    files = sorted(p for p in agent_dir.rglob("*.py") if "__pycache__" not in p.parts)
    if not any(p.name == "protocol.py" for p in files):
        raise ImageError(f"{agent_dir} holds no agent (protocol.py missing)")
    return files


def output_record(path: Path) -> dict[str, Any]:
    """Digest and size of a build output."""
    return {"file": path.name, "sha256": debs.sha256_file(path), "size": path.stat().st_size}


def needs_rebuild(part: str, inputs: dict[str, Any], manifest: dict[str, Any], out: Path) -> str:
    """Why ``part`` must be rebuilt ('' when it is up to date)."""
    old = manifest.get(part)
    if not isinstance(old, dict):
        return "no previous build"
    if not out.is_file():
        return f"{out.name} missing"
    if old.get("inputs") != inputs:
        changed = sorted(
            k for k in set(inputs) | set(old.get("inputs", {}))
            if inputs.get(k) != old.get("inputs", {}).get(k)
        )  # fmt: skip
        return f"inputs changed: {', '.join(changed)}"
    recorded = old.get("output", {})
    if out.stat().st_size != recorded.get("size"):
        return f"{out.name} size differs from the manifest"
    if debs.sha256_file(out) != recorded.get("sha256"):
        return f"{out.name} content differs from the manifest"
    return ""


def load_manifest(path: Path) -> dict[str, Any]:
    """The previous manifest, or {} when there is none or it is unreadable."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable manifest %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def resolve_packages(
    cache: Path, manifest: dict[str, Any], kernel: str = "farm"
) -> dict[str, debs.Deb]:
    """Current kernel (source or image) + userland packages; offline, the manifest's if cached."""
    try:
        kernel_pkg = kernel_source.source_package() if kernel == "farm" else debs.kernel_package()
        resolved = debs.resolve([kernel_pkg, *USERLAND_PACKAGES])
        return {"kernel": resolved[kernel_pkg], **{n: resolved[n] for n in USERLAND_PACKAGES}}
    except ImageError as exc:
        recorded = manifest.get("packages")
        if isinstance(recorded, dict) and recorded:
            old = {k: debs.Deb(**v) for k, v in recorded.items()}
            source = old.get("kernel", debs.Deb("", "", "", "")).package.startswith("linux-source")
            if source == (kernel == "farm") and all(
                (cache / d.filename).is_file() for d in old.values()
            ):
                log.warning("apt unavailable (%s); reusing cached packages of the last build", exc)
                return old
        raise


def _prune(parent: Path, keep: set[str]) -> None:
    if parent.is_dir():
        for child in parent.iterdir():
            if child.name not in keep:
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()


def build(
    force: bool = False,
    out_dir: Path | None = None,
    *,
    cache_dir: Path | None = None,
    recipe_dir: Path = RECIPE_DIR,
    agent_dir: Path = AGENT_DIR,
    compression: str = "none",
    kernel: str = "farm",
) -> ImageInfo:
    """Build (or reuse) the guest kernel and initrd in ``out_dir``; see the module docstring.

    ``out_dir`` defaults to :func:`farm.paths.image_dir`, ``cache_dir`` (downloads, kernel
    build, rootfs) to :func:`farm.paths.image_cache_dir` (``$FARM_IMAGE_CACHE`` or
    ``out_dir/cache``). ``kernel`` is one of KERNEL_FLAVORS.
    """
    if kernel not in KERNEL_FLAVORS:
        raise ImageError(f"unknown kernel flavor {kernel!r} (one of {', '.join(KERNEL_FLAVORS)})")
    started = time.monotonic()
    out_dir = Path(paths.image_dir() if out_dir is None else out_dir).resolve()
    cache = Path(paths.image_cache_dir(out_dir) if cache_dir is None else cache_dir).resolve()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageError(f"cannot create the image directories: {exc}") from exc
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time per output dir
        return _build_locked(
            force, out_dir, cache, recipe_dir, agent_dir, compression, kernel, started
        )


def _build_locked(
    force: bool,
    out_dir: Path,
    cache: Path,
    recipe_dir: Path,
    agent_dir: Path,
    compression: str,
    flavor: str,
    started: float,
) -> ImageInfo:
    manifest_path = out_dir / MANIFEST_NAME
    manifest = load_manifest(manifest_path)
    packages = resolve_packages(cache / "debs", manifest, flavor)
    paths = debs.fetch(packages, cache / "debs")
    _prune(cache / "debs", {d.filename for d in packages.values()} | {"partial"})
    kdeb = packages["kernel"]
    kernel_out, initrd_out = out_dir / KERNEL_NAME, out_dir / INITRD_NAME

    kernel_inputs = {
        "flavor": flavor,
        "package": kdeb.package,
        "version": kdeb.version,
        "deb_sha256": kdeb.sha256,
        "builder": BUILDER_VERSION,
        "code": digest_files([_HERE / n for n in _KERNEL_CODE]),
    }
    if flavor == "farm":
        kernel_inputs["build_key"] = kernel_source.build_key(kdeb)
    else:
        _prune(cache / "kernel", {paths["kernel"].name.removesuffix(".deb")})
    why = "forced" if force else needs_rebuild("kernel", kernel_inputs, manifest, kernel_out)
    if not why and flavor == "farm" and not manifest["kernel"].get("release"):
        why = "no kernel release recorded"
    kernel_rebuilt = bool(why)
    if why:
        log.info("building %s (%s)", kernel_out, why)
        if flavor == "farm":
            kfiles = build_farm_kernel(kdeb, paths["kernel"], cache / "kernel-build")
            write_vmlinux(kfiles, kernel_out)
        else:
            kfiles = build_kernel(paths["kernel"], cache / "kernel", kernel_out)
        manifest["kernel"] = {
            "inputs": kernel_inputs,
            "output": output_record(kernel_out),
            "release": kfiles.release,
        }
    elif flavor == "farm":  # up to date: the release is all the initrd needs of it
        kfiles = KernelFiles(
            cache / "kernel-build", manifest["kernel"]["release"], builtin_only=True
        )
    else:
        kfiles = unpack_kernel(paths["kernel"], cache / "kernel")

    sources = agent_sources(agent_dir)
    version = agent_version() if agent_dir == AGENT_DIR else _agent_version_of(agent_dir)
    recipe = {n: recipe_dir / n for n in ("init.sh.in", "udhcpc.script", "python-modules.txt")}
    for name, path in recipe.items():
        if not path.is_file():
            raise ImageError(f"image recipe file {name} missing in {recipe_dir}")
    native_bin, native_key = native.build_native(cache / "native")
    host_native = native.install_host_copy(native_bin, out_dir)
    initrd_inputs = {
        "packages": {k: [d.version, d.sha256] for k, d in sorted(packages.items())},
        "kernel_release": kfiles.release,
        "agent_version": version,
        "agent_digest": digest_files(sources, agent_dir),
        "init_digest": digest_files([recipe["init.sh.in"]]),
        "udhcpc_digest": digest_files([recipe["udhcpc.script"]]),
        "allowlist_digest": digest_files([recipe["python-modules.txt"]]),
        "compression": compression,
        "native_key": native_key,
        "builder": BUILDER_VERSION,
        "code": digest_files([_HERE / n for n in _INITRD_CODE]),
    }
    why = "forced" if force else needs_rebuild("initrd", initrd_inputs, manifest, initrd_out)
    initrd_rebuilt = bool(why)
    if why:
        log.info("building %s (%s)", initrd_out, why)
        userland = [paths[n] for n in USERLAND_PACKAGES]
        root_id = hashlib.sha256("".join(p.name for p in userland).encode()).hexdigest()[:16]
        rootfs = cache / "rootfs" / root_id
        _prune(cache / "rootfs", {root_id})
        for deb in userland:
            debs.extract_once(deb, rootfs)
        src = InitrdSources(
            rootfs=rootfs,
            kernel=kfiles,
            agent_dir=agent_dir,
            init_template=recipe["init.sh.in"],
            udhcpc_script=recipe["udhcpc.script"],
            allowlist=recipe["python-modules.txt"],
            agent_version=version,
            compression=compression,
            native=native_bin,
            extra_info={"packages": {k: d.version for k, d in sorted(packages.items())}},
        )
        summary = build_initrd(src, cache / "work", initrd_out)
        manifest["initrd"] = {
            "inputs": initrd_inputs,
            "output": output_record(initrd_out),
            "summary": summary,
        }
    manifest["native"] = {
        "key": native_key,
        "guest_path": native.GUEST_PATH,
        "host_copy": host_native.name,
        "output": output_record(host_native),
    }
    manifest["packages"] = {k: asdict(d) for k, d in sorted(packages.items())}
    manifest["agent_version"] = version
    tmp = manifest_path.with_name(manifest_path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    tmp.replace(manifest_path)
    return ImageInfo(
        kernel=kernel_out,
        initrd=initrd_out,
        kernel_size=kernel_out.stat().st_size,
        initrd_size=initrd_out.stat().st_size,
        kernel_package=kdeb.package,
        kernel_version=kdeb.version,
        kernel_release=kfiles.release,
        agent_version=version,
        kernel_rebuilt=kernel_rebuilt,
        initrd_rebuilt=initrd_rebuilt,
        manifest=manifest_path,
        seconds=round(time.monotonic() - started, 3),
        native=host_native,
    )


def _agent_version_of(agent_dir: Path) -> str:
    """agent_version() as the agent in ``agent_dir`` would compute it (top-level *.py)."""
    digest = hashlib.sha256()
    for path in sorted(agent_dir.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return "1." + digest.hexdigest()[:12]
