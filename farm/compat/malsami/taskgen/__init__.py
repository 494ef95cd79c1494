"""The malsami/taskgen fork, importable as ``farm.compat.malsami.taskgen``."""
