"""``CsvHandler(path)``: every event of every set as one CSV row (farm's CsvMonitor)."""

from __future__ import annotations

from typing import Any

from farm.monitors.csvfile import CsvMonitor


class CsvHandler(CsvMonitor):
    """taskgen's CSV event handler: farm's CsvMonitor, fed farm's own variants."""

    farm_native = True  # the compat monitor wrapper passes it farm's variant, not the original

    def __init__(self, path: Any = "events.csv") -> None:
        super().__init__(path)
