"""Copy the guest's kernel and initrd to a hypervisor host as libvirt storage volumes.

A host with its own file system (``image_dir`` in its ``[[hypervisors]]``
table) cannot boot this machine's ``images/`` paths. :class:`ImageUploader`
keeps a transient ``dir`` storage pool ``farm-images`` on ``image_dir`` of
that host (created, and the directory built, when missing) and one volume per
file whose name carries the file's digest: ``image-<sha256[:16]>.elf``. A
volume counts as present only when its capacity equals the file's size and
its sidecar ``<name>.ok`` exists (written after the upload finished, so an
interrupted upload is never booted); otherwise it is (re)created and the
bytes are sent with ``virStorageVolUpload`` over a ``virStream`` -- the same
remote protocol the domains use, no scp. Older ``<stem>-*`` volumes of farm's
are deleted (stale). The domain then boots the volumes' paths on that host.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import BinaryIO

import libvirt

from farm.errors import BackendError

log = logging.getLogger(__name__)

POOL_NAME = "farm-images"
DONE_SUFFIX = ".ok"
_CHUNK = 1 << 20
_digests: dict[tuple[str, int, int], str] = {}
_digest_lock = threading.Lock()


def file_digest(path: Path) -> str:
    """sha256 of ``path`` (hex), cached per (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _digest_lock:
        if key in _digests:
            return _digests[key]
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    with _digest_lock:
        _digests[key] = h.hexdigest()
    return _digests[key]


def volume_name(path: Path, digest: str) -> str:
    """The volume name of ``path`` with content ``digest``: ``<stem>-<digest[:16]><suffix>``."""
    return f"{path.stem}-{digest[:16]}{path.suffix}"


def pool_xml(directory: str) -> str:
    """A ``dir`` storage pool named :data:`POOL_NAME` on ``directory`` (host's path)."""
    pool = ET.Element("pool", {"type": "dir"})
    ET.SubElement(pool, "name").text = POOL_NAME
    ET.SubElement(ET.SubElement(pool, "target"), "path").text = directory
    return ET.tostring(pool, encoding="unicode")


def volume_xml(name: str, size: int) -> str:
    """A raw volume ``name`` of ``size`` bytes (allocated lazily)."""
    vol = ET.Element("volume")
    ET.SubElement(vol, "name").text = name
    ET.SubElement(vol, "capacity", {"unit": "bytes"}).text = str(size)
    ET.SubElement(vol, "allocation", {"unit": "bytes"}).text = "0"
    ET.SubElement(ET.SubElement(vol, "target"), "format", {"type": "raw"})
    return ET.tostring(vol, encoding="unicode")


class ImageUploader:
    """Makes local files available on one host as volumes of ``farm-images``; thread-safe."""

    def __init__(self, directory: str, where: str) -> None:
        self.directory = directory
        self.where = where  # host name for messages
        self._lock = threading.Lock()
        self._paths: dict[str, str] = {}  # digest-named volume -> path on the host
        self.uploads = 0  # volumes sent (for tests / status)

    def forget(self) -> None:
        """Drop what is known about the host (after a reconnect: it may have lost its disk)."""
        with self._lock:
            self._paths.clear()

    def ensure(self, conn: libvirt.virConnect, path: Path) -> str:
        """The host's path of ``path``'s volume, uploaded first when missing or stale."""
        name = volume_name(path, file_digest(path))
        with self._lock:
            if name in self._paths:
                return self._paths[name]
            try:
                pool = self._pool(conn)
                remote = self._volume(conn, pool, path, name)
            except libvirt.libvirtError as exc:
                raise BackendError(f"{self.where}: cannot upload {path.name}: {exc}") from exc
            self._paths[name] = remote
            return remote

    def _pool(self, conn: libvirt.virConnect) -> libvirt.virStoragePool:
        try:
            pool = conn.storagePoolLookupByName(POOL_NAME)
        except libvirt.libvirtError:
            log.info("%s: creating storage pool %s on %s", self.where, POOL_NAME, self.directory)
            flags = libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD
            return conn.storagePoolCreateXML(pool_xml(self.directory), flags)
        if not pool.isActive():
            pool.create(0)
        pool.refresh(0)
        return pool

    def _volume(
        self, conn: libvirt.virConnect, pool: libvirt.virStoragePool, path: Path, name: str
    ) -> str:
        size = path.stat().st_size
        names = set(pool.listVolumes())
        if name in names and name + DONE_SUFFIX in names:
            vol = pool.storageVolLookupByName(name)
            if vol.info()[1] == size:
                return str(vol.path())
        for old in sorted(names):  # stale versions and interrupted uploads of this file
            if old.startswith(f"{path.stem}-") and old.removesuffix(DONE_SUFFIX).endswith(
                path.suffix
            ):
                log.info("%s: deleting stale volume %s", self.where, old)
                with contextlib.suppress(libvirt.libvirtError):
                    pool.storageVolLookupByName(old).delete(0)
        log.info("%s: uploading %s (%d bytes) as volume %s", self.where, path, size, name)
        vol = pool.createXML(volume_xml(name, size), 0)
        try:
            _upload(conn, vol, path, size)
            pool.createXML(volume_xml(name + DONE_SUFFIX, 0), 0)
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                vol.delete(0)
            raise
        self.uploads += 1
        return str(vol.path())


def _upload(conn: libvirt.virConnect, vol: libvirt.virStorageVol, path: Path, size: int) -> None:
    """Send ``path``'s bytes into ``vol`` over a libvirt stream."""
    stream = conn.newStream(0)
    try:
        vol.upload(stream, 0, size, 0)
        with path.open("rb") as src:
            stream.sendAll(_reader, src)
        stream.finish()
    except BaseException:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        raise


def _reader(_stream: libvirt.virStream, nbytes: int, src: BinaryIO) -> bytes:
    return src.read(nbytes)
