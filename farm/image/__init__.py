"""Guest image of farm: a PREEMPT_RT kernel (PVH ELF) and an initramfs with the agent.

``build(force=False, out_dir=Path("images")) -> ImageInfo`` writes
``image.elf`` and ``initrd.img`` (cached, reproducible; see
:mod:`farm.image.builder`); ``farm image build`` (or its alias ``python -m farm.image
build``) runs it from a shell.
Parts: :mod:`~farm.image.debs` (apt), :mod:`~farm.image.kernel_source` (farm's
own kernel, compiled), :mod:`~farm.image.kernel` (vmlinux + modules of Debian's
packaged kernel), :mod:`~farm.image.pyruntime` (trimmed python),
:mod:`~farm.image.initrd` + :mod:`~farm.image.cpio` (the initramfs).
"""

from __future__ import annotations

from farm.image.builder import ImageInfo, build

__all__ = ["ImageInfo", "build"]
