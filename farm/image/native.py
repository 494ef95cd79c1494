"""The built-in workloads as one native program: ``farm-workload``, compiled once per change.

``farm/agent/native/workloads.c`` is built with the gcc the kernel build
uses, ``-O2 -static`` (it runs in the initrd whatever libc is there, and on
the build host for the local backend). The result is cached under
``cache/native/<key>/`` keyed by the source, ``gcc --version`` and the flags,
so an unchanged source is never recompiled. The image ships it at
:data:`GUEST_PATH`, where the agent looks for it (farm/agent/commands.py).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
from pathlib import Path

from farm.errors import ImageError

log = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().parent.parent / "agent" / "native" / "workloads.c"
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


def build_key(source: Path = SOURCE, gcc: str = "gcc") -> str:
    """What the binary depends on, hashed: source, compiler, flags."""
    digest = hashlib.sha256()
    for part in (source.read_bytes(), gcc_version(gcc).encode(), " ".join(CFLAGS + LIBS).encode()):
        digest.update(part + b"\0")
    return digest.hexdigest()[:16]


def build_native(cache: Path, source: Path = SOURCE, gcc: str = "gcc") -> tuple[Path, str]:
    """The cached ``farm-workload`` for ``source`` (compiled if missing) and its key.

    Other keys' builds are removed once a new one succeeded.
    """
    key = build_key(source, gcc)
    out = cache / key / BINARY_NAME
    if out.is_file():
        return out, key
    (cache / key).mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    argv = [gcc, *CFLAGS, "-o", str(tmp), str(source), *LIBS]
    log.info("compiling %s (%s)", BINARY_NAME, " ".join(argv))
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=COMPILE_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ImageError(f"cannot compile {source.name}: {exc}") from exc
    if proc.returncode != 0:
        hint = ""
        if "cannot find -lc" in proc.stderr or "cannot find -lm" in proc.stderr:
            hint = " (a static build needs libc.a: install libc6-dev)"
        raise ImageError(
            f"compiling {source.name} failed{hint}: `{' '.join(argv)}` exited "
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
