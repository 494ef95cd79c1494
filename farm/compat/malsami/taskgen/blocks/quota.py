"""``quota`` block (malsami fork): ``Value(5)`` is "5M"."""

from __future__ import annotations

from typing import Any


def Value(megabyte: Any) -> dict[str, Any]:
    return {"quota": f"{megabyte}M"}
