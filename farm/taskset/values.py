"""Kinds of attribute values: scalars versus dimensions of variation, and small shared helpers."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

_SCALAR_TYPES = (str, bytes, bytearray, Mapping)
END: Any = object()  # sentinel: "no value" where None is a value


def is_dimension(value: object) -> bool:
    """True if ``value`` varies: any iterable except str, bytes and mappings."""
    return isinstance(value, Iterable) and not isinstance(value, _SCALAR_TYPES)


def size(value: Any) -> int | None:
    """Number of values of a dimension, or None if unsized (iterator, generator, ...)."""
    if isinstance(value, Iterator) or not hasattr(value, "__len__"):
        return None
    return len(value)


def checkable(value: Any) -> Iterable[Any] | None:
    """Values of ``value`` to check now (a scalar is its own value); None if drawn later."""
    if not is_dimension(value):
        return (value,)
    if isinstance(value, range):
        return (value[0], value[-1]) if value else ()  # an int range: its bounds suffice
    if isinstance(value, Iterator) or not hasattr(value, "__len__"):
        return None
    return value  # type: ignore[no-any-return]


def is_int(v: object) -> bool:
    """True for an int that is not a bool."""
    return isinstance(v, int) and not isinstance(v, bool)


def plain(v: Any) -> Any:
    """``v`` with mappings as dicts and tuples as lists, copied (JSON-shaped)."""
    if isinstance(v, Mapping):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [plain(x) for x in v]
    return v


def short(value: object) -> str:
    """``repr(value)`` cut to 80 characters, for error messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
