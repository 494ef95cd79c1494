"""argos-research/taskgen, importable as ``farm.compat.taskgen``: task, taskset, blocks,
distributor, monitor, events.csv (see docs/compat.md)."""
