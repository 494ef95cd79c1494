"""Just enough ELF parsing for the image build: notes, named sections, DT_NEEDED.

Pure Python so the build needs no binutils. Only little-endian ELF (x86, arm)
is handled, 32- and 64-bit.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from farm.errors import ImageError

ELF_MAGIC = b"\x7fELF"
PT_DYNAMIC = 2
PT_NOTE = 4
PT_LOAD = 1
DT_NEEDED = 1
DT_STRTAB = 5
#: Xen/PVH note type of the 32-bit physical entry point QEMU uses for ``-kernel``.
XEN_ELFNOTE_PHYS32_ENTRY = 18


@dataclass(frozen=True)
class Note:
    """One ELF note: owner name, type, descriptor bytes."""

    name: str
    type: int
    desc: bytes


class Elf:
    """A parsed ELF file held in memory (headers parsed lazily, data not copied)."""

    def __init__(self, data: bytes | memoryview, what: str = "ELF file") -> None:
        self.data = memoryview(data)
        self.what = what
        if bytes(self.data[:4]) != ELF_MAGIC:
            raise ImageError(f"{what} is not an ELF file (magic {bytes(self.data[:4])!r})")
        self.is64 = self.data[4] == 2
        if self.data[5] != 1:
            raise ImageError(f"{what}: only little-endian ELF is supported")
        try:
            if self.is64:
                (_, _, _, self.entry, self.phoff, self.shoff, _, _, self.phentsize, self.phnum,
                 self.shentsize, self.shnum, self.shstrndx) = struct.unpack_from(
                    "<HHIQQQIHHHHHH", self.data, 16)  # fmt: skip
            else:
                (_, _, _, self.entry, self.phoff, self.shoff, _, _, self.phentsize, self.phnum,
                 self.shentsize, self.shnum, self.shstrndx) = struct.unpack_from(
                    "<HHIIIIIHHHHHH", self.data, 16)  # fmt: skip
        except struct.error as exc:
            raise ImageError(f"{what}: truncated ELF header") from exc

    def segments(self) -> list[tuple[int, int, int, int, int]]:
        """Program headers as (type, offset, vaddr, paddr, filesz)."""
        out = []
        for i in range(self.phnum):
            base = self.phoff + i * self.phentsize
            if self.is64:
                p_type, _, off, vaddr, paddr, filesz = struct.unpack_from(
                    "<IIQQQQ", self.data, base
                )
            else:
                p_type, off, vaddr, paddr, filesz = struct.unpack_from("<IIIII", self.data, base)
            out.append((p_type, off, vaddr, paddr, filesz))
        return out

    def notes(self) -> list[Note]:
        """All notes of the PT_NOTE segments (what QEMU's loader looks at)."""
        found: list[Note] = []
        for p_type, off, _, _, size in self.segments():
            if p_type == PT_NOTE:
                found.extend(parse_notes(bytes(self.data[off : off + size])))
        return found

    def sections(self) -> dict[str, tuple[int, int, int]]:
        """Section headers by name: (type, offset, size)."""
        if not self.shnum:
            return {}
        raw = []
        for i in range(self.shnum):
            base = self.shoff + i * self.shentsize
            if self.is64:
                name, s_type, _, _, off, size = struct.unpack_from("<IIQQQQ", self.data, base)
            else:
                name, s_type, _, _, off, size = struct.unpack_from("<IIIIII", self.data, base)
            raw.append((name, s_type, off, size))
        _, _, str_off, str_size = raw[self.shstrndx]
        strtab = bytes(self.data[str_off : str_off + str_size])
        return {_cstr(strtab, name): (s_type, off, size) for name, s_type, off, size in raw}

    def section(self, name: str) -> bytes | None:
        """Contents of the named section, or None."""
        entry = self.sections().get(name)
        if entry is None:
            return None
        _, off, size = entry
        return bytes(self.data[off : off + size])

    def needed(self) -> list[str]:
        """DT_NEEDED entries (shared libraries this object links against)."""
        dyn = [s for s in self.segments() if s[0] == PT_DYNAMIC]
        if not dyn:
            return []
        _, off, _, _, size = dyn[0]
        fmt, step = ("<qQ", 16) if self.is64 else ("<iI", 8)
        entries = [struct.unpack_from(fmt, self.data, off + i) for i in range(0, size, step)]
        strtab_vaddr = next((v for tag, v in entries if tag == DT_STRTAB), None)
        if strtab_vaddr is None:
            return []
        strtab_off = self._vaddr_to_offset(strtab_vaddr)
        return [_cstr(self.data, strtab_off + v) for tag, v in entries if tag == DT_NEEDED]

    def _vaddr_to_offset(self, vaddr: int) -> int:
        for p_type, off, seg_vaddr, _, filesz in self.segments():
            if p_type == PT_LOAD and seg_vaddr <= vaddr < seg_vaddr + filesz:
                return off + vaddr - seg_vaddr
        raise ImageError(f"{self.what}: address {vaddr:#x} is in no loadable segment")


def trim_zero_tails(data: bytes, what: str = "ELF file") -> bytes:
    """The ELF with trailing zero bytes of each PT_LOAD dropped from the file.

    ``p_filesz`` shrinks, ``p_memsz`` stays: loaders (QEMU's included) zero-fill
    the rest, exactly as for ``.bss``. Section headers are dropped and the file
    is cut after the last segment. A vmlinux stores ``.bss``/``.brk`` as ~24 MB
    of zeros; without them QEMU reads (and keeps a ROM copy of) far less.
    """
    elf = Elf(data, what)
    out = bytearray(data)
    end = elf.phoff + elf.phnum * elf.phentsize
    for i, (p_type, off, _, _, filesz) in enumerate(elf.segments()):
        if p_type == PT_LOAD:
            segment = data[off : off + filesz]
            filesz = (len(segment.rstrip(b"\0")) + 7) & ~7 if filesz else 0
            filesz = min(filesz, len(segment))
            base = elf.phoff + i * elf.phentsize
            if elf.is64:
                struct.pack_into("<Q", out, base + 32, filesz)
            else:
                struct.pack_into("<I", out, base + 16, filesz)
        end = max(end, off + filesz)
    if elf.is64:  # e_shoff = 0, e_shnum = e_shstrndx = 0
        struct.pack_into("<Q", out, 40, 0)
        struct.pack_into("<HH", out, 60, 0, 0)
    else:
        struct.pack_into("<I", out, 32, 0)
        struct.pack_into("<HH", out, 48, 0, 0)
    return bytes(out[:end])


def parse_notes(blob: bytes) -> list[Note]:
    """Parse a note area: namesz, descsz, type, name (4-aligned), desc (4-aligned)."""
    notes = []
    pos = 0
    while pos + 12 <= len(blob):
        namesz, descsz, n_type = struct.unpack_from("<III", blob, pos)
        pos += 12
        name = blob[pos : pos + namesz].rstrip(b"\0").decode("ascii", "replace")
        pos += (namesz + 3) & ~3
        desc = blob[pos : pos + descsz]
        pos += (descsz + 3) & ~3
        notes.append(Note(name, n_type, desc))
    return notes


def pvh_entry(elf: Elf) -> int | None:
    """The PVH 32-bit entry point (XEN_ELFNOTE_PHYS32_ENTRY), or None without the note."""
    for note in elf.notes():
        if note.name == "Xen" and note.type == XEN_ELFNOTE_PHYS32_ENTRY:
            return int.from_bytes(note.desc[:8].ljust(8, b"\0"), "little")
    return None


def modinfo(ko: bytes, what: str = "module") -> dict[str, str]:
    """The ``.modinfo`` key=value strings of a kernel module (last value wins)."""
    blob = Elf(ko, what).section(".modinfo")
    if blob is None:
        raise ImageError(f"{what} has no .modinfo section")
    info: dict[str, str] = {}
    for item in blob.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            info[key.decode()] = value.decode(errors="replace")
    return info


def _cstr(buf: bytes | memoryview, off: int) -> str:
    end = off
    while end < len(buf) and buf[end] != 0:
        end += 1
    return bytes(buf[off:end]).decode(errors="replace")
