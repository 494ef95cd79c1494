"""Task descriptions as the host sends them: validation and defaults.

The agent trusts nothing on the wire, so every attribute is checked again
here; an invalid task set is refused as a whole (error ``invalid_taskset``
naming the task and the attribute) and nothing starts.

Task dict (times in milliseconds, ints or finite floats)::

    {"id": int >= 0, "pkg": str, "config": dict = {}, "priority": 0..128 = 0,
     "period": 0, "executiontime": 0, "criticaltime": 0, "deadline": 0,
     "offset": 0, "numberofjobs": 1, "quota": 0}

``None`` counts as missing. ``quota`` is bytes; taskgen's strings such as
``"1M"`` / ``"512K"`` / ``"2G"`` (binary multiples) are accepted too. Unknown
keys are ignored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from farm.agent import pkgs, workloads

MAX_MS = 10**10  # ~115 days; taskgen's "no limit" 999999999 fits
MAX_JOBS = 10**9
MAX_QUOTA = 1 << 50
MAX_TASKS = 4096
MAX_ID = (1 << 63) - 1
#: at most 30 ASCII digits: int() of 4,300+ digits raises, and no quota needs more than 16
_QUOTA_RE = re.compile(r"\s*([0-9]{1,30})\s*([KMGT]?)i?B?\s*", re.IGNORECASE | re.ASCII)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_TIME_KEYS = ("period", "executiontime", "criticaltime", "deadline", "offset")


class InvalidTaskSet(ValueError):
    """A task set the agent refuses; the message names the task and the attribute."""

    def __init__(self, message: str, task: object = None, attribute: str | None = None):
        super().__init__(message)
        self.task = task
        self.attribute = attribute


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One validated task; times in milliseconds."""

    id: int
    pkg: str
    config: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    period: float = 0.0
    executiontime: float = 0.0
    criticaltime: float = 0.0
    deadline: float = 0.0
    offset: float = 0.0
    numberofjobs: int = 1
    quota: int = 0

    @property
    def critical_ms(self) -> float:
        """The job's time limit for EXIT_CRITICAL: criticaltime, else deadline (0 = none)."""
        return self.criticaltime or self.deadline

    def describe(self) -> dict[str, Any]:
        """Plain dict for status replies."""
        return {
            "id": self.id,
            "pkg": self.pkg,
            "priority": self.priority,
            "period": self.period,
            "numberofjobs": self.numberofjobs,
        }


def _number(task: object, key: str, value: object, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidTaskSet(f"task {task}: {key} must be a number, got {value!r}", task, key)
    if not math.isfinite(value) or not 0 <= value <= high:
        raise InvalidTaskSet(f"task {task}: {key}={value!r} is outside [0, {high:g}]", task, key)
    return float(value)


def _integer(task: object, key: str, value: object, low: int, high: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTaskSet(f"task {task}: {key} must be an integer, got {value!r}", task, key)
    if not low <= value <= high:
        raise InvalidTaskSet(f"task {task}: {key}={value} is outside [{low}, {high}]", task, key)
    return value


def parse_quota(task: object, value: object) -> int:
    """Bytes from an int or a string such as ``"1M"``."""
    if isinstance(value, str):
        match = _QUOTA_RE.fullmatch(value)
        if not match:
            shown = repr(value) if len(value) <= 40 else f"{value[:20]!r}... ({len(value)} chars)"
            raise InvalidTaskSet(f"task {task}: quota {shown} is not a size", task, "quota")
        value = int(match.group(1)) * _UNITS[match.group(2).upper()]
    return _integer(task, "quota", value, 0, MAX_QUOTA)


def _check_config(task: object, pkg: str, config: dict[str, Any], uploaded: bool) -> None:
    if uploaded:
        args = config.get("args")
        if args is not None and (
            not isinstance(args, list) or not all(_is_scalar(a) for a in args)
        ):
            raise InvalidTaskSet(
                f"task {task}: config.args must be a list of scalars", task, "config.args"
            )
        for key, value in config.items():
            if key != "args" and not _is_scalar(value):
                raise InvalidTaskSet(
                    f"task {task}: config.{key} must be a string or number for a binary",
                    task,
                    f"config.{key}",
                )
        return
    if pkg == pkgs.SHELL_PKG:
        command = config.get("command")
        if not isinstance(command, str) or not command.strip():
            raise InvalidTaskSet(
                f"task {task}: shell needs config.command (a non-empty string)",
                task,
                "config.command",
            )
        return
    if pkg in pkgs.PROGRAM_PKGS:
        from farm.agent import cyclictest

        problem = cyclictest.check_config(config)
    elif pkg in pkgs.TRAFFIC_PKGS:  # imported only when a set uses traffic
        from farm.agent.traffic import config as traffic_config

        problem = traffic_config.check_config(pkg, config)
    else:
        problem = workloads.check_config(pkg, config)
    if problem:
        raise InvalidTaskSet(f"task {task}: {problem}", task, "config")


def _is_scalar(value: object) -> bool:
    return isinstance(value, str | int | float | bool)


def parse_task(raw: object, index: int, uploaded: Iterable[str] = ()) -> TaskSpec:
    """Validate one task dict (``index`` names it when its id is unusable)."""
    if not isinstance(raw, dict):
        raise InvalidTaskSet(f"task #{index} is not an object", f"#{index}", None)
    name: object = f"#{index}"
    tid = _integer(name, "id", raw.get("id"), 0, MAX_ID)
    name = tid
    pkg = raw.get("pkg")
    if not isinstance(pkg, str) or not pkg:
        raise InvalidTaskSet(f"task {name}: pkg must be a non-empty string", name, "pkg")
    uploaded = frozenset(uploaded)
    if not pkgs.is_known(pkg, uploaded):
        raise InvalidTaskSet(f"task {name}: unknown pkg {pkg!r}", name, "pkg")
    config = raw.get("config")
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise InvalidTaskSet(f"task {name}: config must be an object", name, "config")
    _check_config(name, pkg, config, pkg in uploaded)

    def get(key: str, default: object) -> object:
        value = raw.get(key)
        return default if value is None else value

    times = {key: _number(name, key, get(key, 0), MAX_MS) for key in _TIME_KEYS}
    return TaskSpec(
        id=tid,
        pkg=pkg,
        config=config,
        priority=_integer(name, "priority", get("priority", 0), 0, 128),
        numberofjobs=_integer(name, "numberofjobs", get("numberofjobs", 1), 0, MAX_JOBS),
        quota=parse_quota(name, get("quota", 0)),
        **times,
    )


def parse_taskset(raw: object, uploaded: Iterable[str] = ()) -> list[TaskSpec]:
    """Validate a whole task set (a non-empty list of task dicts with unique ids)."""
    if not isinstance(raw, list):
        raise InvalidTaskSet("tasks must be a list of task objects", None, "tasks")
    if not raw:
        raise InvalidTaskSet("task set has no tasks", None, "tasks")
    if len(raw) > MAX_TASKS:
        raise InvalidTaskSet(f"task set has {len(raw)} tasks, limit {MAX_TASKS}", None, "tasks")
    names = frozenset(uploaded)
    specs = [parse_task(task, i, names) for i, task in enumerate(raw)]
    seen: set[int] = set()
    for spec in specs:
        if spec.id in seen:
            raise InvalidTaskSet(f"task {spec.id}: duplicate id", spec.id, "id")
        seen.add(spec.id)
    return specs
