"""farm's own guest kernel: PREEMPT_RT built from Debian's ``linux-source`` package.

Debian's packaged RT kernel is built for real machines: ACPI, hundreds of
drivers and modules. Under TCG its boot alone took ~1.2 s. farm's kernel is
``tinyconfig`` plus ``farm/image/kernel/farm.config`` (PREEMPT_RT, PVH entry,
virtio over PCI and MMIO, serial console, IPv4/IPv6, no ACPI, no modules) and
the patches in ``farm/image/kernel/`` (``lapic_timer_frequency=``, which
spares the 100 ms APIC timer calibration). It boots to ``/init`` in ~0.25 s.

PREEMPT_RT is mainline from 6.12, so the newest ``linux-source-X.Y`` (X.Y >=
6.12) apt offers is used (Debian 12: ``linux-source-6.12``). A build takes a
few minutes on two cores and is cached under ``cache/kernel-build/<key>``,
keyed by the source package, the config fragment, the patches, this module
and the compiler, so it runs once per change.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path

from farm.errors import ImageError
from farm.image import debs
from farm.image.kernel import KernelFiles, check_pvh

log = logging.getLogger(__name__)

#: The oldest kernel with PREEMPT_RT in mainline.
SOURCE_MIN = (6, 12)
RECIPE = Path(__file__).resolve().parent / "kernel"
FRAGMENT = RECIPE / "farm.config"
#: Programs the build runs (besides what ``make`` needs from the source itself).
BUILD_TOOLS = ("make", "gcc", "ld", "bison", "flex", "bc", "patch", "perl")
BUILD_TIMEOUT = 3600.0
LOCALVERSION = "-farm"
_SOURCE_NAME = re.compile(r"linux-source-(\d+)\.(\d+)")


def source_package() -> str:
    """Name of the newest ``linux-source-X.Y`` apt offers with X.Y >= 6.12."""
    out = debs.run_apt(["apt-cache", "pkgnames", "linux-source-"])
    found = []
    for name in out.split():
        match = _SOURCE_NAME.fullmatch(name)
        if match:
            found.append(((int(match.group(1)), int(match.group(2))), name))
    usable = sorted(v for v in found if v[0] >= SOURCE_MIN)
    if not usable:
        have = ", ".join(n for _, n in sorted(found)) or "none"
        raise ImageError(
            f"apt offers no linux-source-X.Y >= {SOURCE_MIN[0]}.{SOURCE_MIN[1]} "
            f"(PREEMPT_RT is mainline from 6.12; have: {have}). On Debian 12 it comes "
            "from bookworm-security; or build with `farm image build --kernel debian`"
        )
    return usable[-1][1]


def fragment_options(path: Path = FRAGMENT) -> dict[str, str]:
    """``CONFIG_X`` -> ``y``/value, or ``n`` for ``# CONFIG_X is not set``, from a fragment."""
    options: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        unset = re.fullmatch(r"# (CONFIG_\w+) is not set", line)
        if unset:
            options[unset.group(1)] = "n"
        elif line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            if not sep or not key.startswith("CONFIG_"):
                raise ImageError(f"{path}:{number}: not a config line: {raw!r}")
            options[key] = value
    return options


def read_config(path: Path) -> dict[str, str]:
    """A kernel ``.config`` as ``CONFIG_X`` -> value, with ``n`` for unset options."""
    options: dict[str, str] = {}
    for line in path.read_text().splitlines():
        unset = re.fullmatch(r"# (CONFIG_\w+) is not set", line)
        if unset:
            options[unset.group(1)] = "n"
            continue
        key, sep, value = line.partition("=")
        if sep and key.startswith("CONFIG_"):
            options[key] = value
    return options


def check_config(wanted: dict[str, str], actual: dict[str, str]) -> None:
    """ImageError naming every fragment option kconfig did not keep (unmet dependencies)."""
    lost = [
        f"{key}={value} (got {actual.get(key, 'n')})"
        for key, value in wanted.items()
        if actual.get(key, "n") != value
    ]
    if lost:
        raise ImageError(
            "kernel config: kconfig dropped options of farm.config (a dependency is "
            f"missing in the fragment): {', '.join(lost)}"
        )


def patches() -> list[Path]:
    """farm's kernel patches, applied in name order."""
    return sorted(RECIPE.glob("*.patch"))


def compiler_id() -> str:
    """First line of ``gcc --version``: a new compiler means a new kernel build."""
    try:
        out = subprocess.run(
            ["gcc", "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ImageError(f"cannot run gcc to build the kernel: {exc}") from exc
    return out.splitlines()[0] if out else "gcc"


def build_key(deb: debs.Deb) -> str:
    """What the cached build depends on, hashed: source, fragment, patches, code, compiler."""
    digest = hashlib.sha256()
    for part in (deb.package, deb.version, deb.sha256, compiler_id()):
        digest.update(part.encode() + b"\0")
    for path in (FRAGMENT, *patches(), Path(__file__)):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def missing_tools() -> list[str]:
    """Build programs not on PATH (scripts/setup installs them)."""
    return [tool for tool in BUILD_TOOLS if shutil.which(tool) is None]


def _run(argv: Sequence[str | Path], logfile: Path, cwd: Path | None = None) -> None:
    env = {
        **os.environ,
        "LC_ALL": "C",
        "KBUILD_BUILD_USER": "farm",
        "KBUILD_BUILD_HOST": "farm",
        "KBUILD_BUILD_TIMESTAMP": "1970-01-01",
    }
    with logfile.open("ab") as out:
        out.write(f"$ {' '.join(map(str, argv))}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(
                [str(a) for a in argv], cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                env=env, timeout=BUILD_TIMEOUT, check=False,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError) as exc:
            raise ImageError(f"kernel build: {argv[0]} failed: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-25:])
        raise ImageError(
            f"kernel build: `{' '.join(map(str, argv))}` exited {proc.returncode} "
            f"(whole log: {logfile}):\n{tail}"
        )


def extract_tree(tar: tarfile.TarFile, dest: Path) -> None:
    """Extract a source tarball below ``dest``, refusing members that would leave it.

    ``extractall(filter=...)`` exists only from Python 3.11.4 (Debian 12 ships
    3.11.2), so the check is farm's own: no absolute or ``..`` names, no device
    files, links only to targets inside ``dest``; modes keep no set-id bits.
    """
    root = dest.resolve()

    def inside(name: str) -> bool:
        target = (root / name).resolve()
        return target == root or root in target.parents

    members = []
    for m in tar:
        if m.name.startswith("/") or not inside(m.name):
            raise tarfile.TarError(f"member {m.name!r} would be extracted outside {dest}")
        if m.ischr() or m.isblk() or m.isfifo():
            raise tarfile.TarError(f"member {m.name!r} is a device or FIFO")
        if m.issym() and not inside(str(Path(m.name).parent / m.linkname)):
            raise tarfile.TarError(f"symlink {m.name!r} -> {m.linkname!r} leaves {dest}")
        if m.islnk() and not inside(m.linkname):
            raise tarfile.TarError(f"hard link {m.name!r} -> {m.linkname!r} leaves {dest}")
        m.mode &= 0o777
        members.append(m)
    if hasattr(tarfile, "fully_trusted_filter"):  # 3.11.4+: say so, or 3.14 filters again
        tar.extractall(dest, members=members, filter="fully_trusted")
    else:
        tar.extractall(dest, members=members)


def _unpack_source(deb: Path, work: Path) -> Path:
    """Extract the source tarball of a linux-source package into ``work``; its top dir."""
    inner = debs.extract(deb, work, lambda p: p.name.endswith(".tar.xz"))
    tarballs = [work / p for p in inner if str(p).startswith("usr/src/linux-source-")]
    if not tarballs:
        raise ImageError(f"{deb.name} holds no usr/src/linux-source-*.tar.xz")
    src_parent = work / "src"
    src_parent.mkdir()
    try:
        with tarfile.open(tarballs[0]) as tar:
            extract_tree(tar, src_parent)
    except (OSError, tarfile.TarError) as exc:
        raise ImageError(f"cannot unpack {tarballs[0].name}: {exc}") from exc
    tarballs[0].unlink()
    tops = [p for p in src_parent.iterdir() if p.is_dir()]
    if len(tops) != 1:
        raise ImageError(f"{tarballs[0].name}: expected one top directory, got {tops}")
    return tops[0]


def build_farm_kernel(
    deb_info: debs.Deb, deb: Path, cache: Path, jobs: int | None = None
) -> KernelFiles:
    """farm's vmlinux for a linux-source package: cached, else configured and built.

    The result is ``cache/<key>/boot/vmlinux-<release>`` and its ``config-<release>``;
    other keys' builds are removed once a new one succeeded.
    """
    key = build_key(deb_info)
    root = cache / key
    done = root / ".complete"
    if not done.exists():
        missing = missing_tools()
        if missing:
            raise ImageError(
                f"building the kernel needs {', '.join(missing)} (scripts/setup installs "
                "them: make gcc bison flex bc patch libelf-dev)"
            )
        shutil.rmtree(root, ignore_errors=True)
        work = cache / f"work-{key}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        logfile = cache / f"build-{key}.log"
        logfile.unlink(missing_ok=True)
        log.info(
            "building farm's kernel from %s %s (a few minutes, once; log %s)",
            deb_info.package, deb_info.version, logfile,
        )  # fmt: skip
        try:
            _build(deb, work, root, logfile, jobs or os.cpu_count() or 1)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        done.touch()
        for other in cache.iterdir():
            if other.name not in (key, logfile.name) and not other.name.startswith("work-"):
                shutil.rmtree(other, ignore_errors=True) if other.is_dir() else other.unlink()
    images = sorted((root / "boot").glob("vmlinux-*"))
    if not images:
        raise ImageError(f"kernel build cache {root} has no boot/vmlinux-*")
    return KernelFiles(root, images[0].name.removeprefix("vmlinux-"), builtin_only=True)


def _build(deb: Path, work: Path, root: Path, logfile: Path, jobs: int) -> None:
    src = _unpack_source(deb, work)
    for patch in patches():
        _run(["patch", "-p1", "--batch", "--forward", "-i", patch], logfile, cwd=src)
    build = work / "build"
    make: list[str | Path] = ["make", "-C", src, f"O={build}", f"LOCALVERSION={LOCALVERSION}"]
    _run([*make, "tinyconfig"], logfile)
    merge = src / "scripts" / "kconfig" / "merge_config.sh"
    _run(["sh", merge, "-m", "-O", build, build / ".config", FRAGMENT], logfile)
    _run([*make, "olddefconfig"], logfile)
    config = read_config(build / ".config")
    check_config(fragment_options(), config)
    _run([*make, f"-j{jobs}", "vmlinux"], logfile)
    out = subprocess.run(
        [*map(str, make), "-s", "kernelrelease"], capture_output=True, text=True, check=False
    )
    release = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    if not release:
        raise ImageError(f"kernel build: `make kernelrelease` printed nothing: {out.stderr}")
    check_pvh((build / "vmlinux").read_bytes(), "farm's vmlinux")
    (root / "boot").mkdir(parents=True)
    shutil.copyfile(build / ".config", root / "boot" / f"config-{release}")
    shutil.copyfile(build / "vmlinux", root / "boot" / f"vmlinux-{release}")
