"""/init mounts /proc, /sys, /dev and cgroup2 with one ``mount -a`` over the image's fstab."""

from __future__ import annotations

from farm.image.initrd import FSTAB
from farm.resources import image_recipe_dir


def test_fstab_holds_every_mount_init_needs_before_dev_shm() -> None:
    points = [line.split()[1] for line in FSTAB.decode().splitlines()]
    assert points == ["/proc", "/sys", "/dev", "/sys/fs/cgroup"]  # in mount order


def test_init_mounts_through_the_fstab_not_a_fork_each() -> None:
    init = (image_recipe_dir() / "init.sh.in").read_text()
    assert "\nmount -a " in init
    assert "mount -t proc" not in init and "mount -t sysfs" not in init
    assert init.index("mount -a") < init.index("mount -t tmpfs -o mode=1777 tmpfs /dev/shm")
