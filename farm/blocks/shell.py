"""``shell``: runs ``config["command"]`` with /bin/sh."""

from __future__ import annotations

from typing import Any

from farm.blocks._make import variants, workload


def Command(command: str) -> dict[str, Any]:
    """Run ``command`` with /bin/sh."""
    return workload("shell", command=command)


def Variants(commands: Any) -> dict[str, Any]:
    """One variant per command in ``commands``."""
    return {**workload("shell"), "config": variants("command", commands)}
