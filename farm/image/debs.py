"""Debian packages for the guest image: resolve versions, download, extract.

Uses the ordinary apt clients (``apt-cache``, ``apt-get download``); no
version is hard-coded. Downloads are cached by their apt file name and
checked against the archive's SHA256. Extraction parses the ``.deb`` (an ar
archive holding ``data.tar.*``) in Python.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from farm.errors import ImageError

log = logging.getLogger(__name__)

#: Metapackage that always depends on the current PREEMPT_RT kernel image.
KERNEL_METAPACKAGE = "linux-image-rt-amd64"
APT_TIMEOUT = 300.0


@dataclass(frozen=True)
class Deb:
    """One resolved Debian package: name, version, architecture, archive digest."""

    package: str
    version: str
    arch: str
    sha256: str

    @property
    def filename(self) -> str:
        """The name ``apt-get download`` gives the file (epoch colon escaped)."""
        return f"{self.package}_{self.version.replace(':', '%3a')}_{self.arch}.deb"


def run_apt(argv: list[str], cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=APT_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ImageError(f"{argv[0]} failed: {exc}") from exc
    if proc.returncode != 0:
        raise ImageError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    if proc.stderr.strip():
        log.debug("%s: %s", argv[0], proc.stderr.strip())
    return proc.stdout


def kernel_package(meta: str = KERNEL_METAPACKAGE) -> str:
    """Name of the kernel image package the metapackage currently depends on."""
    out = run_apt(["apt-cache", "depends", meta])
    for line in out.splitlines():
        match = re.match(r"\s*Depends:\s*(linux-image-\S+)", line)
        if match:
            return match.group(1)
    raise ImageError(f"apt-cache depends {meta} names no linux-image package:\n{out}")


def resolve(packages: Iterable[str]) -> dict[str, Deb]:
    """Candidate version, architecture and SHA256 of each package (one apt-cache call)."""
    names = list(dict.fromkeys(packages))
    out = run_apt(["apt-cache", "show", "--no-all-versions", *names])
    found: dict[str, Deb] = {}
    for stanza in out.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " "
        )
        name = fields.get("Package")
        if name in names and name not in found:
            found[name] = Deb(name, fields["Version"], fields["Architecture"], fields["SHA256"])
    missing = [n for n in names if n not in found]
    if missing:
        raise ImageError(f"apt-cache knows no candidate for {missing} (run apt-get update?)")
    return found


def sha256_file(path: Path) -> str:
    """Hex SHA256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(wanted: Mapping[str, Deb], cache: Path) -> dict[str, Path]:
    """Paths (same keys) of the ``.deb`` files in ``cache``, downloading the missing ones."""
    cache.mkdir(parents=True, exist_ok=True)
    debs = list(wanted.values())
    missing = [d for d in debs if not (cache / d.filename).is_file()]
    if missing:
        log.info("downloading %s", ", ".join(f"{d.package}={d.version}" for d in missing))
        run_apt(
            ["apt-get", "download", "-q", *(f"{d.package}={d.version}" for d in missing)],
            cwd=cache,
        )
        for deb in missing:
            path = cache / deb.filename
            if not path.is_file():
                raise ImageError(f"apt-get download did not produce {path}")
            actual = sha256_file(path)
            if actual != deb.sha256:
                path.unlink()
                raise ImageError(f"{path.name}: SHA256 {actual} != archive's {deb.sha256}")
    return {key: cache / d.filename for key, d in wanted.items()}


def _data_tar(deb: Path) -> tarfile.TarFile:
    """Open the data.tar.* member of a .deb (ar archive) as a streaming tar."""
    try:
        raw = deb.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read {deb}: {exc}") from exc
    if not raw.startswith(b"!<arch>\n"):
        raise ImageError(f"{deb} is not a Debian package (no ar magic)")
    pos = 8
    while pos + 60 <= len(raw):
        header = raw[pos : pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = raw[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size & 1)
        if not name.startswith("data.tar"):
            continue
        if name.endswith(".zst"):
            try:
                body = subprocess.run(
                    ["zstd", "-dc"], input=body, capture_output=True, check=True, timeout=300
                ).stdout
            except (OSError, subprocess.SubprocessError) as exc:
                raise ImageError(f"{deb}: cannot decompress {name} (zstd): {exc}") from exc
            return tarfile.open(fileobj=io.BytesIO(body), mode="r|")
        return tarfile.open(fileobj=io.BytesIO(body), mode="r|*")
    raise ImageError(f"{deb} has no data.tar member")


def extract(
    deb: Path, dest: Path, wanted: Callable[[PurePosixPath], bool] | None = None
) -> list[PurePosixPath]:
    """Extract files, dirs and symlinks of a .deb under ``dest``; return the paths written.

    ``wanted`` selects members by their path inside the package (``usr/bin/x``).
    Symlinks are kept verbatim (absolute ones point inside the guest root); no
    member may escape ``dest``. File mtimes are the package's, for reproducibility.
    """
    written: list[PurePosixPath] = []
    with _data_tar(deb) as tar:
        for member in tar:
            rel = _member_path(member.name)
            if str(rel) == "." or rel.is_absolute() or ".." in rel.parts:
                continue
            if wanted is not None and not member.isdir() and not wanted(rel):
                continue
            target = dest / rel
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.exists():
                target.unlink()
            if member.issym():
                target.symlink_to(member.linkname)
            elif member.isfile():
                src = tar.extractfile(member)
                assert src is not None
                with target.open("wb") as out:
                    shutil.copyfileobj(src, out)
                target.chmod(member.mode & 0o7777)
                os.utime(target, (member.mtime, member.mtime))
            elif member.islnk():
                shutil.copy2(dest / _member_path(member.linkname), target)
            else:
                continue
            written.append(rel)
    return written


def _member_path(name: str) -> PurePosixPath:
    """A tar member name as a relative path ('.' for anything absolute or escaping)."""
    path = PurePosixPath(os.path.normpath(name))
    if path.is_absolute() or ".." in path.parts:
        return PurePosixPath(".")
    return path


def extract_once(deb: Path, dest: Path) -> Path:
    """Extract a whole package into ``dest`` unless a marker says it already is."""
    marker = dest / f".extracted-{deb.name}"
    if not marker.exists():
        log.debug("extracting %s", deb.name)
        dest.mkdir(parents=True, exist_ok=True)
        extract(deb, dest)
        marker.touch()
    return dest
