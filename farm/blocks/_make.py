"""Block factories shared by the block modules: fixed values, dimensions, random draws."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from farm.errors import ConfigError
from farm.taskset import is_dimension

Number = int | float


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def draw(rng: random.Random, lo: Number, hi: Number) -> Number:
    """One value in [lo, hi]: an int if both bounds are ints, else a float."""
    if isinstance(lo, int) and isinstance(hi, int):
        return rng.randint(lo, hi)
    return rng.uniform(lo, hi)


@dataclass(frozen=True, eq=False)
class RandomBlock:
    """Callable block: ``key`` (or ``config[key]``) drawn from [lo, hi] with the task set's RNG.

    Without ``count`` the value is one draw; with ``count`` it is a list of
    ``count`` draws, i.e. a dimension of ``count`` variants.
    """

    key: str
    lo: Number
    hi: Number
    count: int | None = None
    in_config: bool = False
    base: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (_is_number(self.lo) and _is_number(self.hi) and self.lo <= self.hi):
            raise ConfigError(
                f"random {self.key}: need numbers lo <= hi, got {self.lo!r}, {self.hi!r}"
            )
        if self.count is not None and not (
            isinstance(self.count, int) and not isinstance(self.count, bool) and self.count >= 1
        ):
            raise ConfigError(f"random {self.key}: count must be an int >= 1, got {self.count!r}")

    def __call__(self, rng: random.Random) -> dict[str, Any]:
        if self.count is None:
            value: Any = draw(rng, self.lo, self.hi)
        else:
            value = [draw(rng, self.lo, self.hi) for _ in range(self.count)]
        block = dict(self.base)
        if self.in_config:
            block["config"] = {**block.get("config", {}), self.key: value}
        else:
            block[self.key] = value
        return block

    def __repr__(self) -> str:
        where = f"config[{self.key!r}]" if self.in_config else self.key
        count = "" if self.count is None else f" x{self.count}"
        return f"<random {where} in [{self.lo}, {self.hi}]{count}>"


def value(key: str, v: Any) -> dict[str, Any]:
    """Block setting ``key`` to ``v``."""
    return {key: v}


def variants(key: str, values: Any) -> dict[str, Any]:
    """Block making ``key`` a dimension over ``values`` (list, range, tuple, set, generator)."""
    if not is_dimension(values):
        raise ConfigError(
            f"{key} variants must be a list, range, tuple, set or generator, got {values!r}"
        )
    return {key: values}


def workload(pkg: str, **config: Any) -> dict[str, Any]:
    """Block running built-in workload ``pkg`` with ``config`` arguments."""
    return {"pkg": pkg, "config": dict(config)}


def random_arg(pkg: str, arg: str, lo: Number, hi: Number, count: int | None) -> RandomBlock:
    """Random block for workload ``pkg`` with ``config[arg]`` drawn from [lo, hi]."""
    return RandomBlock(arg, lo, hi, count, in_config=True, base=workload(pkg))
