"""farm's own data files, found through importlib.resources (checkout or installed wheel).

Everything farm reads from its own tree at run time is named here, so that a
wheel installed anywhere has it too; ``pyproject.toml``'s package-data lists
the same files (``tests/unit/test_resources.py`` checks both against each other).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from farm.errors import FarmError


def package_file(*parts: str) -> Path:
    """Path of ``farm/<parts...>`` on the file system (farm is never imported from a zip)."""
    ref = resources.files("farm").joinpath(*parts)
    if not isinstance(ref, Path):
        raise FarmError(
            f"farm's data file {'/'.join(parts)} is not on the file system ({ref!r}): "
            "install farm as a regular (unzipped) package"
        )
    return ref


def package_root() -> Path:
    """The directory that holds the ``farm`` package (what a child's PYTHONPATH needs)."""
    return package_file().parent


def agent_dir() -> Path:
    """The guest agent's sources (farm/agent), embedded in the initrd."""
    return package_file("agent")


def native_source_dir() -> Path:
    """C sources of the built-in workloads' native program (farm/agent/native)."""
    return package_file("agent", "native")


def image_recipe_dir() -> Path:
    """The initrd's recipe: init.sh.in, udhcpc.script, python-modules.txt."""
    return package_file("image", "recipe")


def kernel_recipe_dir() -> Path:
    """farm's kernel config fragment and patches (farm/image/kernel)."""
    return package_file("image", "kernel")


def dhcpd_template() -> Path:
    """Template of the dhcpd.conf farm renders for its own dhcpd (network = "bridge")."""
    return package_file("bridge", "dhcpd.conf")
