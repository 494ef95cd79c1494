"""taskgen's variant rule: every non-string iterable value (config values too) is a dimension.

A task's variants are the product of its flattened values (nested dicts are
walked, last key fastest); a set's variants the product of its tasks'
variants (last task fastest). Unlike the originals, an empty dict (e.g.
``"config": {}``) and a mapping value are kept as one value, not iterated.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from farm.taskset.variants import Dimension, odometer


def _flatten(
    d: Mapping[str, Any], prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], Any]]:
    out: list[tuple[tuple[str, ...], Any]] = []
    for key, value in d.items():
        if isinstance(value, Mapping) and value:
            out += _flatten(value, (*prefix, key))
        else:
            out.append(((*prefix, key), value))
    return out


def _choices(value: Any) -> Iterable[Any]:
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        return [value]
    return value


def dict_variants(d: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every combination of ``d``'s dimensions, as fresh nested dicts."""
    flat = _flatten(d)
    keys = [k for k, _ in flat]
    for values in itertools.product(*(_choices(v) for _, v in flat)):
        out: dict[str, Any] = {}
        for path, value in zip(keys, values, strict=True):
            where = out
            for part in path[:-1]:
                where = where.setdefault(part, {})
            where[path[-1]] = value
        yield out


def is_concrete(d: Mapping[str, Any]) -> bool:
    """True if no value of ``d`` (nested dicts walked) is a dimension."""
    return all(
        isinstance(v, str | bytes | Mapping) or not isinstance(v, Iterable) for _, v in _flatten(d)
    )


class _Restartable:
    """An iterable whose every iteration is a fresh ``make()`` (one odometer axis)."""

    def __init__(self, make: Callable[[], Iterator[Any]]) -> None:
        self._make = make

    def __iter__(self) -> Iterator[Any]:
        return self._make()


def lazy_product(factories: list[Callable[[], Iterator[Any]]]) -> Iterator[tuple[Any, ...]]:
    """``itertools.product`` of re-startable iterators (first slowest), never materialised.

    farm's own odometer (:func:`farm.taskset.variants.odometer`) does the counting.
    """
    for current in odometer([Dimension(_Restartable(make), replay=False) for make in factories]):
        yield tuple(current)
