"""The initrd's rebuild key covers every file the guest gets from this checkout."""

from __future__ import annotations

from pathlib import Path

from farm.image import builder, pyruntime

REPO = Path(builder.__file__).resolve().parents[2]


def test_initrd_code_digest_covers_the_guest_extras() -> None:
    hashed = {(builder._HERE / name).resolve() for name in builder._INITRD_CODE}
    for rel in pyruntime.GUEST_EXTRAS:  # e.g. farm/session/genode_wire.py: the fake dom0
        assert (REPO / rel).resolve() in hashed, rel
    assert all(path.is_file() for path in hashed)
