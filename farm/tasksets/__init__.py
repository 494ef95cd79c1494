"""Ready task sets, and lookup by name (``example.Hey0TaskSet`` or ``package.module:Class``)."""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import pkgutil

from farm.errors import ConfigError
from farm.taskset import TaskSet

log = logging.getLogger(__name__)


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def _classes(module_name: str) -> list[type[TaskSet]]:
    """TaskSet subclasses defined in ``farm.tasksets.<module_name>``, in source order."""
    module = importlib.import_module(f"{__name__}.{module_name}")
    found = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, TaskSet)
        and obj.__module__ == module.__name__
        and not obj.__name__.startswith("_")
    ]
    return sorted(found, key=lambda cls: inspect.getsourcelines(cls)[1])


def _first_line(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    return doc.splitlines()[0] if doc else ""


def available() -> list[tuple[str, str]]:
    """(name, first docstring line) of every task set here, e.g. ``example.Hey0TaskSet``."""
    out = []
    for module_name in _modules():
        try:
            classes = _classes(module_name)
        except Exception as exc:  # one broken module must not hide the others
            log.warning("farm.tasksets.%s cannot be imported: %s", module_name, exc)
            continue
        out += [(f"{module_name}.{cls.__name__}", _first_line(cls)) for cls in classes]
    return out


def resolve(name: str) -> type[TaskSet]:
    """TaskSet class named ``module.Class`` (in farm.tasksets), ``Class`` or ``pkg.mod:Class``."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"task set {name!r} not found: {exc}") from exc
        return _checked(name, obj)
    names = [n for n, _ in available()]
    if "." not in name:
        matches = [n for n in names if n.rpartition(".")[2] == name]
        if len(matches) == 1:
            name = matches[0]
        elif len(matches) > 1:
            raise ConfigError(f"task set {name!r} is ambiguous: {', '.join(matches)}")
    module_name, _, attr = name.rpartition(".")
    if name in names:
        return _checked(name, getattr(importlib.import_module(f"{__name__}.{module_name}"), attr))
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `farm list --tasksets`"
    raise ConfigError(f"unknown task set {name!r}{hint}")


def _checked(name: str, obj: object) -> type[TaskSet]:
    if not (inspect.isclass(obj) and issubclass(obj, TaskSet)):
        raise ConfigError(f"{name!r} is not a TaskSet class: {obj!r}")
    return obj
