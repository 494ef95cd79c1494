"""Built-in workloads for taskgen's pkg names, run as one job process each.

The agent runs the native ``farm-workload`` (native/*.c: the same
configs, output lines and exit statuses, no interpreter start-up) when it has
one; this module is the fallback, the reference the native one is tested
against, and the host's config check (:func:`check_config`).

Stand-alone on purpose (stdlib only, no farm imports): the agent runs it by
path as ``python -S -s -P workloads.py PKG CONFIG [QUOTA_BYTES]`` because ``-S``
(no ``site``) and a lean import list cut interpreter start-up, which counts
toward the job's CPU budget, from ~30 ms to ~10 ms. CONFIG is a JSON object
or the compact ``key=value,...`` form of :func:`encode_config` (no json
import needed). ``python -m farm.agent.workloads PKG CONFIG_JSON`` works too.

Configs (every key optional; ``arg1``, taskgen's key, is accepted as an alias of
the first key; defaults keep each job well under 100 ms):

========  =====================  ==================================================
pkg       config                 what it does
========  =====================  ==================================================
hey       {}                     prints a greeting
namaste   {}                     prints a greeting
pi        {"digits": 100}        computes pi to that many digits (Machin formula)
cond_42   {"arg": 42,            exits at once if arg == 42, else counts to
          "count": 100000}       ``count`` first (taskgen: "terminates without
                                 counting if the condition holds"); exit 0 either way
cond_mod  {"arg": 2,             the same with the condition "arg is even"
          "count": 100000}
linpack   {"n": 30}              solves a dense n x n system (Gaussian elimination
                                 with partial pivoting); exit 1 if the residual is bad
tumatmul  {"n": 20}              multiplies two n x n matrices
idle      {"ms": 10}             sleeps
memhog    {"bytes": 1048576}     allocates and touches that many bytes
========  =====================  ==================================================

Memory quota: with QUOTA_BYTES > 0 the workload limits its own address space
(RLIMIT_AS) to the interpreter's size after start-up plus the quota, so the
quota is what the workload may allocate on top of the runtime. A MemoryError
exits with :data:`EXIT_QUOTA`, which the agent reports as OUT_OF_QUOTA.
"""

from __future__ import annotations

import math
import os
import resource
import sys
import time

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs ~10 ms of budget
if TYPE_CHECKING:  # keep start-up lean: typing and collections cost milliseconds
    from collections.abc import Callable
    from typing import Any

#: exit status of a workload that ran out of its memory quota
EXIT_QUOTA = 86
#: exit status for a bad command line or config
EXIT_USAGE = 2

_INT_MAX = 1 << 40

#: pkg -> {key: (type, default, minimum, maximum)}; the first key takes ``arg1``.
SCHEMAS: dict[str, dict[str, tuple[type, float, float, float]]] = {
    "hey": {},
    "namaste": {},
    "pi": {"digits": (int, 100, 1, 1_000_000)},
    "cond_42": {"arg": (int, 42, -_INT_MAX, _INT_MAX), "count": (int, 100_000, 0, _INT_MAX)},
    "cond_mod": {"arg": (int, 2, -_INT_MAX, _INT_MAX), "count": (int, 100_000, 0, _INT_MAX)},
    "linpack": {"n": (int, 30, 1, 2000)},
    "tumatmul": {"n": (int, 20, 1, 2000)},
    "idle": {"ms": (float, 10, 0, 10**10)},
    "memhog": {"bytes": (int, 1 << 20, 0, 1 << 44)},
}


def _resolve(pkg: str, config: object) -> dict[str, Any]:
    """Config with aliases resolved and defaults filled; raise ValueError naming the key."""
    if pkg not in SCHEMAS:
        raise ValueError(f"unknown built-in workload {pkg!r}")
    if not isinstance(config, dict):
        raise ValueError("config must be an object")
    schema = SCHEMAS[pkg]
    given = dict(config)
    if "arg1" in given and schema:
        first = next(iter(schema))
        given.setdefault(first, given["arg1"])
    out: dict[str, Any] = {}
    for key, (kind, default, low, high) in schema.items():
        value = given.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"config.{key} must be a number, got {value!r}")
        if kind is int and not isinstance(value, int):
            if not (isinstance(value, float) and value.is_integer()):
                raise ValueError(f"config.{key} must be an integer, got {value!r}")
            value = int(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"config.{key} must be finite")
        if not low <= value <= high:
            raise ValueError(f"config.{key}={value!r} is outside [{low:g}, {high:g}]")
        out[key] = value
    return out


def check_config(pkg: str, config: object) -> str | None:
    """Why ``config`` is unusable for built-in ``pkg`` (naming the key), or None if fine."""
    try:
        _resolve(pkg, config)
    except ValueError as exc:
        return str(exc)
    return None


def _whoami() -> str:
    return f"task {os.environ.get('FARM_TASK_ID', '?')} job {os.environ.get('FARM_JOB', '?')}"


def _hey(cfg: dict[str, Any]) -> int:
    print(f"Hey! I am {_whoami()}.")
    return 0


def _namaste(cfg: dict[str, Any]) -> int:
    print(f"Namaste from {_whoami()}.")
    return 0


def _pi(cfg: dict[str, Any]) -> int:
    digits = cfg["digits"]
    scale = 10 ** (digits + 10)

    def arctan_inv(x: int) -> int:
        total = term = scale // x
        x2, n, sign = x * x, 3, -1
        while term:
            term //= x2
            total += sign * (term // n)
            n, sign = n + 2, -sign
        return total

    value = 4 * (4 * arctan_inv(5) - arctan_inv(239)) // 10**10
    if hasattr(sys, "set_int_max_str_digits"):  # str() of > 4300 digits is refused by default
        sys.set_int_max_str_digits(0)
    text = str(value)
    print(f"{text[0]}.{text[1:]}")
    return 0


def _count_unless(condition: bool, count: int) -> int:
    if condition:
        print("condition met, no counting")
        return 0
    total = 0
    for i in range(count):
        total += i
    print(f"counted to {count}")
    return 0


def _cond_42(cfg: dict[str, Any]) -> int:
    return _count_unless(cfg["arg"] == 42, cfg["count"])


def _cond_mod(cfg: dict[str, Any]) -> int:
    return _count_unless(cfg["arg"] % 2 == 0, cfg["count"])


class _Lcg:
    """Tiny deterministic generator (``random`` costs a millisecond to import)."""

    def __init__(self, seed: int) -> None:
        self.state = seed & 0xFFFFFFFFFFFF or 1

    def uniform(self, low: float, high: float) -> float:
        self.state = (self.state * 0x5DEECE66D + 0xB) & 0xFFFFFFFFFFFF
        return low + (high - low) * self.state / 0x1000000000000


def _matrix(n: int, rng: _Lcg) -> list[list[float]]:
    return [[rng.uniform(-1.0, 1.0) for _ in range(n)] for _ in range(n)]


def _linpack(cfg: dict[str, Any]) -> int:
    n = cfg["n"]
    rng = _Lcg(n)
    a = _matrix(n, rng)
    for i in range(n):
        a[i][i] += n  # diagonally dominant: well conditioned
    b = [sum(row) for row in a]  # solution is all ones
    m = [[*row, b[i]] for i, row in enumerate(a)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(col + 1, n):
            f = m[r][col] / m[col][col]
            if f:
                row, prow = m[r], m[col]
                for c in range(col, n + 1):
                    row[c] -= f * prow[c]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (m[r][n] - sum(m[r][c] * x[c] for c in range(r + 1, n))) / m[r][r]
    residual = max(abs(v - 1.0) for v in x)
    print(f"linpack n={n} residual={residual:.3e}")
    return 0 if residual < 1e-6 else 1


def _tumatmul(cfg: dict[str, Any]) -> int:
    n = cfg["n"]
    rng = _Lcg(n)
    a, b = _matrix(n, rng), _matrix(n, rng)
    bt = list(zip(*b))
    c = [[sum(x * y for x, y in zip(row, colm)) for colm in bt] for row in a]
    print(f"tumatmul n={n} trace={sum(c[i][i] for i in range(n)):.6f}")
    return 0


def _idle(cfg: dict[str, Any]) -> int:
    time.sleep(cfg["ms"] / 1000.0)
    return 0


def _memhog(cfg: dict[str, Any]) -> int:
    size = cfg["bytes"]
    buf = bytearray(size)
    buf[::4096] = b"\x01" * len(range(0, size, 4096))  # touch every page
    print(f"memhog holds {len(buf)} bytes")
    return 0


RUNNERS: dict[str, Callable[[dict[str, Any]], int]] = {
    "hey": _hey,
    "namaste": _namaste,
    "pi": _pi,
    "cond_42": _cond_42,
    "cond_mod": _cond_mod,
    "linpack": _linpack,
    "tumatmul": _tumatmul,
    "idle": _idle,
    "memhog": _memhog,
}


def _limit_memory(quota: int) -> None:
    """Cap the address space at the current size plus ``quota`` bytes."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[0])
        base = pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        base = 0
    limit = base + quota
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def encode_config(pkg: str, config: object) -> str:
    """Compact command-line form of a config: ``key=value,...`` with defaults resolved.

    Saves the child importing json (~6 ms of start-up, part of the job's budget).
    """
    return ",".join(f"{k}={v!r}" for k, v in _resolve(pkg, config).items())


def _parse_config(text: str) -> dict[str, Any]:
    if text.lstrip().startswith("{"):
        import json

        parsed = json.loads(text)
        if not isinstance(parsed, dict):
            raise ValueError("config must be a JSON object")
        return parsed
    out: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"config item {item!r} is not key=value")
        out[key.strip()] = float(value) if any(c in value for c in ".eEn") else int(value)
    return out


def main(argv: list[str]) -> int:
    """Run one workload: ``PKG CONFIG [QUOTA_BYTES]``; return the exit status.

    CONFIG is a JSON object or the compact ``key=value,...`` of :func:`encode_config`.
    """
    if len(argv) not in (2, 3):
        print("usage: workloads.py PKG CONFIG [QUOTA_BYTES]", file=sys.stderr)
        return EXIT_USAGE
    try:
        cfg = _resolve(argv[0], _parse_config(argv[1]))
        quota = int(argv[2]) if len(argv) == 3 else 0
    except ValueError as exc:
        print(f"workload: {exc}", file=sys.stderr)
        return EXIT_USAGE
    runner = RUNNERS[argv[0]]
    try:
        if quota > 0:
            _limit_memory(quota)
        status = runner(cfg)
        sys.stdout.flush()
        return status
    except MemoryError:
        os.write(2, b"workload: out of memory quota\n")
        return EXIT_QUOTA


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
