"""Name -> class lookup shared by the session and monitor registries.

Accepted names: a class name known to the registry (``"FarmSession"``), a
dotted name whose last part is such a class or whose module part lies in the
registry's package (``"session.FarmSession"``, ``"genode.GenodeSession"``,
``"farm.session.FarmSession"``), or ``"module:Class"`` for any importable class.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TypeVar, cast

from farm.errors import ConfigError

T = TypeVar("T")


def first_doc_line(cls: type) -> str:
    """First line of a class's docstring ('' if it has none)."""
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def resolve_class(
    name: str,
    known: Mapping[str, type[T]],
    base: type,
    package: str,
    accept: Callable[[type], bool] | None = None,
) -> type[T]:
    """Find the class called ``name`` (see module docstring); ConfigError if none fits.

    A class qualifies if it subclasses ``base`` or, when given, ``accept(cls)`` holds.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"not a class name: {name!r}")
    name = name.strip()
    cls: object = None
    if ":" in name:
        module_name, _, attr = name.partition(":")
        cls = _import_attr(module_name, attr, name)
    elif name in known:
        cls = known[name]
    elif "." in name:
        module_name, _, attr = name.rpartition(".")
        if attr in known:
            cls = known[attr]
        else:
            for candidate in (f"{package}.{module_name}", module_name):
                try:
                    cls = _import_attr(candidate, attr, name)
                    break
                except ConfigError:
                    continue
    if cls is None:
        choices = ", ".join(sorted(known))
        raise ConfigError(f"unknown {base.__name__} {name!r}; known: {choices}")
    if not isinstance(cls, type) or not (
        issubclass(cls, base) or (accept is not None and accept(cls))
    ):
        raise ConfigError(f"{name!r} is not a {base.__name__}")
    return cast("type[T]", cls)


def _import_attr(module_name: str, attr: str, name: str) -> object:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r} for {name!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise ConfigError(f"{module_name!r} has no {attr!r} (from {name!r})") from exc
