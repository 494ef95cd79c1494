"""The built-in workloads as one native program: ``farm-workload``, compiled once per change.

``farm/agent/native/*.c`` (workloads.c, config.c, workloads.h) is built with
the gcc the kernel build uses, ``-O2 -static`` (it runs in the initrd whatever
libc is there, and on the build host for the local backend). The result is
cached under ``cache/native/<key>/`` keyed by the sources, ``gcc --version``
and the flags, so unchanged sources are never recompiled. The image ships it at
:data:`GUEST_PATH`, where the agent looks for it (farm/agent/commands.py).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
from pathlib import Path

from farm import resources
from farm.errors import ImageError

log = logging.getLogger(__name__)

SOURCE_DIR = resources.native_source_dir()
BINARY_NAME = "farm-workload"
#: where the guest image holds it (the agent's default, farm.agent.commands.NATIVE_DEFAULT)
GUEST_PATH = "/opt/farm/bin/farm-workload"
#: -ffp-contract=off: no fused multiply-add, so linpack/tumatmul print the same digits everywhere
CFLAGS = ("-O2", "-static", "-s", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror")
LIBS = ("-lm",)
COMPILE_TIMEOUT = 300.0


def gcc_version(gcc: str = "gcc") -> str:
    """Full ``gcc --version`` output: a new compiler means a new build."""
    try:
        return subprocess.run(
            [gcc, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ImageError(
            f"cannot run {gcc} to build {BINARY_NAME}: {exc} (scripts/setup installs gcc)"
        ) from exc


def sources(source_dir: Path = SOURCE_DIR) -> list[Path]:
    """The C sources and headers, sorted; ImageError if there is no C source."""
    found = sorted(p for p in source_dir.glob("*.[ch]") if p.is_file())
    if not any(p.suffix == ".c" for p in found):
        raise ImageError(f"{source_dir} holds no C source of {BINARY_NAME}")
    return found


def build_key(source_dir: Path = SOURCE_DIR, gcc: str = "gcc") -> str:
    """What the binary depends on, hashed: sources, compiler, flags."""
    digest = hashlib.sha256()
    for path in sources(source_dir):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for part in (gcc_version(gcc), " ".join(CFLAGS + LIBS)):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


def build_native(cache: Path, source_dir: Path = SOURCE_DIR, gcc: str = "gcc") -> tuple[Path, str]:
    """The cached ``farm-workload`` of ``source_dir`` (compiled if missing) and its key.

    Other keys' builds are removed once a new one succeeded.
    """
    key = build_key(source_dir, gcc)
    out = cache / key / BINARY_NAME
    if out.is_file():
        return out, key
    (cache / key).mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    c_files = [str(p) for p in sources(source_dir) if p.suffix == ".c"]
    argv = [gcc, *CFLAGS, "-o", str(tmp), *c_files, *LIBS]
    log.info("compiling %s (%s)", BINARY_NAME, " ".join(argv))
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=COMPILE_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ImageError(f"cannot compile {BINARY_NAME}: {exc}") from exc
    if proc.returncode != 0:
        hint = ""
        if "cannot find -lc" in proc.stderr or "cannot find -lm" in proc.stderr:
            hint = " (a static build needs libc.a: install libc6-dev)"
        raise ImageError(
            f"compiling {BINARY_NAME} failed{hint}: `{' '.join(argv)}` exited "
            f"{proc.returncode}:\n{proc.stderr.strip()[-2000:]}"
        )
    tmp.replace(out)
    for other in cache.iterdir():
        if other.name != key:
            shutil.rmtree(other, ignore_errors=True) if other.is_dir() else other.unlink()
    return out, key


def install_host_copy(binary: Path, out_dir: Path) -> Path:
    """Copy the binary to ``out_dir/farm-workload`` (the local backend runs it); its path."""
    dest = out_dir / BINARY_NAME
    if not dest.is_file() or dest.read_bytes() != binary.read_bytes():
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.copyfile(binary, tmp)
        tmp.chmod(0o755)
        tmp.replace(dest)
    return dest
