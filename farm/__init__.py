"""farm: QEMU virtual-machine farm manager for real-time task-set experiments."""
__version__ = "0.1.0"
