"""Critical-time blocks (taskgen): High/Medium/Low are dimensions (functions' dict forms too)."""

from __future__ import annotations

from typing import Any


def Value(criticality: Any) -> dict[str, Any]:
    return {"criticaltime": criticality}


High = Value(range(1, 5))
Medium = Value(range(5, 10))
Low = Value(range(10, 15))
Highdict = High
Mediumdict = Medium
Lowdict = Low
