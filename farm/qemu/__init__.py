"""Starting QEMU and talking QMP: the one launcher and the one QMP client of farm."""

from farm.errors import LaunchError
from farm.qemu.ports import free_port
from farm.qemu.process import QemuProcess, Screen, redact
from farm.qemu.qmp import QmpClient, QmpError

__all__ = ["LaunchError", "QemuProcess", "QmpClient", "QmpError", "Screen", "free_port", "redact"]
