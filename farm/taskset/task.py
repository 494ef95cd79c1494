"""Task: a dict of attributes merged from blocks; callable blocks are bound with a set's RNG.

``Task(*blocks)`` merges blocks in order; ``config`` dicts merge key by key.
A block is a dict, or a callable returning one. Callable blocks are evaluated
once, by ``bind`` (when the task is appended to a task set), with that set's
``random.Random`` (passed if the callable has a required positional
parameter), in block order; until then the task holds only its dict blocks.
A callable's values still take their place in the block order, and direct
edits of an unbound task win.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from farm.errors import TaskSetError
from farm.taskset.values import END, is_dimension, short

#: A block: a dict of task attributes, or a callable (optionally taking an RNG) returning one.
Block = Mapping[str, Any] | Callable[..., Mapping[str, Any]]


def _merge(target: dict[str, Any], block: Mapping[str, Any]) -> None:
    """Merge ``block`` into ``target``: config dicts key by key, never mutating a block."""
    for key, value in block.items():
        if key == "config" and isinstance(value, Mapping):
            old = target.get("config")
            target["config"] = {**old, **value} if isinstance(old, Mapping) else dict(value)
        else:
            target[key] = value


def _call_block(block: Callable[..., Any], rng: random.Random) -> Mapping[str, Any]:
    """Evaluate a callable block (``rng`` passed if it has a required positional parameter).

    A callable may return another block (e.g. ``period.Random`` passed uncalled
    returns a random block), which is evaluated in turn.
    """
    result: Any = block
    for _ in range(8):
        if isinstance(result, Mapping):
            return result
        if not callable(result):
            break
        result = result(rng) if _wants_rng(result) else result()
    raise TaskSetError(f"block {block!r} returned {short(result)}, not a dict")


def _wants_rng(block: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(block).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(
        p.kind is p.VAR_POSITIONAL
        or (p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty)
        for p in params
    )


@dataclass
class _Overlay:
    """Direct edits of an unbound task, applied after its blocks are replayed."""

    values: dict[str, Any]
    removed: set[str]
    config: Any = END  # replaces the whole config unless END

    def apply(self, target: dict[str, Any]) -> None:
        _merge(target, self.values)
        for key in self.removed:
            target.pop(key, None)
        if self.config is not END:
            target["config"] = self.config


class Task(dict[str, Any]):
    """One task: a dict of attributes merged from blocks (see ``farm.taskset``)."""

    _blocks: tuple[Block | _Overlay, ...] | None = None  # set while callable blocks wait
    _preview: tuple[dict[str, Any], dict[str, Any] | None] | None = None

    def __init__(self, *blocks: Block) -> None:
        super().__init__()
        flat: list[Block | _Overlay] = []
        for block in blocks:
            if isinstance(block, Task) and block._blocks is not None:
                flat += [*block._blocks, block._overlay()]
            elif isinstance(block, Mapping) or callable(block):
                flat.append(block)
            else:
                raise TaskSetError(f"a block must be a dict or a callable, got {short(block)}")
        for item in flat:
            if isinstance(item, _Overlay):
                item.apply(self)
            elif isinstance(item, Mapping):
                _merge(self, item)
        if any(not isinstance(b, Mapping | _Overlay) for b in flat):
            self._blocks = tuple(flat)
            cfg = self.get("config")
            self._preview = (dict(self), dict(cfg) if isinstance(cfg, dict) else None)

    def __repr__(self) -> str:
        return f"Task({dict.__repr__(self)})"

    @property
    def id(self) -> Any:
        """The task id (None until a task set assigns one)."""
        return self.get("id")

    @id.setter
    def id(self, value: int) -> None:
        self["id"] = value

    @property
    def pending(self) -> bool:
        """True while callable blocks wait to be evaluated by ``bind``."""
        return self._blocks is not None

    def bind(self, rng: random.Random) -> Task:
        """Evaluate pending callable blocks with ``rng`` (in block order); return self."""
        if self._blocks is None:
            return self
        overlay = self._overlay()
        merged: dict[str, Any] = {}
        for block in self._blocks:
            if isinstance(block, _Overlay):
                block.apply(merged)
            else:
                _merge(merged, block if isinstance(block, Mapping) else _call_block(block, rng))
        overlay.apply(merged)
        self.clear()
        self.update(merged)
        self._blocks = self._preview = None
        return self

    def _overlay(self) -> _Overlay:
        """Direct changes since construction (values compared by identity)."""
        assert self._preview is not None
        top, old_cfg = self._preview
        values = {
            k: v for k, v in self.items() if k != "config" and (k not in top or top[k] is not v)
        }
        overlay = _Overlay(values, set(top) - set(self))
        now = self.get("config", END)
        if now is not top.get("config", END):  # replaced, added or removed as a whole
            overlay.config = dict(now) if isinstance(now, Mapping) else now
        elif isinstance(now, dict) and old_cfg is not None:  # same dict: edited in place?
            if set(old_cfg) - set(now):
                overlay.config = dict(now)
            else:
                values["config"] = {
                    k: v for k, v in now.items() if k not in old_cfg or old_cfg[k] is not v
                }
        return overlay  # a removed config is in overlay.removed

    def is_concrete(self) -> bool:
        """True if no value (nor config value) is a dimension and nothing is pending."""
        if self._blocks is not None:
            return False
        for key, value in self.items():
            if key == "config" and isinstance(value, Mapping):
                if any(is_dimension(v) for v in value.values()):
                    return False
            elif is_dimension(value):
                return False
        return True


def concrete_task(values: dict[str, Any]) -> Task:
    """A bound Task holding ``values`` as they are (no block merging, no copies)."""
    task = Task.__new__(Task)
    dict.update(task, values)
    return task
