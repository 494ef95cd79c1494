"""Random variables for message sizes and think times: fixed, uniform, exponential, pareto."""

from __future__ import annotations

import math
import random

from farm.agent.traffic import TrafficConfigError


class Distribution:
    """A random variable: fixed, uniform min-max, exponential (mean) or pareto (shape, scale)."""

    __slots__ = ("a", "b", "kind")

    def __init__(self, kind: str, a: float, b: float = 0.0) -> None:
        self.kind, self.a, self.b = kind, a, b

    def sample(self, rng: random.Random) -> float:
        """One draw from ``rng`` (always exactly one call on it, for reproducible runs)."""
        if self.kind == "fixed":
            rng.random()
            return self.a
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        if self.kind == "exp":
            return rng.expovariate(1.0 / self.a) if self.a > 0 else 0.0 * rng.random()
        return self.b * rng.paretovariate(self.a)

    def mean(self) -> float:
        """Expected value (inf for a pareto shape <= 1)."""
        if self.kind == "fixed" or self.kind == "exp":
            return self.a
        if self.kind == "uniform":
            return (self.a + self.b) / 2
        return self.a * self.b / (self.a - 1) if self.a > 1 else math.inf

    def __str__(self) -> str:
        if self.kind == "uniform":
            return f"uniform:{self.a:g}-{self.b:g}"
        if self.kind == "pareto":
            return f"pareto:{self.a:g},{self.b:g}"
        return f"{self.kind}:{self.a:g}"

    def __repr__(self) -> str:
        return f"Distribution({str(self)!r})"


_FORMS = "'fixed:X' (or X), 'uniform:MIN-MAX', 'exp:MEAN', 'pareto:SHAPE,SCALE'"


def number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TrafficConfigError(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise TrafficConfigError(f"{what}: {text!r} must be a finite number >= 0")
    return value


def parse_distribution(spec: object, what: str = "distribution") -> Distribution:
    """A Distribution from a number or a spec string; raise TrafficConfigError naming ``what``."""
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        return Distribution("fixed", number(repr(spec), what))
    if not isinstance(spec, str) or not spec.strip():
        raise TrafficConfigError(f"{what} must be a number or one of {_FORMS}, got {spec!r}")
    kind, sep, args = spec.strip().partition(":")
    kind = kind.strip().lower()
    if not sep:
        kind, args = "fixed", spec
    if kind in ("fixed", "const"):
        return Distribution("fixed", number(args.strip(), what))
    if kind == "uniform":
        low, dash, high = args.strip().partition("-")
        if not dash:
            raise TrafficConfigError(f"{what}: uniform needs MIN-MAX, got {spec!r}")
        a, b = number(low.strip(), what), number(high.strip(), what)
        if a > b:
            raise TrafficConfigError(f"{what}: uniform min {a:g} is above max {b:g}")
        return Distribution("uniform", a, b)
    if kind in ("exp", "exponential"):
        return Distribution("exp", number(args.strip(), what))
    if kind == "pareto":
        shape, comma, scale = args.partition(",")
        a, b = number(shape.strip(), what), number(scale.strip(), what) if comma else -1.0
        if not comma or a <= 0 or b <= 0:
            raise TrafficConfigError(f"{what}: pareto needs SHAPE,SCALE both > 0, got {spec!r}")
        return Distribution("pareto", a, b)
    raise TrafficConfigError(f"{what}: unknown distribution {kind!r}; use {_FORMS}")
