"""farm.resources and the wheel's package-data: every data file farm reads is shipped."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import tomllib
from pathlib import Path

import farm
from farm import resources
from farm.bridge import dhcp
from farm.image import builder, kernel_source, native

REPO = Path(__file__).resolve().parents[2]


def test_every_data_file_is_found_in_the_package() -> None:
    assert resources.package_root() == REPO
    for name in ("init.sh.in", "udhcpc.script", "python-modules.txt"):
        assert (resources.image_recipe_dir() / name).is_file()
    assert (resources.kernel_recipe_dir() / "farm.config").is_file()
    assert (resources.native_source_dir() / "workloads.c").is_file()
    assert (resources.agent_dir() / "protocol.py").is_file()
    assert resources.dhcpd_template().is_file()
    # the modules that read them use the same places
    assert resources.image_recipe_dir() == builder.RECIPE_DIR
    assert resources.agent_dir() == builder.AGENT_DIR
    assert resources.native_source_dir() == native.SOURCE_DIR
    assert resources.dhcpd_template() == dhcp.TEMPLATE
    # kernel_source keeps its own package-relative lookup: its text is part of the compiled
    # kernel's cache key, so editing it would recompile every farm's kernel
    assert resources.kernel_recipe_dir() == kernel_source.RECIPE


def test_package_data_covers_every_non_python_file_of_the_package() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = {
        pkg.replace(".", "/"): globs for pkg, globs in config["package-data"].items()
    }  # fmt: skip
    tracked = subprocess.run(
        ["git", "ls-files", "farm"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    missing = []
    for name in tracked:
        if name.endswith(".py") or (name.endswith("/README.md") and name != "farm/agent/README.md"):
            continue
        shipped = any(
            name.startswith(pkg + "/")
            and any(fnmatch.fnmatch(name.removeprefix(pkg + "/"), g) for g in globs)
            for pkg, globs in patterns.items()
        )
        if not shipped:
            missing.append(name)
    assert not missing, f"not in pyproject's package-data: {missing}"


def test_one_version_source() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "farm.__version__" and farm.__version__
    assert (REPO / "farm" / "py.typed").is_file()


def test_no_module_looks_outside_the_package_relative_to_its_file() -> None:
    """Repo-relative lookups (``Path(__file__).parents[2] / "images"``) break in a wheel.

    farm.paths alone decides about the checkout; the agent (embedded in the guest image,
    where farm.resources is absent) finds its own root itself.
    """
    pattern = re.compile(r"__file__.*(\.parents\[|\.parent\.parent)")
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for path in sorted((REPO / "farm").rglob("*.py"))
        if path.name != "paths.py" and "agent" not in path.relative_to(REPO).parts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders, f"use farm.resources / farm.paths instead: {offenders}"
