"""``caps`` block (malsami fork): Genode capability quota."""

from __future__ import annotations

from typing import Any


def Value(caps: Any) -> dict[str, Any]:
    return {"caps": caps}
