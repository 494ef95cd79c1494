"""Task attributes: their defaults, quota parsing, and the checks naming task and attribute.

A task that gives no ``priority`` runs best effort (the target's normal
time-sharing policy). ``description()`` then sends ``"priority": 0``, the
wire value the farm agent (``farm.agent.taskspec``/``sched``) and the Genode
Taskloader read as "no priority": 0 is only ever a wire value and is never
accepted from users, whose explicit priority must be an int in 1..128.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from farm.agent import cyclictest, workloads
from farm.agent.pkgs import SHELL_PKG, TRAFFIC_PKGS, is_known
from farm.agent.traffic import config as traffic_config
from farm.errors import ConfigError, TaskSetError
from farm.taskset.values import checkable, is_dimension, is_int, short, size

EDF_PRIORITY = 128
#: Wire value of ``priority`` for a task that gives none (best effort); never valid as input.
NO_PRIORITY = 0
_PRIORITY_RANGE = "an int in 1..128 (1..127 fixed, 128 = EDF; leave it out for best effort)"
#: Values ``description()`` fills in for missing attributes (config: a fresh {}).
#: ``priority`` 0 is the wire value for "none given" (best effort), see the module docstring.
DEFAULTS: dict[str, Any] = {
    "priority": NO_PRIORITY,
    "period": 0,
    "executiontime": 0,
    "criticaltime": 0,
    "deadline": 0,
    "offset": 0,
    "numberofjobs": 1,
    "quota": 0,
}
#: Attributes described only when a task gives them (``caps``: Genode capabilities).
OPTIONAL: tuple[str, ...] = ("caps",)
#: Task attributes, in the order ``description()`` lists them.
ATTRIBUTES: tuple[str, ...] = ("id", "pkg", "config", *DEFAULTS, *OPTIONAL)
_ATTRIBUTE_SET = frozenset(ATTRIBUTES)
_ANNOTATION_PREFIXES = ("x-", "_")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_QUOTA_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt])(?:i?b)?|b)?", re.IGNORECASE)
_QUOTA_FORMS = "bytes (int >= 0) or a size like '1M'"


def parse_quota(value: object) -> int:
    """Bytes of a quota: an int >= 0, or a size like "512K", "1M", "2G" (binary units)."""
    n = _quota_bytes(value)
    if n is None:
        raise ConfigError(f"quota must be {_QUOTA_FORMS}, got {value!r}")
    return n


def _quota_bytes(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    if isinstance(value, str):
        m = _QUOTA_RE.fullmatch(value.strip())
        if m:
            return round(float(m[1]) * _UNITS[(m[2] or "").lower()])
    return None


def is_annotation(key: object) -> bool:
    """True for a user annotation key (``x-...`` or ``_...``): not checked, not described."""
    return isinstance(key, str) and key.startswith(_ANNOTATION_PREFIXES)


def _is_time(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def _is_json(v: object) -> bool:
    if v is None or isinstance(v, str | bool | int):
        return True
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, list | tuple):
        return all(_is_json(x) for x in v)
    if isinstance(v, Mapping):
        return all(isinstance(k, str) and _is_json(x) for k, x in v.items())
    return False


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "priority": (lambda v: is_int(v) and 1 <= v <= EDF_PRIORITY, _PRIORITY_RANGE),
    "period": (_is_time, "a number >= 0"),
    "executiontime": (_is_time, "a number >= 0"),
    "criticaltime": (_is_time, "a number >= 0"),
    "deadline": (_is_time, "a number >= 0"),
    "offset": (_is_time, "a number >= 0"),
    "numberofjobs": (lambda v: is_int(v) and v >= 0, "an int >= 0"),
    "quota": (lambda v: _quota_bytes(v) is not None, _QUOTA_FORMS),
    "caps": (lambda v: is_int(v) and v >= 0, "an int >= 0"),
}


def check_task(task: Mapping[str, Any], pos: int, uploaded: frozenset[str]) -> None:
    """Raise TaskSetError for the first invalid attribute of a task (template or concrete).

    Every value of a finite dimension is checked (an int range by its bounds);
    values of unsized dimensions (iterators) are left for the variants.
    """
    tid = task.get("id")
    good_id = isinstance(tid, int) and not isinstance(tid, bool) and tid >= 0
    name = str(tid) if good_id else f"#{pos}"

    def fail(attribute: str, message: str) -> None:
        raise TaskSetError(
            f"task {name}: {message}", task=tid if tid is not None else pos, attribute=attribute
        )

    def each(attribute: str, value: Any) -> Iterable[Any]:
        values = checkable(value)
        if values is not None and size(values) == 0:
            fail(attribute, f"{attribute} is a dimension without values: {short(value)}")
        return values or ()

    for key in task:
        if key in _ATTRIBUTE_SET or is_annotation(key):
            continue
        hint = difflib.get_close_matches(str(key), ATTRIBUTES, n=1)
        why = f"did you mean {hint[0]!r}?" if hint else "annotations start with 'x-' or '_'"
        fail(str(key), f"unknown attribute {key!r} ({why})")
    if tid is not None and not good_id:
        fail("id", f"id must be an int >= 0, got {short(tid)}")
    for attribute, (ok, what) in _CHECKS.items():
        if attribute in task:
            for v in each(attribute, task[attribute]):
                if not ok(v):
                    fail(attribute, f"{attribute} must be {what}, got {short(v)}")
    if "pkg" not in task:
        fail("pkg", "pkg is required")
    pkgs = list(each("pkg", task["pkg"]))
    for pkg in pkgs:
        if not isinstance(pkg, str):
            fail("pkg", f"pkg must be a string, got {short(pkg)}")
        if not is_known(pkg, uploaded):
            fail("pkg", f"pkg {pkg!r} is unknown (not built in, not 'shell', no such binary added)")
    config = task.get("config", {})
    if not isinstance(config, Mapping):
        fail("config", f"config must be a dict, got {short(config)}")
    for key, value in config.items():
        attr = f"config[{key!r}]"
        if not isinstance(key, str):
            fail("config", f"config keys must be strings, got {short(key)}")
        for v in each(attr, value):
            if not _is_json(v):
                fail(
                    attr,
                    f"{attr} must be JSON data (str, number, bool, None, dict), got {short(v)}",
                )
    for pkg in pkgs:  # each key on its own: the agent's checks are per key
        if pkg in workloads.SCHEMAS:
            for key, value in config.items():
                for v in each(f"config[{key!r}]", value):
                    problem = workloads.check_config(pkg, {key: v})
                    if problem:
                        fail(f"config[{key!r}]", f"pkg {pkg!r}: {problem}")
    if cyclictest.PKG in pkgs:
        for key, value in config.items():
            for v in each(f"config[{key!r}]", value):
                problem = cyclictest.check_config({key: v})
                if problem:
                    fail(f"config[{key!r}]", f"pkg 'cyclictest': {problem}")
    for pkg in pkgs:  # traffic keys depend on each other: checked whole, once concrete
        if pkg in TRAFFIC_PKGS and not any(is_dimension(v) for v in config.values()):
            problem = traffic_config.check_config(pkg, dict(config))
            if problem:
                fail("config", f"pkg {pkg!r}: {problem}")
    if SHELL_PKG in pkgs:
        commands = each("config['command']", config.get("command"))
        for command in commands:
            if not (isinstance(command, str) and command.strip()):
                got = short(command)
                fail(
                    "config['command']", f"pkg 'shell' needs a config['command'] string, got {got}"
                )
